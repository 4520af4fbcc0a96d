"""How an issuer's keys follow it in time (contract 9): one issuer's ``keys:`` block.

The defaults answer the three questions an operator asks: a new signing key is honoured
within ``min_refetch`` (1 s) of its first token; a key gone from the JWKS is refused
within ``refresh`` + ``removed_key_grace`` (60 s) and its cached decisions go with it;
a request never waits for keys longer than ``request_wait`` (2 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from iamscope.errors import ConfigError

__all__ = ["KEY_POLICY_KEYS", "KeyPolicy"]

#: The ``keys:`` block's keys, in the order the README documents them.
KEY_POLICY_KEYS = (
    "refresh",
    "min_refresh",
    "min_refetch",
    "removed_key_grace",
    "fetch_timeout",
    "request_wait",
    "max_keys",
    "max_bytes",
)
_WHOLE = frozenset({"max_keys", "max_bytes"})
_MAY_BE_ZERO = frozenset({"removed_key_grace"})


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Key refresh and retirement for an issuer. Durations in seconds."""

    #: Background JWKS refresh interval: the longest a removed key stays trusted
    #: (plus ``removed_key_grace``). A shorter ``Cache-Control: max-age`` shortens it.
    refresh: float = 60.0
    #: The floor for a ``max-age`` (or ``no-cache``) the issuer sends.
    min_refresh: float = 10.0
    #: Least time between fetches caused by requests (unknown ``kid``, a bad signature
    #: under a known ``kid``), per issuer; also how long a ``kid`` found missing is
    #: answered from memory. Bounds a flood of random ``kid``s to one fetch per interval.
    min_refetch: float = 1.0
    #: How long a key gone from the JWKS keeps verifying (0: refused at once).
    removed_key_grace: float = 0.0
    #: One HTTP exchange, connect to last byte.
    fetch_timeout: float = 5.0
    #: The longest a request waits for keys; the fetch goes on in the background.
    request_wait: float = 2.0
    #: A JWKS with more entries is refused (503, a log line, a metric), never truncated.
    max_keys: int = 100
    #: A key document (discovery, JWKS, PEM) larger than this is refused the same way.
    max_bytes: int = 512 * 1024

    def __post_init__(self) -> None:
        for spec in fields(self):
            check(spec.name, getattr(self, spec.name))
        if self.min_refresh > self.refresh:
            raise ConfigError("keys.min_refresh must not exceed keys.refresh", key="min_refresh")

    def refresh_interval(self, max_age: float | None) -> float:
        """The next background refresh: ``refresh``, or the issuer's shorter ``max-age``
        but never under ``min_refresh``."""
        if max_age is None:
            return self.refresh
        return min(self.refresh, max(max_age, self.min_refresh))


def check(name: str, value: object) -> None:
    """One ``keys:`` value: a positive number (whole for counts; the grace may be 0)."""
    whole = name in _WHOLE
    zero_ok = name in _MAY_BE_ZERO
    fits = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and (isinstance(value, int) or not whole)
        and (0 <= value < math.inf if zero_ok else 0 < value < math.inf)  # NaN fails too
    )
    if not fits:
        what = "a positive whole number" if whole else "a positive number of seconds"
        if zero_ok:
            what = "a number of seconds ≥ 0"
        raise ConfigError(f"keys.{name} must be {what}", key=name)
