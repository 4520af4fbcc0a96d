"""Loading the configuration file (contract 1): YAML or JSON, from code, a path, or
``IAMSCOPE_CONFIG``. Errors name the file, the line and the key, with a "did you mean".

Top-level keys are ``issuers``, ``policy``, ``telemetry``, ``cache``, ``gateway`` and
``shared``.
This module owns :class:`Config` and :func:`load_config`: which blocks a file has and
which parser reads each (YAML reading itself lives in :mod:`iamscope._yaml`); the
policy block is carried as a mapping for the policy loader.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from iamscope._yaml import Located, parse_text, read_text, reject_huge_integers, reject_unknown
from iamscope.engine.cache import CacheSettings
from iamscope.errors import ConfigError
from iamscope.fleet.settings import SharedSettings
from iamscope.gateway.settings import GatewaySettings
from iamscope.telemetry.export import configure
from iamscope.telemetry.settings import TelemetrySettings
from iamscope.tokens.issuer import IssuerConfig, issuers_from_config

__all__ = ["Config", "in_file", "load_config"]

TOP_LEVEL_KEYS = ("issuers", "policy", "telemetry", "cache", "gateway", "shared")
ENV_VAR = "IAMSCOPE_CONFIG"


@dataclass(frozen=True, slots=True)
class Config:
    issuers: tuple[IssuerConfig, ...]
    policy: Mapping[str, Any] = field(default_factory=dict)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    gateway: GatewaySettings | None = None  # the OTLP gateway, when configured
    shared: SharedSettings | None = None  # a fleet sharing revocations through Redis
    source: str | None = None


def _block(data: Mapping[str, Any], key: str, source: str | None) -> Any:
    value = data.get(key)
    if value is None:
        return {}  # absent, or `key:` with nothing under it
    if not isinstance(value, Mapping):
        line = getattr(data, "lines", {}).get(key)
        raise ConfigError(f"{key} settings must be a mapping", source=source, line=line, key=key)
    return value


T = TypeVar("T")


def in_file(exc: ConfigError, source: str | None) -> ConfigError:
    """``exc`` naming ``source`` when it names no file: raised by a check that saw only
    parsed values (an environment variable the file names, an issuer's settings)."""
    if exc.source is not None or source is None:
        return exc
    return ConfigError(exc.detail, source=source, line=exc.line, key=exc.key)


def _parse_block(
    data: Mapping[str, Any], key: str, source: str | None, parse: Callable[[], T]
) -> T:
    """``parse()`` of the block under ``key``, with every error given a line: the one its
    parser found, else its key's line inside the block, else the block's own."""
    try:
        return parse()
    except ConfigError as exc:
        if exc.line is not None and exc.source == source:
            raise
        block = data.get(key)
        lines = block.lines if isinstance(block, Located) else {}
        line = exc.line or lines.get(exc.key or "")
        line = line or getattr(data, "lines", {}).get(key)
        raise ConfigError(exc.detail, source=source, line=line, key=exc.key) from None


def load_config(config: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> Config:
    """Load from a mapping, a file path, or (when ``None``) the ``IAMSCOPE_CONFIG`` path."""
    source: str | None = None
    if config is None:
        path = os.environ.get(ENV_VAR)
        if not path:
            raise ConfigError(f"no configuration given and {ENV_VAR} is not set")
        config = path
    if isinstance(config, Mapping):
        # A file's integers are bounded as its text is read; a mapping's are checked here,
        # once for every block, before a check prints one (Python cannot print integers
        # past 4,300 digits, and each block's parser has messages that would).
        reject_huge_integers(config)
        data: Any = config
    else:
        source = str(config)
        text = read_text(Path(config))
        data = parse_text(text, source)
    if not isinstance(data, Mapping):
        raise ConfigError("the configuration must be a mapping", source=source)
    reject_unknown(data, TOP_LEVEL_KEYS, source, "top-level")
    if "issuers" not in data:
        line = getattr(data, "line", None)
        raise ConfigError("'issuers' is required", source=source, line=line, key="issuers")

    def block(key: str, parse: Callable[[], T]) -> T:
        return _parse_block(data, key, source, parse)

    return Config(
        issuers=block("issuers", lambda: issuers_from_config(data["issuers"], where=source)),
        policy=data.get("policy") or {},
        telemetry=block(
            "telemetry",
            lambda: TelemetrySettings.from_mapping(_block(data, "telemetry", source), where=source),
        ),
        cache=block(
            "cache",
            lambda: CacheSettings.from_mapping(_block(data, "cache", source), where=source),
        ),
        gateway=(
            block("gateway", lambda: GatewaySettings.from_mapping(data["gateway"], where=source))
            if data.get("gateway") is not None
            else None
        ),
        shared=(
            block(
                "shared",
                lambda: SharedSettings.from_mapping(_block(data, "shared", source), where=source),
            )
            if "shared" in data
            else None
        ),
        source=source,
    )


#: ``off`` keeps :func:`otel_post_instrument` from touching OpenTelemetry.
AUTO_ENV = "IAMSCOPE_OTEL_AUTO"


def otel_post_instrument() -> None:
    """Run by ``opentelemetry-instrument`` once it has set up the SDK and instrumented the
    frameworks (the ``opentelemetry_post_instrument`` entry point). With
    ``IAMSCOPE_CONFIG`` set, the file's ``telemetry`` block goes onto the global tracer
    provider (:func:`iamscope.telemetry.configure`): identity on every span and routing
    by owner, with no code in the application.

    It lives here, not in telemetry, because it reads the config file. A bad file is
    logged, not raised: the application's own ``IAMScope.from_config()`` refuses it
    loudly, and an instrumentation hook must not be what stops a process."""
    path = os.environ.get(ENV_VAR)
    if not path or os.environ.get(AUTO_ENV, "").strip().lower() in {"off", "0", "false"}:
        return
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return
    try:
        configure(load_config(path).telemetry)
    except ConfigError as exc:
        logging.getLogger("iamscope").error("iamscope: telemetry not configured: %s", exc)
