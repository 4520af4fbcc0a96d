"""The ``telemetry`` block of the config file (contract 1 and 6), checked like the rest.

    telemetry:
      exporter: lightstep          # otlp | lightstep | console | none
      protocol: http/protobuf      # or grpc
      endpoint: https://...        # optional; else the preset's, or OTEL_EXPORTER_OTLP_*
      token_header: lightstep-access-token   # the header a project's token goes in
      projects:                    # owner team → where its traces go
        sales:    {token_env: LS_TOKEN_SALES}
        platform: {token_env: LS_TOKEN_PLATFORM, endpoint: https://...}
      default_project: {token_env: LS_ACCESS_TOKEN}
      hash_key_env: IAMSCOPE_HASH_KEY        # the HMAC key for user.hash and audit
      user_hash: true              # user.hash on spans (keyed HMAC of issuer + subject)
      enduser_id: false            # the raw subject on spans: PII, opt-in
      strip_baggage: false         # drop inbound iamscope.* baggage at ingress

Secrets never live in the file: it names the environment variables that hold them, and
they are read when the exporters are built (a missing one is a ConfigError then).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from iamscope._yaml import key_text, reject_unknown
from iamscope.errors import ConfigError

__all__ = ["HASH_KEY_ENV", "Project", "TelemetrySettings", "hash_key_from_env"]

HASH_KEY_ENV = "IAMSCOPE_HASH_KEY"
LIGHTSTEP_HEADER = "lightstep-access-token"
LIGHTSTEP_TOKEN_ENV = "LS_ACCESS_TOKEN"  # noqa: S105 - a variable name, not a secret
EXPORTERS = ("otlp", "lightstep", "console", "none")
PROTOCOLS = ("http/protobuf", "grpc")
_KEYS = (
    "exporter",
    "protocol",
    "endpoint",
    "token_header",
    "projects",
    "default_project",
    "hash_key_env",
    "user_hash",
    "enduser_id",
    "strip_baggage",
)
_PROJECT_KEYS = ("token_env", "endpoint")

Exporter = Literal["otlp", "lightstep", "console", "none"]
Protocol = Literal["http/protobuf", "grpc"]


@dataclass(frozen=True, slots=True)
class Project:
    """Where one team's traces go: a token from an environment variable, and optionally
    an endpoint of its own."""

    token_env: str | None = None
    endpoint: str | None = None
    #: Where the token is named in the file (its ``token_env``, else the project's own
    #: line), for errors found when the variable is read; not part of the value.
    line: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    exporter: Exporter = "none"
    protocol: Protocol = "http/protobuf"
    endpoint: str | None = None
    token_header: str | None = None  # None: the preset's (lightstep-access-token)
    projects: Mapping[str, Project] = field(default_factory=dict)
    default_project: Project = field(default_factory=Project)
    hash_key_env: str = HASH_KEY_ENV
    user_hash: bool = True
    enduser_id: bool = False
    strip_baggage: bool = False
    #: The file these settings were read from, and the line of each key of the block:
    #: a variable the file names is read later (by build_exporter), and its error should
    #: still point into the file. Not part of the value.
    source: str | None = field(default=None, compare=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def locate(self, exc: ConfigError, line: int | None = None) -> ConfigError:
        """``exc`` naming the file these settings came from, at ``line`` (else its key's
        line in the block, else the ``exporter`` line, which is why a token is needed)."""
        return locate(exc, self.source, self.lines, line, fallback="exporter")

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, where: str | None = None
    ) -> TelemetrySettings:
        reject_unknown(data, _KEYS, where, "telemetry")
        lines = getattr(data, "lines", {})

        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(message, source=where, line=lines.get(key), key=key)

        exporter = data.get("exporter", "none")
        if exporter not in EXPORTERS:
            raise fail("exporter", f"'exporter' must be one of {', '.join(EXPORTERS)}")
        protocol = data.get("protocol", "http/protobuf")
        if protocol not in PROTOCOLS:
            raise fail("protocol", f"'protocol' must be one of {', '.join(PROTOCOLS)}")
        for key in ("endpoint", "token_header", "hash_key_env"):
            if key in data and not (isinstance(data[key], str) and data[key]):
                raise fail(key, f"{key!r} must be a non-empty string")
        for key in ("user_hash", "enduser_id", "strip_baggage"):
            if key in data and not isinstance(data[key], bool):
                raise fail(key, f"{key!r} must be true or false")
        projects, default_project = projects_of(data, where)
        return cls(
            exporter=exporter,
            protocol=protocol,
            endpoint=data.get("endpoint"),
            token_header=data.get("token_header"),
            projects=projects,
            default_project=default_project,
            hash_key_env=data.get("hash_key_env", HASH_KEY_ENV),
            user_hash=data.get("user_hash", True),
            enduser_id=data.get("enduser_id", False),
            strip_baggage=data.get("strip_baggage", False),
            source=where,
            lines=dict(lines),
        )


def projects_of(
    data: Mapping[str, Any], where: str | None, prefix: str = ""
) -> tuple[dict[str, Project], Project]:
    """A block's ``projects`` (owner team → Project) and ``default_project``; errors
    point at the team's own line. Shared by the telemetry and gateway blocks."""
    lines = getattr(data, "lines", {})
    projects = _or_empty(data.get("projects"))
    if not isinstance(projects, Mapping):
        raise ConfigError(
            "'projects' must map owner teams to projects",
            source=where,
            line=lines.get("projects"),
            key="projects",
        )
    team_lines = getattr(projects, "lines", {})
    named = {
        key_text(team): _project(
            spec,
            f"{prefix}projects.{key_text(team)}",
            where,
            team_lines.get(team, lines.get("projects")),
        )
        for team, spec in projects.items()
    }
    default = _project(
        _or_empty(data.get("default_project")),
        f"{prefix}default_project",
        where,
        lines.get("default_project"),
    )
    return named, default


