"""``iamscope doctor``: one line per finding, a summary, and exit codes 0 / 1 / 2.

Every test runs against a real :class:`LocalIssuer` on loopback; secrets go in through
the environment (monkeypatch) and must never appear in the output.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from iamscope.cli import main
from iamscope.testing import LocalIssuer

SECRETS = {
    "LS_TOKEN_SALES": "sales-secret-5f2a",
    "LS_ACCESS_TOKEN": "default-secret-91c0",
    "LS_TOKEN_CHECKOUT": "checkout-secret-77de",
    "IAMSCOPE_HASH_KEY": "hash-secret-0b3e",
}


def config_text(
    issuer: LocalIssuer,
    *,
    issuer_extra: str = ", max_lifetime: 3600, leeway: 5",
    telemetry: str | None = None,
    gateway: str | None = None,
    bindings: str = "[{groups: [staff], roles: [viewer]}]",
) -> str:
    if telemetry is None:
        telemetry = (
            "telemetry:\n"
            "  exporter: lightstep\n"
            "  projects: {sales: {token_env: LS_TOKEN_SALES}}\n"
            "  default_project: {token_env: LS_ACCESS_TOKEN}\n"
        )
    if gateway is None:
        gateway = (
            "gateway:\n"
            "  upstream: lightstep\n"
            "  projects: {checkout: {token_env: LS_TOKEN_CHECKOUT}}\n"
            "  default_project: {token_env: LS_ACCESS_TOKEN}\n"
        )
    return (
        "issuers:\n"
        f"  - {{name: corp, issuer: '{issuer.url}', audience: api://local{issuer_extra}}}\n"
        "policy:\n"
        "  version: '1'\n"
        "  roles: {viewer: {permissions: ['x:read']}}\n"
        f"  bindings: {bindings}\n" + telemetry + gateway
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def doctor(path: Path, *extra: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(["doctor", "--config", str(path), *extra], out)
    return code, out.getvalue().splitlines()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "iamscope.yaml"
    path.write_text(text)
    return path


def lines_with(lines: list[str], status: str, *words: str) -> list[str]:
    return [
        line
        for line in lines
        if line.split(" ", 1)[0] == status and all(word in line for word in words)
    ]


def assert_no_secrets(lines: list[str]) -> None:
    text = "\n".join(lines)
    for value in SECRETS.values():
        assert value not in text


def test_healthy_deployment_is_all_ok(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    code, lines = doctor(write(tmp_path, config_text(local_issuer)))
    assert code == 0, lines
    *findings, summary = lines
    assert findings and all(line.startswith("ok    ") for line in findings), lines
    assert summary.startswith("doctor: ") and summary.endswith("0 warnings, 0 errors")
    # Real fetches through the verifier: discovery then the JWKS, once each.
    assert local_issuer.requests["/.well-known/openid-configuration"] == 1
    assert local_issuer.requests["/jwks.json"] == 1
    assert lines_with(lines, "ok", "issuer corp", "discovery", "names the issuer exactly")
    assert lines_with(lines, "ok", "issuer corp", local_issuer.jwks_uri, "parseable")
    # Key types and sizes of the LocalIssuer's RS256, ES256 and EdDSA keys.
    rsa = local_issuer.key_for("RS256").kid
    assert lines_with(lines, "ok", f"key {rsa}", "RSA 2048 bits", "RS256")
    assert lines_with(lines, "ok", "issuer corp", "EC secp256r1", "ES256")
    assert lines_with(lines, "ok", "issuer corp", "Ed25519", "EdDSA")
    assert lines_with(lines, "ok", "issuer corp", "max_lifetime 3600 s")
    assert lines_with(lines, "ok", "policy", "1 roles, 1 bindings")
    for name in SECRETS:
        assert lines_with(lines, "ok", name, "is set"), name
    assert lines_with(lines, "ok", "gateway", "upstream lightstep")
    assert_no_secrets(lines)


def test_issuer_outage_is_an_error_naming_the_issuer(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    local_issuer.failure = 503
    code, lines = doctor(write(tmp_path, config_text(local_issuer)))
    assert code == 1
    errors = lines_with(lines, "error", "issuer corp", "discovery", "HTTP 503")
    assert len(errors) == 1, lines
    assert "keys_unavailable" in errors[0]
    assert lines[-1].endswith("1 error")
    assert lines_with(lines, "ok", "policy")  # the other checks still ran


def test_discovery_naming_another_issuer_is_an_error(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    local_issuer.discovery_overrides = {"issuer": local_issuer.url + "/"}
    code, lines = doctor(write(tmp_path, config_text(local_issuer)))
    assert code == 1
    (error,) = lines_with(lines, "error", "issuer corp", "discovery")
    assert "names another issuer" in error and "must match exactly" in error
    assert repr(local_issuer.url + "/") in error
    assert local_issuer.requests["/jwks.json"] == 0


def test_rsa_key_under_2048_bits_is_an_error_even_beside_good_keys(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    weak = local_issuer.add_key("RS256", bits=1024)
    code, lines = doctor(write(tmp_path, config_text(local_issuer)))
    assert code == 1
    (error,) = lines_with(lines, "error", "issuer corp", f"key {weak.kid}")
    assert "1024 bits" in error
    assert lines_with(lines, "ok", "issuer corp", "JWKS", "parseable")


def test_algorithms_no_key_serves_and_keys_no_algorithm_allows_are_warnings(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    text = config_text(
        local_issuer, issuer_extra=", max_lifetime: 3600, algorithms: [RS256, ES384]"
    )
    code, lines = doctor(write(tmp_path, text))
    assert code == 0, lines
    (unserved,) = lines_with(lines, "warn", "issuer corp: algorithms:")
    assert "no published key serves ES384" in unserved
    eddsa = local_issuer.key_for("EdDSA").kid
    assert lines_with(lines, "warn", f"key {eddsa}", "is ignored")
    assert lines_with(lines, "ok", "issuer corp", "RSA 2048 bits", "verifies RS256")


def test_no_usable_key_at_all_is_an_error(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    text = config_text(local_issuer, issuer_extra=", max_lifetime: 3600, algorithms: [ES384]")
    code, lines = doctor(write(tmp_path, text))
    assert code == 1
    assert lines_with(lines, "error", "issuer corp", "JWKS", "no usable signing key")


def test_lifetime_policy_warnings(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    text = config_text(local_issuer, issuer_extra=", leeway: 45")
    code, lines = doctor(write(tmp_path, text), "--offline")
    assert code == 0
    assert lines_with(lines, "warn", "issuer corp", "no max_lifetime")
    assert lines_with(lines, "warn", "issuer corp", "leeway 45 s")
    text = config_text(local_issuer, issuer_extra=", max_lifetime: 172800")
    code, lines = doctor(write(tmp_path, text), "--offline")
    assert code == 0
    assert lines_with(lines, "warn", "issuer corp", "max_lifetime 172800 s", "24 h")


def test_missing_project_token_is_an_error_naming_only_the_variable(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    env.delenv("LS_TOKEN_SALES")
    code, lines = doctor(write(tmp_path, config_text(local_issuer)), "--offline")
    assert code == 1
    (error,) = lines_with(lines, "error", "telemetry")
    assert "LS_TOKEN_SALES is not set" in error and "projects.sales" in error
    assert lines_with(lines, "ok", "telemetry", "LS_ACCESS_TOKEN is set")
    assert_no_secrets(lines)
    env.setenv("LS_TOKEN_SALES", "")  # set but empty is no token either
    code, lines = doctor(write(tmp_path, config_text(local_issuer)), "--offline")
    assert code == 1
    assert lines_with(lines, "error", "telemetry", "LS_TOKEN_SALES is set but empty")


def test_tokens_are_only_warnings_when_nothing_is_exported(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    env.delenv("LS_TOKEN_SALES")
    telemetry = "telemetry:\n  exporter: none\n  projects: {sales: {token_env: LS_TOKEN_SALES}}\n"
    text = config_text(local_issuer, telemetry=telemetry, gateway="")
    code, lines = doctor(write(tmp_path, text), "--offline")
    assert code == 0, lines
    assert lines_with(lines, "warn", "telemetry", "LS_TOKEN_SALES is not set", "exporter is none")


def test_missing_hash_key_is_an_error_only_while_user_hash_is_on(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    env.delenv("IAMSCOPE_HASH_KEY")
    code, lines = doctor(write(tmp_path, config_text(local_issuer)), "--offline")
    assert code == 1
    assert lines_with(lines, "error", "telemetry", "IAMSCOPE_HASH_KEY is not set")
    telemetry = "telemetry:\n  exporter: none\n  user_hash: false\n  hash_key_env: MY_KEY\n"
    text = config_text(local_issuer, telemetry=telemetry, gateway="")
    code, lines = doctor(write(tmp_path, text), "--offline")
    assert code == 0, lines
    assert lines_with(lines, "warn", "telemetry", "MY_KEY is not set", "user_hash is off")


def test_gateway_tokens_are_checked(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    env.delenv("LS_TOKEN_CHECKOUT")
    code, lines = doctor(write(tmp_path, config_text(local_issuer)), "--offline")
    assert code == 1
    (error,) = lines_with(lines, "error")
    assert error.startswith("error gateway: LS_TOKEN_CHECKOUT is not set")
    assert "gateway.projects.checkout" in error
    assert_no_secrets(lines)
    code, lines = doctor(write(tmp_path, config_text(local_issuer, gateway="")), "--offline")
    assert code == 0
    assert not [line for line in lines if " gateway: " in line]


def test_offline_makes_no_request(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    local_issuer.failure = 503  # would be an error if anything were fetched
    code, lines = doctor(write(tmp_path, config_text(local_issuer)), "--offline")
    assert code == 0, lines
    assert sum(local_issuer.requests.values()) == 0
    assert not [line for line in lines if "discovery" in line or "JWKS" in line]
    assert lines[-1].endswith("(offline: network checks skipped)")


def test_policy_errors_and_warnings_come_from_lint(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    text = config_text(local_issuer, bindings="[{groups: [staff], roles: [viewr]}]")
    code, lines = doctor(write(tmp_path, text), "--offline")
    assert code == 1  # loadable config, broken policy: an error, not "unusable"
    (error,) = lines_with(lines, "error", "policy")
    assert "did you mean 'viewer'" in error
    text = config_text(local_issuer, bindings="[]")
    code, lines = doctor(write(tmp_path, text), "--offline")
    assert code == 0
    assert lines_with(lines, "warn", "policy", "role 'viewer' is never bound")


def test_unloadable_config_exits_2(tmp_path: Path) -> None:
    assert doctor(tmp_path / "missing.yaml")[0] == 2
    code, lines = doctor(write(tmp_path, "issuers: []\n"))
    assert code == 2 and lines[0].startswith("error: ")
    code, lines = doctor(write(tmp_path, "isuers: []\n"))
    assert code == 2 and "did you mean 'issuers'" in lines[0]


def test_doctor_shows_each_issuers_keys_settings(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    extra = ", max_lifetime: 3600, keys: {refresh: 30, removed_key_grace: 5, max_keys: 10}"
    code, lines = doctor(write(tmp_path, config_text(local_issuer, issuer_extra=extra)))
    assert code == 0, lines
    assert lines_with(
        lines,
        "ok",
        "issuer corp",
        "keys: refresh every 30 s",
        "removed_key_grace 5 s",
        "min_refetch 1 s",
        "request_wait 2 s",
        "max_keys 10",
    ), lines


def test_doctor_reports_a_jwks_over_max_keys(
    tmp_path: Path, local_issuer: LocalIssuer, env: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        local_issuer.add_key("ES256")
    extra = ", max_lifetime: 3600, keys: {max_keys: 4}"
    code, lines = doctor(write(tmp_path, config_text(local_issuer, issuer_extra=extra)))
    assert code == 1
    assert lines_with(lines, "error", "issuer corp", "JWKS has 8 keys, over keys.max_keys (4)")


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ("", ("must be lists", "claim_not_list", "claims.delimiter")),
        (", claims: {allow_string: true}", ("read as one value", "claims.delimiter")),
        (", claims: {delimiter: ','}", ("split on ','", "claims.delimiter")),
    ],
)
def test_doctor_says_how_a_groups_string_is_read(
    tmp_path: Path,
    local_issuer: LocalIssuer,
    env: pytest.MonkeyPatch,
    claims: str,
    words: tuple[str, ...],
) -> None:
    # "sales-east,analysts" read as one group is the 403 nobody can explain: point at
    # claims.delimiter whatever the setting.
    path = write(tmp_path, config_text(local_issuer, issuer_extra=f", max_lifetime: 60{claims}"))
    code, lines = doctor(path, "--offline")
    assert code == 0
    assert lines_with(lines, "ok", "issuer corp", *words), lines
