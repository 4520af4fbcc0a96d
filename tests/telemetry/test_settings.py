"""The config contract for the ``telemetry`` and ``cache`` blocks, and the hash-key rule
IAMScope enforces at start-up: defaults, a full valid block, and a precise ConfigError
(with file:line when loaded from YAML) for every bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from iamscope import IAMScope
from iamscope.config import load_config
from iamscope.engine.cache import CacheSettings
from iamscope.errors import ConfigError
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink, SubjectHasher
from iamscope.telemetry.settings import HASH_KEY_ENV, Project, TelemetrySettings
from iamscope.testing import LocalIssuer
from tests._policy import POLICY

ISSUERS = """\
issuers:
  - name: corp
    issuer: https://corp.example
    audience: api://local
"""
# The first line after ISSUERS: a block appended to it starts here.
FIRST = ISSUERS.count("\n") + 1


def write(tmp_path: Path, block: str) -> Path:
    path = tmp_path / "iamscope.yaml"
    path.write_text(ISSUERS + block)
    return path


def telemetry_error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        TelemetrySettings.from_mapping(data)
    return info.value


def cache_error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        CacheSettings.from_mapping(data)
    return info.value


def file_error(tmp_path: Path, block: str) -> ConfigError:
    path = write(tmp_path, block)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.source == str(path)
    assert str(error).startswith(f"{path}:{error.line}: ")
    return error


# --- telemetry: defaults and a full block ------------------------------------------------


def test_absent_telemetry_and_cache_blocks_give_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.telemetry == TelemetrySettings()
    assert config.telemetry == TelemetrySettings(
        exporter="none",
        protocol="http/protobuf",
        endpoint=None,
        token_header=None,
        projects={},
        default_project=Project(token_env=None, endpoint=None),
        hash_key_env="IAMSCOPE_HASH_KEY",
        user_hash=True,
        enduser_id=False,
        strip_baggage=False,
    )
    assert HASH_KEY_ENV == "IAMSCOPE_HASH_KEY"
    assert config.cache == CacheSettings(
        max_entries=100_000, max_ttl=300.0, negative_ttl=5.0, max_negative=10_000
    )


def test_empty_telemetry_mapping_gives_the_defaults() -> None:
    assert TelemetrySettings.from_mapping({}) == TelemetrySettings()


def test_full_telemetry_block_parses_to_every_value(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """\
telemetry:
  exporter: lightstep
  protocol: grpc
  endpoint: https://ingest.example:443
  token_header: x-project-token
  projects:
    sales: {token_env: LS_TOKEN_SALES}
    platform:
      token_env: LS_TOKEN_PLATFORM
      endpoint: https://platform.example:4317
  default_project: {token_env: LS_ACCESS_TOKEN}
  hash_key_env: MY_HASH_KEY
  user_hash: false
  enduser_id: true
  strip_baggage: true
