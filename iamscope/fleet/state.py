"""The fleet's revocations as one process knows them: pure state, no I/O.

:class:`SharedRevocations` is a :class:`~iamscope.cache.RevocationStore` whose answers
come from local memory only, so neither the cache-hit path nor a verification ever
waits on Redis. The synchroniser (:mod:`iamscope.fleet.sync`) feeds it: a full list on
start and after every reconnect (:meth:`replace`), single revocations as they arrive
(:meth:`add`), and a note of every successful contact (:meth:`contact`).

Staleness (contract 10): while the last contact is at most ``stale_after`` seconds old
the last known list is trusted. Past that, :meth:`check_stale` moves ``version`` (so
every cached decision is re-checked on its next lookup) and :meth:`is_revoked` raises
:class:`~iamscope.errors.RevocationsUnavailable` (503) until a resync succeeds. Before
the first successful sync nothing is trusted: a process that never saw the list
cannot know what is revoked.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, cast

from iamscope.errors import RevocationsUnavailable
from iamscope.tokens.principal import Principal

__all__ = ["KINDS", "Kind", "Revocation", "SharedRevocations"]

Kind = Literal["jti", "sub", "iss", "kid"]
KINDS: tuple[Kind, ...] = ("jti", "sub", "iss", "kid")


@dataclass(frozen=True, slots=True)
class Revocation:
    """``issuer`` is the configured issuer's name; ``value`` the jti, subject or key id
    (for ``iss``, the issuer's name again). ``until``: epoch seconds it lapses at."""

    kind: Kind
    issuer: str
    value: str
    until: float

    @property
    def member(self) -> str:
        """The identity of the revocation in Redis (the expiry is the member's score)."""
        return json.dumps([self.kind, self.issuer, self.value], separators=(",", ":"))

    @classmethod
    def from_member(cls, member: str | bytes, until: float) -> Revocation:
        """Parse what :attr:`member` wrote; anything else raises ``ValueError``."""
        try:
            kind, issuer, value = json.loads(member)
        except (TypeError, ValueError) as exc:
            raise ValueError("not a revocation") from exc
        if kind not in KINDS or not isinstance(issuer, str) or not isinstance(value, str):
            raise ValueError("not a revocation")
        if not math.isfinite(until):
            raise ValueError("not a revocation")
        return cls(cast(Kind, kind), issuer, value, float(until))


def _keys(principal: Principal) -> Iterable[tuple[Kind, str, str]]:
    yield "iss", principal.issuer, principal.issuer
    yield "sub", principal.issuer, principal.subject
    if principal.token_id is not None:
        yield "jti", principal.issuer, principal.token_id
    if principal.key_id is not None:
        yield "kid", principal.issuer, principal.key_id


class SharedRevocations:
    """Revocations shared by the fleet, answered from this process's memory."""

    def __init__(
        self, *, stale_after: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self._until: dict[tuple[Kind, str, str], float] = {}
        self._version = 0
        #: When ``version`` last moved (epoch seconds): how fresh this process's view is.
        self.changed_at: float | None = None
        self._contact: float | None = None  # last successful contact with Redis
        self._synced = False
        self._stale = True
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        return self._version

    @property
    def last_contact(self) -> float | None:
        return self._contact

    @property
    def stale(self) -> bool:
        return self._stale

    def is_revoked(self, principal: Principal) -> bool:
        if self._stale:
            raise RevocationsUnavailable(
                "the shared revocation list cannot be reached"
                if self._synced
                else "the shared revocation list has not been loaded yet",
                retry_after=1,
            )
        now = self.clock()
        until = self._until
        for key in _keys(principal):
            lapses = until.get(key)
            if lapses is not None and lapses > now:
                return True
        return False

    def revocations(self) -> list[Revocation]:
        now = self.clock()
        return [
            Revocation(kind, issuer, value, lapses)
            for (kind, issuer, value), lapses in sorted(self._until.items())
            if lapses > now
        ]

    # --- fed by the synchroniser -------------------------------------------------------

    def replace(self, revocations: Iterable[Revocation]) -> None:
        """The whole list, as Redis holds it now (start, reconnect)."""
        now = self.clock()
        fresh = {(r.kind, r.issuer, r.value): r.until for r in revocations if r.until > now}
        with self._lock:
            self._until = fresh
            self._synced = True
            self._contact = now
            self._stale = False
            self._moved(now)

    def _moved(self, now: float) -> None:
        self._version += 1
        self.changed_at = now

    def add(self, revocation: Revocation) -> None:
        key = (revocation.kind, revocation.issuer, revocation.value)
        with self._lock:
            if revocation.until > self._until.get(key, -math.inf):
                self._until[key] = revocation.until
                self._moved(self.clock())

    def contact(self) -> None:
        """Redis answered (an empty read counts): the known list is current."""
        self._contact = self.clock()

    def check_stale(self) -> float:
        """Flip to stale when the last contact is too old; the seconds until that would
        happen (0 when stale), so the synchroniser knows how long it may sleep."""
        if self._stale:
            return 0.0
        left = (self._contact or 0.0) + self.stale_after - self.clock()
        if left > 0:
            return left
        with self._lock:
            if not self._stale:
                self._stale = True
                self._moved(self.clock())  # cached decisions re-check, and now fail closed
        return 0.0
