"""The config file's ``shared:`` block: where the fleet's shared state lives (contract 10).

Pure data, no Redis import: the block is checked at load time even where the optional
``redis`` package is not installed. The URL itself is a secret (it may carry a
password) and never sits in the file: the block names the environment variable that
holds it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iamscope._yaml import reject_unknown
from iamscope.errors import ConfigError

__all__ = ["SHARED_KEYS", "SharedSettings"]

SHARED_KEYS = ("redis_url_env", "stale_after", "namespace", "revocation_ttl", "heartbeat")
_SECONDS = ("stale_after", "revocation_ttl", "heartbeat")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A Redis key prefix: no spaces, and none of SCAN's glob characters (*?[]).
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class SharedSettings:
    """``redis_url_env``: the environment variable holding ``redis://`` or ``rediss://``.
    ``stale_after``: how long cached and new decisions keep being served on the last
    known revocations while Redis cannot be reached; then every request answers 503.
    ``revocation_ttl``: how long a revocation is kept when neither its ``until`` nor the
    issuer's ``max_lifetime`` bounds it (no token it could match outlives that).
    ``heartbeat``: how often each process reports itself for ``iamscope fleet status``.
    """

    redis_url_env: str = "IAMSCOPE_REDIS_URL"
    stale_after: float = 30.0
    namespace: str = "iamscope"
    revocation_ttl: float = 86_400.0
    heartbeat: float = 5.0

    def redis_url(self) -> str:
        url = os.environ.get(self.redis_url_env, "")
        if not url:
            raise ConfigError(
                f"shared: the environment variable {self.redis_url_env} (redis_url_env) is not set",
                key="redis_url_env",
            )
        if not url.startswith(("redis://", "rediss://", "unix://")):
            # Never echo the value: it may hold a password.
            raise ConfigError(
                f"shared: {self.redis_url_env} must hold a redis://, rediss:// or unix:// URL",
                key="redis_url_env",
            )
        return url

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str | None = None) -> SharedSettings:
        reject_unknown(data, SHARED_KEYS, where, "shared")
        lines = getattr(data, "lines", {})
        for name, value in data.items():
            line = lines.get(name)
            if name in _SECONDS:
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if not number or not 0 < value < math.inf:
                    raise ConfigError(
                        f"shared.{name} must be a positive number of seconds",
                        source=where,
                        line=line,
                        key=name,
                    )
            elif not isinstance(value, str) or not (
                _ENV_NAME if name == "redis_url_env" else _NAMESPACE
            ).match(value):
                what = (
                    "an environment variable's name (letters, digits, _)"
                    if name == "redis_url_env"
                    else "a key prefix of up to 64 letters, digits and _ . : -"
                )
                raise ConfigError(
                    f"shared.{name} must be {what}",
                    source=where,
                    line=line,
                    key=name,
                )
        return cls(**data)
