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
    "max_per_sender",
    "max_reading",
    "body_timeout",
    "min_body_rate",
)
_MAX_INFLIGHT = 64


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
    max_inflight: int = _MAX_INFLIGHT  # exports parsed and forwarded at once (body read); more: 503
    #: Exports one sender (issuer + subject) may have in progress, reading or forwarding;
    #: more get 429. None: a quarter of max_inflight (at least 1).
    max_per_sender: int | None = None
    #: Bodies being received at once, all senders; more get 503. None: 2 x max_inflight.
    max_reading: int | None = None
    body_timeout: float = 10.0  # seconds for a whole body (the OTLP exporters' default timeout)
    min_body_rate: float = 1024.0  # bytes/s on average after the first second; 0: none
    #: The file these settings were read from and each key's line: a token variable the
    #: file names is read when the gateway starts, and its error points into the file.
    source: str | None = field(default=None, compare=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sender_slots(self) -> int:
        if self.max_per_sender is not None:
            return self.max_per_sender
        return max(1, self.max_inflight // 4)

    @property
    def reading_slots(self) -> int:
        return self.max_reading if self.max_reading is not None else 2 * self.max_inflight

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
        whole = (
            ("max_body_bytes", 1),
            ("retries", 0),
            ("max_inflight", 1),
            ("max_per_sender", 1),
            ("max_reading", 1),
        )
        for key, least in whole:
            value = data.get(key, least)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise fail(key, f"{key!r} must be a whole number ≥ {least}")
        for key in ("timeout", "body_timeout"):
            seconds = data.get(key, 1.0)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise fail(key, f"{key!r} must be a number of seconds")
            if not 0 < _seconds(seconds) < math.inf:
                raise fail(key, f"{key!r} must be a positive number of seconds")
        rate = data.get("min_body_rate", 0)
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not 0 <= _seconds(rate) < math.inf
        ):
            raise fail("min_body_rate", "'min_body_rate' must be a number of bytes a second ≥ 0")
        inflight = data.get("max_inflight", _MAX_INFLIGHT)
        if data.get("max_per_sender", 1) > inflight:
            # A share above the whole would let one sender take every slot.
            raise fail("max_per_sender", f"'max_per_sender' must be ≤ max_inflight ({inflight})")
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
            max_per_sender=data.get("max_per_sender"),
            max_reading=data.get("max_reading"),
            body_timeout=_seconds(data.get("body_timeout", defaults.body_timeout)),
            min_body_rate=_seconds(data.get("min_body_rate", defaults.min_body_rate)),
            source=where,
            lines=dict(lines),
        )


def _seconds(value: int | float) -> float:
    """A number as a float (seconds, or bytes a second); an integer too large for a
    float is infinite (and so refused), not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
