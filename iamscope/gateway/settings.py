"""The ``gateway`` block of the config file (see :mod:`iamscope.gateway`), checked at
load time like every other block."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from iamscope._yaml import reject_unknown
from iamscope.errors import ConfigError
from iamscope.telemetry.settings import Project, projects_of

__all__ = ["GatewaySettings"]

_KEYS = (
    "upstream",
    "endpoint",
    "token_header",
    "projects",
    "default_project",
    "out_of_scope",
    "max_body_bytes",
    "timeout",
    "retries",
    "max_inflight",
)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    upstream: Literal["lightstep", "otlp"] = "otlp"
    endpoint: str | None = None  # the upstream's full OTLP/HTTP traces URL
    token_header: str | None = None  # None: lightstep-access-token for lightstep
    projects: Mapping[str, Project] = field(default_factory=dict)
    default_project: Project = field(default_factory=Project)
    out_of_scope: Literal["drop", "refuse"] = "drop"
    max_body_bytes: int = 4 * 1024 * 1024  # after decompression too
    timeout: float = 10.0  # for one export, retries included
    retries: int = 3
    max_inflight: int = 64  # exports being forwarded at once; more get 503

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str | None = None) -> GatewaySettings:
        reject_unknown(data, _KEYS, where, "gateway")
        lines = getattr(data, "lines", {})

        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(message, source=where, line=lines.get(key), key=key)

        choices = {"upstream": ("lightstep", "otlp"), "out_of_scope": ("drop", "refuse")}
        for key, allowed in choices.items():
            if key in data and data[key] not in allowed:
                raise fail(key, f"{key!r} must be one of {', '.join(allowed)}")
        for key in ("endpoint", "token_header"):
            if key in data and not (isinstance(data[key], str) and data[key]):
                raise fail(key, f"{key!r} must be a non-empty string")
        for key, least in (("max_body_bytes", 1), ("retries", 0), ("max_inflight", 1)):
            value = data.get(key, least)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise fail(key, f"{key!r} must be a whole number ≥ {least}")
        timeout = data.get("timeout", 1.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise fail("timeout", "'timeout' must be a number of seconds")
        if not 0 < _seconds(timeout) < math.inf:
            raise fail("timeout", "'timeout' must be a positive number of seconds")
        if data.get("upstream", "otlp") == "otlp" and "endpoint" not in data:
            raise fail("endpoint", "an otlp upstream needs 'endpoint'")
        projects, default_project = projects_of(data, where, "gateway.")
        defaults = cls()
        return cls(
            upstream=data.get("upstream", "otlp"),
            endpoint=data.get("endpoint"),
            token_header=data.get("token_header"),
            projects=projects,
            default_project=default_project,
            out_of_scope=data.get("out_of_scope", "drop"),
            max_body_bytes=data.get("max_body_bytes", defaults.max_body_bytes),
            timeout=_seconds(data.get("timeout", defaults.timeout)),
            retries=data.get("retries", defaults.retries),
            max_inflight=data.get("max_inflight", defaults.max_inflight),
        )


def _seconds(value: int | float) -> float:
    """A number as float seconds; an integer too large for a float is infinite (and so
    refused), not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