""",
        )
    )
    assert config.telemetry == TelemetrySettings(
        exporter="lightstep",
        protocol="grpc",
        endpoint="https://ingest.example:443",
        token_header="x-project-token",
        projects={
            "sales": Project(token_env="LS_TOKEN_SALES"),
            "platform": Project(
                token_env="LS_TOKEN_PLATFORM", endpoint="https://platform.example:4317"
            ),
        },
        default_project=Project(token_env="LS_ACCESS_TOKEN"),
        hash_key_env="MY_HASH_KEY",
        user_hash=False,
        enduser_id=True,
        strip_baggage=True,
    )
    assert list(config.telemetry.projects) == ["sales", "platform"]


@pytest.mark.parametrize("exporter", ["otlp", "lightstep", "console", "none"])
def test_every_exporter_is_accepted(exporter: str) -> None:
    assert TelemetrySettings.from_mapping({"exporter": exporter}).exporter == exporter


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_every_protocol_is_accepted(protocol: str) -> None:
    assert TelemetrySettings.from_mapping({"protocol": protocol}).protocol == protocol


def test_a_project_may_leave_out_its_token_and_endpoint() -> None:
    settings = TelemetrySettings.from_mapping({"projects": {"sales": {}}})
    assert settings.projects == {"sales": Project()}


# --- telemetry: refusals --------------------------------------------------------------------


def test_misspelt_telemetry_key_is_refused_with_a_suggestion() -> None:
    error = telemetry_error({"exporterr": "otlp"})
    assert error.detail == "unknown telemetry key 'exporterr' (did you mean 'exporter'?)"
    assert error.key == "exporterr"


def test_unknown_telemetry_key_far_from_any_is_refused_without_a_suggestion() -> None:
    error = telemetry_error({"zzz": 1})
    assert error.detail == "unknown telemetry key 'zzz'"


@pytest.mark.parametrize("value", ["jaeger", "OTLP", "", None, 1, ["otlp"]])
def test_unknown_exporter_is_refused(value: object) -> None:
    error = telemetry_error({"exporter": value})
    assert error.detail == "'exporter' must be one of otlp, lightstep, console, none"
    assert error.key == "exporter"


@pytest.mark.parametrize("value", ["http", "http/json", "GRPC", "", None])
def test_unknown_protocol_is_refused(value: object) -> None:
    error = telemetry_error({"protocol": value})
    assert error.detail == "'protocol' must be one of http/protobuf, grpc"
    assert error.key == "protocol"


@pytest.mark.parametrize("flag", ["user_hash", "enduser_id", "strip_baggage"])
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None])
def test_flags_must_be_booleans(flag: str, value: object) -> None:
    error = telemetry_error({flag: value})
    assert error.detail == f"{flag!r} must be true or false"
    assert error.key == flag


@pytest.mark.parametrize("key", ["endpoint", "token_header", "hash_key_env"])
@pytest.mark.parametrize("value", ["", None, 5, ["a"]])
def test_string_settings_must_be_non_empty_strings(key: str, value: object) -> None:
    error = telemetry_error({key: value})
    assert error.detail == f"{key!r} must be a non-empty string"
    assert error.key == key


@pytest.mark.parametrize("where", ["projects.sales", "default_project"])
@pytest.mark.parametrize("field", ["token_env", "endpoint"])
@pytest.mark.parametrize("value", ["", 5, True])
def test_project_fields_must_be_non_empty_strings(where: str, field: str, value: object) -> None:
    project = {field: value}
    data = {"projects": {"sales": project}} if where == "projects.sales" else {where: project}
    error = telemetry_error(data)
    assert error.detail == f"{where}.{field} must be a non-empty string"


def test_unknown_key_inside_a_project_is_refused_with_a_suggestion() -> None:
    error = telemetry_error({"projects": {"sales": {"token_en": "LS_TOKEN"}}})
    assert error.detail == "unknown projects.sales key 'token_en' (did you mean 'token_env'?)"
    assert error.key == "token_en"


def test_unknown_key_inside_the_default_project_is_refused() -> None:
    error = telemetry_error({"default_project": {"endpoit": "https://x.example"}})
    assert error.detail == ("unknown default_project key 'endpoit' (did you mean 'endpoint'?)")


@pytest.mark.parametrize("value", ["LS_TOKEN", 5, ["LS_TOKEN"]])
def test_a_project_that_is_not_a_mapping_is_refused(value: object) -> None:
    error = telemetry_error({"projects": {"sales": value}})
    assert error.detail == "'projects.sales' must be a mapping"
    assert error.key == "projects.sales"


@pytest.mark.parametrize("value", ["LS_TOKEN", 5, True])
def test_a_default_project_that_is_not_a_mapping_is_refused(value: object) -> None:
    error = telemetry_error({"default_project": value})
    assert error.detail == "'default_project' must be a mapping"


@pytest.mark.parametrize("value", ["sales", 5, ["sales"]])
def test_projects_must_be_a_mapping(value: object) -> None:
    error = telemetry_error({"projects": value})
    assert error.detail == "'projects' must map owner teams to projects"
    assert error.key == "projects"


@pytest.mark.parametrize(
    "data",
    [{"projects": []}, {"projects": False}, {"default_project": ""}, {"default_project": False}],
    ids=["projects-empty-list", "projects-false", "default-empty-string", "default-false"],
)
def test_falsy_non_mapping_projects_are_refused(data: dict[str, Any]) -> None:
    telemetry_error(data)


# --- telemetry: errors from a YAML file carry file:line -----------------------------------


def test_yaml_misspelt_key_error_names_file_and_line(tmp_path: Path) -> None:
    error = file_error(tmp_path, "telemetry:\n  exporter: otlp\n  exporterr: otlp\n")
    assert error.line == FIRST + 2
    assert error.detail == "unknown telemetry key 'exporterr' (did you mean 'exporter'?)"
    assert f"iamscope.yaml:{FIRST + 2}:" in str(error)


def test_yaml_yes_stays_a_string_and_is_refused_as_a_flag(tmp_path: Path) -> None:
    error = file_error(tmp_path, "telemetry:\n  exporter: none\n  user_hash: yes\n")
    assert error.line == FIRST + 2
    assert error.detail == "'user_hash' must be true or false"
    assert f"iamscope.yaml:{FIRST + 2}:" in str(error)


@pytest.mark.parametrize("word", ["no", "on", "off", "y", "n"])
def test_yaml_1_1_booleans_are_strings_and_refused(tmp_path: Path, word: str) -> None:
    error = file_error(tmp_path, f"telemetry:\n  strip_baggage: {word}\n")
    assert error.line == FIRST + 1
    assert error.detail == "'strip_baggage' must be true or false"


def test_yaml_bad_exporter_error_names_file_and_line(tmp_path: Path) -> None:
    error = file_error(tmp_path, "telemetry:\n  protocol: grpc\n  exporter: jaeger\n")
    assert error.line == FIRST + 2
    assert error.key == "exporter"


def test_yaml_bad_protocol_error_names_file_and_line(tmp_path: Path) -> None:
    error = file_error(tmp_path, "telemetry:\n  protocol: http\n")
    assert error.line == FIRST + 1
    assert error.detail == "'protocol' must be one of http/protobuf, grpc"


def test_yaml_empty_string_error_names_file_and_line(tmp_path: Path) -> None:
    error = file_error(tmp_path, "telemetry:\n  exporter: otlp\n  endpoint: ''\n")
    assert error.line == FIRST + 2
    assert error.detail == "'endpoint' must be a non-empty string"


def test_yaml_unknown_project_key_error_points_at_that_key(tmp_path: Path) -> None:
    block = """\