def _project(spec: Any, name: str, where: str | None, line: int | None) -> Project:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{name!r} must be a mapping", source=where, line=line, key=name)
    reject_unknown(spec, _PROJECT_KEYS, where, name)
    for key in _PROJECT_KEYS:
        value = spec.get(key)
        if value is not None and not (isinstance(value, str) and value):
            line_of = getattr(spec, "lines", {}).get(key, line)
            raise ConfigError(
                f"{name}.{key} must be a non-empty string", source=where, line=line_of, key=key
            )
    token_line = getattr(spec, "lines", {}).get("token_env", line)
    return Project(token_env=spec.get("token_env"), endpoint=spec.get("endpoint"), line=token_line)


def _or_empty(value: Any) -> Any:
    """An absent or empty (``key:`` with nothing after it) block is an empty mapping;
    anything else, falsy or not, is checked as it is."""
    return {} if value is None else value


def locate(
    exc: ConfigError,
    source: str | None,
    lines: Mapping[str, int],
    line: int | None = None,
    *,
    fallback: str,
) -> ConfigError:
    """``exc`` (raised when a block's values are used, e.g. a variable it names is read)
    naming the file the block came from, at ``line``, else its key's line in ``lines``,
    else the ``fallback`` key's line; ``exc`` itself for a block built in code, or when
    it names a file already. Shared by the telemetry and gateway blocks."""
    if source is None or exc.source is not None:
        return exc
    line = line or exc.line or lines.get(exc.key or "") or lines.get(fallback)
    return ConfigError(exc.detail, source=source, line=line, key=exc.key)


def project_token(
    what: str,
    name: str,
    project: Project,
    *,
    lightstep: bool,
    header: str | None,
    env: Mapping[str, str],
) -> tuple[str, str] | None:
    """(header, token) one project's data goes with, or None when it sends none.

    Shared by the telemetry exporters and the OTLP gateway. A named project never falls
    back to the default project's key (that would send it to another team's project);
    a variable the config names but the environment lacks is a ConfigError, not data
    sent unauthenticated.
    """
    default = name == "default_project"
    if not default and project.token_env is None and (lightstep or header is not None):
        raise ConfigError(f"{what} {name}: 'token_env' is required", key="token_env")
    token_env = project.token_env or (LIGHTSTEP_TOKEN_ENV if lightstep and default else None)
    if token_env is None:
        return None
    token = env.get(token_env)
    if not token:
        raise ConfigError(
            f"{what} {name}: the environment variable {token_env} is not set", key="token_env"
        )
    if header is None:
        raise ConfigError(
            f"{what}: 'token_header' is required to send project tokens", key="token_header"
        )
    return header, token


def hash_key_from_env(variable: str = HASH_KEY_ENV) -> bytes | None:
    value = os.environ.get(variable)
    return value.encode() if value else None
