"""Loading the configuration file (contract 1): YAML or JSON, from code, a path, or
``IAMSCOPE_CONFIG``. Errors name the file, the line and the key, with a "did you mean".

Top-level keys are ``issuers``, ``policy``, ``telemetry`` and ``cache``. This module
owns the file format and the ``issuers`` section; the other sections are carried as
mappings for their own loaders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iamscope.errors import ConfigError
from iamscope.tokens.issuer import IssuerConfig, _reject_unknown, issuers_from_config

__all__ = ["Config", "load_config"]

TOP_LEVEL_KEYS = ("issuers", "policy", "telemetry", "cache")
ENV_VAR = "IAMSCOPE_CONFIG"


class Located(dict[str, Any]):
    """A mapping that remembers the line of each key (1-based), for error messages."""

    line: int | None = None
    lines: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    mapping = Located()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            # YAML allows this silently; in a security config it is always a mistake.
            raise ConfigError(
                f"duplicate key {key!r}", line=key_node.start_mark.line + 1, key=str(key)
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True, slots=True)
class Config:
    issuers: tuple[IssuerConfig, ...]
    policy: Mapping[str, Any] = field(default_factory=dict)
    telemetry: Mapping[str, Any] = field(default_factory=dict)
    cache: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None


def parse_text(text: str, source: str | None = None) -> Any:
    """YAML (a superset of JSON) into mappings that remember their lines."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(exc.detail, source=source, line=exc.line, key=exc.key) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source, line=line
        ) from None


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
        try:
            text = Path(config).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", source=source) from None
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
        telemetry=data.get("telemetry") or {},
        cache=data.get("cache") or {},
        source=source,
    )
