"""Loading the configuration file (contract 1): YAML or JSON, from code, a path, or
``IAMSCOPE_CONFIG``. Errors name the file, the line and the key, with a "did you mean".

Top-level keys are ``issuers``, ``policy``, ``telemetry``, ``cache``, ``gateway`` and
``shared``. This module
owns the file format and the ``issuers`` section; the other sections are carried as
mappings for their own loaders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from iamscope.cache import CacheSettings
from iamscope.errors import ConfigError
from iamscope.fleet.settings import SharedSettings
from iamscope.gateway_settings import GatewaySettings
from iamscope.telemetry.settings import TelemetrySettings
from iamscope.tokens.issuer import IssuerConfig, _reject_unknown, issuers_from_config

__all__ = ["Config", "load_config"]

TOP_LEVEL_KEYS = ("issuers", "policy", "telemetry", "cache", "gateway", "shared")
ENV_VAR = "IAMSCOPE_CONFIG"


class Located(dict[str, Any]):
    """A mapping that remembers the line of each key (1-based), for error messages."""

    line: int | None = None
    lines: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off
    (so ``country: NO`` would become False), a classic way for a policy to mean
    something its author did not write."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    mapping = Located()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key: Any = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise ConfigError("keys must be plain scalars", line=key_node.start_mark.line + 1)
        if key in mapping:
            # YAML allows this silently; in a security config it is always a mistake.
            raise ConfigError(
                f"duplicate key {key!r}", line=key_node.start_mark.line + 1, key=str(key)
            )
        name = cast(str, key)  # a scalar; non-string keys are reported by the loaders
        mapping[name] = loader.construct_object(value_node, deep=True)
        mapping.lines[name] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True, slots=True)
class Config:
    issuers: tuple[IssuerConfig, ...]
    policy: Mapping[str, Any] = field(default_factory=dict)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    gateway: GatewaySettings | None = None  # the OTLP gateway, when configured
    shared: SharedSettings | None = None  # a fleet sharing revocations through Redis
    source: str | None = None


def read_text(path: Path) -> str:
    """A config or policy file's text, with every failure a ConfigError."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 (byte {exc.start})", source=str(path)) from None


def parse_text(text: str, source: str | None = None) -> Any:
    """YAML (a superset of JSON) into mappings that remember their lines."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError("nested too deeply", source=source) from None
    except ConfigError as exc:
        raise ConfigError(exc.detail, source=source, line=exc.line, key=exc.key) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source, line=line
        ) from None


def _block(data: Mapping[str, Any], key: str, source: str | None) -> Any:
    value = data.get(key)
    if value is None:
        return {}  # absent, or `key:` with nothing under it
    if not isinstance(value, Mapping):
        line = getattr(data, "lines", {}).get(key)
        raise ConfigError(f"{key} settings must be a mapping", source=source, line=line, key=key)
    return value


def load_config(config: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> Config:
    """Load from a mapping, a file path, or (when ``None``) the ``IAMSCOPE_CONFIG`` path."""
    source: str | None = None
    if config is None:
        path = os.environ.get(ENV_VAR)
        if not path:
            raise ConfigError(f"no configuration given and {ENV_VAR} is not set")
        config = path
    if isinstance(config, Mapping):
        data: Any = config
    else:
        source = str(config)
        text = read_text(Path(config))
        data = parse_text(text, source)
    if not isinstance(data, Mapping):
        raise ConfigError("the configuration must be a mapping", source=source)
    _reject_unknown(data, TOP_LEVEL_KEYS, source, "top-level")
    if "issuers" not in data:
        raise ConfigError("'issuers' is required", source=source, key="issuers")
    issuers = issuers_from_config(data["issuers"], where=source)
    return Config(
        issuers=issuers,
        policy=data.get("policy") or {},
        telemetry=TelemetrySettings.from_mapping(_block(data, "telemetry", source), where=source),
        cache=CacheSettings.from_mapping(_block(data, "cache", source), where=source),
        gateway=(
            GatewaySettings.from_mapping(data["gateway"], where=source)
            if data.get("gateway") is not None
            else None
        ),
        shared=(
            SharedSettings.from_mapping(_block(data, "shared", source), where=source)
            if "shared" in data
            else None
        ),
        source=source,
    )
