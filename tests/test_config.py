"""The configuration file (contract 1): formats, precise errors, the reference config."""

from __future__ import annotations

from pathlib import Path

import pytest

from iamscope.config import load_config
from iamscope.errors import ConfigError
from iamscope.tokens import PRESETS

REFERENCE = """\
issuers:
  - name: corp                          # label used in bindings and audit
    issuer: https://acme.okta.com/oauth2/default
    audience: api://analytics
    preset: okta
    claims: {groups: groups}
  - name: ci
    issuer: https://token.actions.githubusercontent.com
    audience: https://github.com/acme
    preset: github-actions

policy:
  version: "2026-11-22.1"
  roles: {}

telemetry:
  exporter: lightstep
"""


def write(tmp_path: Path, text: str, name: str = "iamscope.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reference_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, REFERENCE))
    corp, ci = config.issuers
    assert (corp.name, corp.issuer, corp.audience) == (
        "corp",
        "https://acme.okta.com/oauth2/default",
        ("api://analytics",),
    )
    assert corp.preset is PRESETS["okta"]
    assert corp.claim_map.groups == ("groups",)
    assert ci.preset is PRESETS["github-actions"]
    assert ci.allowed_algorithms == {"RS256"}
    assert config.policy["version"] == "2026-11-22.1"
    assert config.telemetry.exporter == "lightstep"


def test_json_is_accepted(tmp_path: Path) -> None:
    text = '{"issuers": [{"name": "a", "issuer": "https://a.example", "audience": ["x", "y"]}]}'
    config = load_config(write(tmp_path, text, "c.json"))
    assert config.issuers[0].audience == ("x", "y")


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IAMSCOPE_CONFIG", str(write(tmp_path, REFERENCE)))
    assert [c.name for c in load_config().issuers] == ["corp", "ci"]


def test_no_config_anywhere_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IAMSCOPE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="IAMSCOPE_CONFIG"):
        load_config()


def test_unknown_top_level_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, REFERENCE + "telemetri: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == REFERENCE.count("\n") + 1
    assert str(path) in str(info.value)
    assert "did you mean 'telemetry'" in str(info.value)


def test_unknown_issuer_key_points_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, REFERENCE.replace("    preset: okta\n", "    preset: okta\n    audiense: x\n")
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 6
    assert info.value.key == "audiense"
    assert "did you mean 'audience'" in str(info.value)


def test_unknown_preset_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'keycloak'"):
        load_config(write(tmp_path, REFERENCE.replace("preset: okta", "preset: keycloack")))


def test_invalid_value_points_at_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, REFERENCE.replace("    claims: {groups: groups}\n", "    leeway: 300\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 6
    assert "leeway" in str(info.value)


def test_missing_audience_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, REFERENCE.replace("    audience: api://analytics\n", ""))
    with pytest.raises(ConfigError, match="'audience' is required") as info:
        load_config(path)
    assert info.value.line == 2  # the entry that lacks it


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path, REFERENCE.replace("    preset: okta\n", "    preset: okta\n    preset: entra\n")
    )
    with pytest.raises(ConfigError, match="duplicate key 'preset'") as info:
        load_config(path)
    assert info.value.line == 6


def test_broken_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(write(tmp_path, "issuers: [\n  {name: a\n"))
    assert info.value.line is not None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"issuer": "https://a.example", "audience": "x"}, "name"),
        ({"name": "a", "issuer": "ftp://a.example", "audience": "x"}, "http"),
        ({"name": "a", "issuer": "https://a.example", "audience": 5}, "audience"),
        ({"name": "a", "issuer": "https://a.example", "audience": "x", "leeway": "5"}, "number"),
        ({"name": "a", "issuer": "https://a.example", "audience": "x", "jwks_uri": 1}, "string"),
        (
            {"name": "a", "issuer": "https://a.example", "audience": "x", "source": "query"},
            "source",
        ),
        (
            {"name": "a", "issuer": "https://a.example", "audience": "x", "claims": {"grups": "g"}},
            "did you mean 'groups'",
        ),
        (
            {
                "name": "a",
                "issuer": "https://a.example",
                "preset": "aws-alb",
                "keys_url": "https://k.example/{kid}",
            },
            "signers",
        ),
        (
            {"name": "a", "issuer": "https://a.example", "preset": "aws-alb", "signers": "arn"},
            "keys_url",
        ),
        (
            {
                "name": "a",
                "issuer": "https://a.example",
                "audience": "x",
                "algorithms": ["RS256", "HS256"],
            },
            "HMAC",
        ),
    ],
)
def test_issuer_entry_errors(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"issuers": [entry]})


def test_issuer_names_and_urls_are_unique() -> None:
    entry = {"name": "a", "issuer": "https://a.example", "audience": "x"}
    with pytest.raises(ConfigError, match="name"):
        load_config({"issuers": [entry, {**entry, "issuer": "https://b.example"}]})
    with pytest.raises(ConfigError, match="issuer"):
        load_config({"issuers": [entry, {**entry, "name": "b"}]})


def test_sources_from_config() -> None:
    base = {"issuer": "https://a.example", "audience": "x"}
    config = load_config(
        {
            "issuers": [
                {**base, "name": "a", "source": {"cookie": "session"}},
                {**base, "name": "b", "issuer": "https://b.example", "preset": "pomerium"},
                {**base, "name": "c", "issuer": "https://c.example", "source": "bearer"},
            ]
        }
    )
    a, b, c = (cfg.token_source for cfg in config.issuers)
    assert (a.kind, a.name) == ("cookie", "session")
    assert (b.kind, b.name) == ("header", "x-pomerium-jwt-assertion")
    assert (c.kind, c.name) == ("bearer", "authorization")


KEYS_BLOCK = "    keys:\n      refresh: 30\n      min_refetch: 0.5\n      removed_key_grace: 0\n"


def test_an_issuers_keys_block_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path, REFERENCE.replace("    preset: okta\n", "    preset: okta\n" + KEYS_BLOCK)
    )
    corp = load_config(path).issuers[0]
    assert corp.keys is not None
    assert (corp.keys.refresh, corp.keys.min_refetch, corp.keys.removed_key_grace) == (30, 0.5, 0)
    assert corp.keys.request_wait == 2.0  # the rest keep their defaults


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("      refetch: 1\n", "unknown keys key 'refetch' (did you mean 'min_refetch'?)"),
        ("      request_wait: 0\n", "keys.request_wait must be a positive number of seconds"),
        ("      max_keys: 10.5\n", "keys.max_keys must be a positive whole number"),
        ("      removed_key_grace: -1\n", "keys.removed_key_grace must be a number of seconds"),
        ("      fetch_timeout: .nan\n", "keys.fetch_timeout must be a positive number"),
        ("      min_refresh: 90\n", "keys.min_refresh must not exceed keys.refresh"),
    ],
)
def test_keys_block_errors_name_file_line_and_setting(
    tmp_path: Path, line: str, message: str
) -> None:
    block = "    keys:\n      refresh: 60\n" + line
    path = write(tmp_path, REFERENCE.replace("    preset: okta\n", "    preset: okta\n" + block))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:8:")  # the offending line