telemetry:
  projects:
    sales: {token_env: LS_TOKEN_SALES}
    platform:
      token_env: LS_TOKEN_PLATFORM
      endpont: https://platform.example
"""
    error = file_error(tmp_path, block)
    assert error.line == FIRST + 5
    assert error.detail == ("unknown projects.platform key 'endpont' (did you mean 'endpoint'?)")


def test_yaml_empty_project_field_error_points_at_that_field(tmp_path: Path) -> None:
    block = """\
telemetry:
  projects:
    sales:
      endpoint: https://sales.example
      token_env: ''
"""
    error = file_error(tmp_path, block)
    assert error.line == FIRST + 4
    assert error.detail == "projects.sales.token_env must be a non-empty string"


def test_yaml_project_not_a_mapping_is_refused_with_file_and_line(tmp_path: Path) -> None:
    block = "telemetry:\n  projects:\n    sales: LS_TOKEN_SALES\n"
    error = file_error(tmp_path, block)
    assert error.line is not None
    assert error.detail == "'projects.sales' must be a mapping"


def test_yaml_project_not_a_mapping_points_at_that_project(tmp_path: Path) -> None:
    block = """\
telemetry:
  projects:
    sales: {token_env: LS_TOKEN_SALES}
    platform: LS_TOKEN_PLATFORM
"""
    error = file_error(tmp_path, block)
    assert error.detail == "'projects.platform' must be a mapping"
    assert error.line == FIRST + 3


def test_yaml_default_project_not_a_mapping_points_at_it(tmp_path: Path) -> None:
    block = "telemetry:\n  exporter: otlp\n  default_project: LS_ACCESS_TOKEN\n"
    error = file_error(tmp_path, block)
    assert error.line == FIRST + 2
    assert error.detail == "'default_project' must be a mapping"


def test_yaml_telemetry_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "telemetry: lightstep\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.detail == "telemetry settings must be a mapping"
    assert info.value.source == str(path)


# --- cache -----------------------------------------------------------------------------------


def test_full_cache_block_parses(tmp_path: Path) -> None:
    block = "cache:\n  max_entries: 50\n  max_ttl: 60\n  negative_ttl: 0.5\n  max_negative: 7\n"
    config = load_config(write(tmp_path, block))
    assert config.cache == CacheSettings(
        max_entries=50, max_ttl=60, negative_ttl=0.5, max_negative=7
    )


def test_partial_cache_block_keeps_the_other_defaults() -> None:
    assert CacheSettings.from_mapping({"max_ttl": 30.0}) == CacheSettings(max_ttl=30.0)


@pytest.mark.parametrize("name", ["max_entries", "max_negative"])
@pytest.mark.parametrize("value", [0, -1, True, False, "10", 1.5, 10.0, None])
def test_cache_sizes_must_be_positive_whole_numbers(name: str, value: object) -> None:
    error = cache_error({name: value})
    assert error.detail == f"cache.{name} must be a positive whole number"
    assert error.key == name


@pytest.mark.parametrize("name", ["max_ttl", "negative_ttl"])
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, True, False, "5", None])
def test_cache_durations_must_be_positive_numbers(name: str, value: object) -> None:
    error = cache_error({name: value})
    assert error.detail == f"cache.{name} must be a positive number of seconds"
    assert error.key == name


@pytest.mark.parametrize("name", ["max_ttl", "negative_ttl"])
def test_cache_durations_refuse_nan(name: str) -> None:
    cache_error({name: math.nan})


def test_misspelt_cache_key_is_refused_with_a_suggestion() -> None:
    error = cache_error({"max_entrys": 10})
    assert error.detail == "unknown cache key 'max_entrys' (did you mean 'max_entries'?)"


def test_yaml_cache_fraction_error_names_file_and_line(tmp_path: Path) -> None:
    error = file_error(tmp_path, "cache:\n  max_ttl: 10\n  max_entries: 1.5\n")
    assert error.line == FIRST + 2
    assert error.detail == "cache.max_entries must be a positive whole number"
    assert f"iamscope.yaml:{FIRST + 2}:" in str(error)


def test_yaml_cache_string_and_bool_are_refused(tmp_path: Path) -> None:
    error = file_error(tmp_path, "cache:\n  negative_ttl: '5'\n")
    assert error.line == FIRST + 1
    error = file_error(tmp_path, "cache:\n  max_ttl: true\n")
    assert error.detail == "cache.max_ttl must be a positive number of seconds"


def test_yaml_unknown_cache_key_names_file_and_line(tmp_path: Path) -> None:
    error = file_error(tmp_path, "cache:\n  max_entries: 10\n  ttl: 5\n")
    assert error.line == FIRST + 2
    assert error.detail.startswith("unknown cache key 'ttl'")


# --- the hash key at start-up ---------------------------------------------------------------


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def test_iamscope_refuses_to_start_without_a_hash_key(
    local_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    with pytest.raises(ConfigError) as info:
        IAMScope([local_issuer.issuer_config("corp")], PolicyStore(POLICY), audit=ListSink())
    assert HASH_KEY_ENV in str(info.value)
    assert info.value.key == "hash_key_env"


def test_iamscope_refusal_names_the_configured_variable(
    local_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEAM_HASH_KEY", raising=False)
    monkeypatch.setenv(HASH_KEY_ENV, "the default variable is not the configured one")
    with pytest.raises(ConfigError) as info:
        IAMScope(
            [local_issuer.issuer_config("corp")],
            PolicyStore(POLICY),
            audit=ListSink(),
            telemetry=TelemetrySettings(hash_key_env="TEAM_HASH_KEY"),
        )
    assert "TEAM_HASH_KEY" in str(info.value)


def test_iamscope_refuses_an_empty_hash_key_variable(
    local_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, "")
    with pytest.raises(ConfigError, match=HASH_KEY_ENV):
        IAMScope([local_issuer.issuer_config("corp")], PolicyStore(POLICY), audit=ListSink())


def test_iamscope_reads_the_hash_key_from_the_named_variable(
    local_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    monkeypatch.setenv("TEAM_HASH_KEY", "team-secret")
    sink = ListSink()
    iam = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=sink,
        telemetry=TelemetrySettings(hash_key_env="TEAM_HASH_KEY"),
    )
    decision = iam.decide(bearer(local_issuer.mint(sub="alice", groups=["sales-east"])))
    assert decision.allowed
    expected = SubjectHasher(b"team-secret")("corp", "alice")
    assert [event["subject_hash"] for event in sink.events] == [expected]
    assert expected != SubjectHasher(b"other")("corp", "alice")
    iam.close()


def test_iamscope_starts_without_a_key_when_user_hash_is_off(
    local_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    sink = ListSink()
    iam = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=sink,
        telemetry=TelemetrySettings(user_hash=False),
    )
    assert iam.hasher is None
    decision = iam.decide(bearer(local_issuer.mint(sub="alice", groups=["sales-east"])))
    assert decision.allowed and decision.principal is not None
    assert decision.principal.subject == "alice"
    assert [(e["decision"], e["issuer"], e["subject_hash"]) for e in sink.events] == [
        ("allow", "corp", None)
    ]
    iam.close()
