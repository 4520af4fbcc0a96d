"""The fast path: a digest of the raw credential → (Principal, Access), bounded.

A lookup is one dict access plus three comparisons. An entry never outlives its
token's ``exp`` (nor the configured TTL cap), dies with a policy reload (the policy
generation is stored in the entry and compared on lookup: no scan), and with
revocation (the revocation store's version is compared on lookup; only when it moved
is the entry re-checked), and with the key that verified it (when the issuer retires
that key, :meth:`TokenCache.evict_keys` drops its entries: a scan, off the lookup
path). Rejections are cached briefly too, so a flood of one bad token costs one
verification, not thousands.

Keys are SHA-256 digests of the credential's header bytes, not the credentials: a
heap dump of the cache holds no usable token. (Measured here: hashlib.sha256 on a
~900-byte header beats blake2b; see benchmarks.)
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import FrozenInstanceError, dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, TypeVar

from opentelemetry.util.types import AttributeValue

from iamscope._fork import after_fork
from iamscope._yaml import reject_unknown
from iamscope.errors import ConfigError, IAMScopeError
from iamscope.policy.access import Access
from iamscope.telemetry.spans import compact_attributes
from iamscope.tokens.principal import Principal

__all__ = [
    "CacheSettings",
    "InMemoryRevocations",
    "RevocationStore",
    "TokenCache",
    "digest",
]


#: The cache key of a credential's header bytes (bound once: the hit path calls it).
_sha256 = hashlib.sha256


def digest(credential: bytes) -> bytes:
    return _sha256(credential).digest()


CACHE_KEYS = ("max_entries", "max_ttl", "negative_ttl", "max_negative")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    max_entries: int = 100_000
    max_ttl: float = 300.0  # an entry lives at most this long, whatever its token's exp
    negative_ttl: float = 5.0  # how long a rejection is remembered
    max_negative: int = 10_000

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str | None = None) -> CacheSettings:
        """The config file's ``cache`` block; every value a positive number."""
        reject_unknown(data, CACHE_KEYS, where, "cache")
        lines = getattr(data, "lines", {})
        for name, value in data.items():
            whole = name.startswith("max_") and name != "max_ttl"
            number = isinstance(value, int) or (not whole and isinstance(value, float))
            if isinstance(value, bool) or not number or not 0 < value < math.inf:
                what = "a positive whole number" if whole else "a positive number of seconds"
                raise ConfigError(
                    f"cache.{name} must be {what}", source=where, line=lines.get(name), key=name
                )
        return cls(**data)


class RevocationStore(Protocol):
    """Revoked token ids, subjects and issuers. ``version`` grows with every change."""

    @property
    def version(self) -> int: ...

    def is_revoked(self, principal: Principal) -> bool: ...


class InMemoryRevocations:
    """A process-local revocation store (a shared store plugs in through the Protocol)."""

    def __init__(self) -> None:
        self._jtis: set[tuple[str, str]] = set()
        self._subjects: set[tuple[str, str]] = set()
        self._issuers: set[str] = set()
        #: Grows with every change. A plain attribute: every cache hit reads it.
        self.version = 0
        self._lock = threading.Lock()

    def revoke_token(self, issuer: str, jti: str) -> None:
        self._change(lambda: self._jtis.add((issuer, jti)))

    def revoke_subject(self, issuer: str, subject: str) -> None:
        self._change(lambda: self._subjects.add((issuer, subject)))

    def revoke_issuer(self, issuer: str) -> None:
        self._change(lambda: self._issuers.add(issuer))

    def _change(self, apply: Callable[[], None]) -> None:
        with self._lock:
            apply()
            self.version += 1

    def is_revoked(self, principal: Principal) -> bool:
        return (
            principal.issuer in self._issuers
            or (principal.issuer, principal.subject) in self._subjects
            or (
                principal.token_id is not None
                and (principal.issuer, principal.token_id) in self._jtis
            )
        )


class Entry(Principal):
    """A cached allowed decision, which is also the compact principal (see
    :meth:`TokenCache.compact`) that every hit carries: one object a token rather than
    an entry holding a principal (48 bytes fewer a token). To everyone else it is the
    Principal: not a dataclass of its own, so ``dataclasses.fields``, ``asdict`` and its
    repr show the principal's fields only, and those stay frozen."""

    __slots__ = ("access", "generation", "revocations", "span_attributes", "until")

    #: When the cache forgets it: the token's ``exp`` or the TTL cap, whichever is first.
    until: float
    generation: int
    revocations: int
    access: Access
    #: Its span attributes (contract 5); ``attributes`` are the principal's own.
    span_attributes: Mapping[str, AttributeValue] | None
    error: ClassVar[None] = None  # a rejection is a Rejected

    def __setattr__(self, name: str, value: object) -> None:
        # Principal's frozen __setattr__ raises for a subclass's own fields too: on
        # CPython 3.11 its super() call fails for a slots dataclass. Ours go straight in.
        if name not in Entry.__slots__:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)


@dataclass(slots=True)
class Rejected:
    """A cached rejection."""

    until: float
    generation: int
    revocations: int
    error: IAMScopeError


_H = TypeVar("_H", bound=Hashable)
_P = TypeVar("_P", bound=Principal)
_E = TypeVar("_E", Entry, Rejected)
_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


class _Shared:
    """One copy of each equal value the cached principals and span attributes hold
    (issuer URLs, key ids, group sets, audience tuples, attribute mappings): thousands of
    tokens carry a handful of distinct ones. Bounded: when full it starts over, which
    costs only sharing, never correctness. Lock-free: ``setdefault`` on these built-in
    types is atomic under the GIL."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}

    def __call__(self, value: _H) -> _H:
        values = self._values
        if len(values) >= self.LIMIT:
            values.clear()
        found: _H = values.setdefault(value, value)
        return found

    def mapping(self, mapping: Mapping[str, Any]) -> Mapping[str, Any]:
        """An equal read-only mapping, shared, its values shared too (a mapping with a
        value that cannot be shared is kept as it is)."""
        if not mapping:
            return _NO_CLAIMS
        values = self._values
        try:
            key = ("mapping", type(mapping), tuple(mapping.items()))
            found: Mapping[str, Any] | None = values.get(key)
        except TypeError:
            return mapping
        if found is None:
            if len(values) >= self.LIMIT:
                values.clear()
            fresh: Mapping[str, Any] = {name: self(v) for name, v in mapping.items()}
            if isinstance(mapping, MappingProxyType):
                fresh = MappingProxyType(fresh)
            found = values.setdefault(key, fresh)
        return found


class TokenCache:
    """Bounded map from credential digest to :class:`Entry`. Thread-safe for writes;
    reads take no lock (a dict read is atomic under the GIL).

    An entry keeps what the engine and telemetry read on a hit (see :meth:`compact`),
    not the token's verified claims: bindings on raw claims were resolved before the
    entry was made, and a policy reload, which could need them again, drops the entry.
    """

    def __init__(
        self,
        settings: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        revocations: RevocationStore | None = None,
    ) -> None:
        self.settings = settings or CacheSettings()
        self.clock = clock
        self.revocations: RevocationStore = revocations or InMemoryRevocations()
        #: Allowed entries. Read without the lock by the engine's hit path (a dict read is
        #: atomic under the GIL); changed in place only, never replaced.
        self.allowed: dict[bytes, Entry] = {}
        self._negative: dict[bytes, Rejected] = {}
        self._share = _Shared()
        self._lock = threading.Lock()
        # The key refresher thread evicts under this lock: a fork must not inherit it held.
        after_fork(self, TokenCache._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.allowed)

    def get(self, key: bytes, generation: int) -> Entry | Rejected | None:
        entry: Entry | Rejected | None = self.allowed.get(key)
        if entry is None:
            entry = self._negative.get(key)
            if entry is None:
                return None
        now = self.clock()
        if entry.until <= now or entry.generation != generation:
            self._drop(key, entry)
            return None
        # The version is read once: one read after the check could be a revocation
        # that landed during it, marking this entry checked against it when it was not.
        version = self.revocations.version
        if entry.revocations != version:
            if type(entry) is Entry:
                try:
                    revoked = self.revocations.is_revoked(entry)
                except IAMScopeError as exc:  # a shared store out of reach: fail closed
                    return Rejected(entry.until, generation, version, exc)
                if revoked:
                    self._drop(key, entry)
                    return None
            entry.revocations = version
        return entry

    def put_allowed(
        self,
        key: bytes,
        principal: Principal,
        access: Access,
        generation: int,
        attributes: Mapping[str, AttributeValue] | None = None,
        revocations_checked: int | None = None,
    ) -> Entry:
        """Cache an allowed identity, :meth:`compact`: the entry is the principal
        decisions should carry from now on, and holds their span attributes.
        ``revocations_checked``: the revocation store's version read *before* the
        principal was checked against it (default: now)."""
        now = self.clock()
        checked = self.revocations.version if revocations_checked is None else revocations_checked
        entry = self._compact(Entry, principal)
        entry.until = min(principal.expires_at, now + self.settings.max_ttl)
        entry.generation = generation
        entry.revocations = checked
        entry.access = access
        entry.span_attributes = (
            None if attributes is None else compact_attributes(attributes, self._share.mapping)
        )
        self._store(self.allowed, key, entry, self.settings.max_entries)
        return entry

    def compact(self, principal: Principal) -> Principal:
        """The principal as an entry keeps it: without its claims (read by bindings on
        raw claim values, which resolved before it was cached; a request that needs them
        must verify the token itself) or its issue time, and with the values many tokens
        share (issuer URL, groups, audience, key ids...) shared."""
        return self._compact(Principal, principal)

    def _compact(self, kind: type[_P], principal: Principal) -> _P:
        share = self._share
        return kind(
            issuer=principal.issuer,
            issuer_url=share(principal.issuer_url),
            subject=principal.subject,
            kind=principal.kind,
            expires_at=principal.expires_at,
            groups=share(principal.groups),
            roles=share(principal.roles),
            scopes=share(principal.scopes),
            attributes=share.mapping(principal.attributes),
            claims=_NO_CLAIMS,
            audience=share(principal.audience),
            issued_at=None,  # read by nothing after verification
            token_id=principal.token_id,
            key_id=share(principal.key_id),
            key_thumbprint=share(principal.key_thumbprint),
        )

    def put_rejected(
        self, key: bytes, error: IAMScopeError, generation: int, ttl: float | None = None
    ) -> Rejected:
        """Cache a rejection for ``negative_ttl`` (or ``ttl``, when shorter)."""
        lifetime = (
            self.settings.negative_ttl if ttl is None else min(ttl, self.settings.negative_ttl)
        )
        entry = Rejected(self.clock() + lifetime, generation, self.revocations.version, error)
        self._store(self._negative, key, entry, self.settings.max_negative)
        return entry

    def _store(self, table: dict[bytes, _E], key: bytes, entry: _E, limit: int) -> None:
        with self._lock:
            table.pop(key, None)
            while len(table) >= limit:
                del table[next(iter(table))]  # oldest first: dicts keep insertion order
            table[key] = entry

    def _drop(self, key: bytes, entry: Entry | Rejected) -> None:
        with self._lock:
            table: dict[bytes, Entry] | dict[bytes, Rejected]
            for table in (self.allowed, self._negative):
                if table.get(key) is entry:
                    del table[key]

    def evict_keys(self, issuer: str, thumbprints: frozenset[str]) -> None:
        """Drop every decision verified with one of ``issuer``'s retired keys. A scan, run
        when keys retire (rarely), so that a lookup does no extra work."""
        with self._lock:
            gone = [
                key
                for key, entry in self.allowed.items()
                if entry.key_thumbprint in thumbprints and entry.issuer == issuer
            ]
            for key in gone:
                del self.allowed[key]

    def discard(self, key: bytes) -> None:
        with self._lock:
            self.allowed.pop(key, None)
            self._negative.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.allowed.clear()
            self._negative.clear()

    def drop_subject(self, issuer: str, subject: str) -> int:
        """Forget every cached decision for one identity (its groups changed at the
        IdP, say): the next request re-verifies and re-resolves. A scan, for a rare
        operator action; lookups go on without the lock meanwhile."""
        with self._lock:
            doomed = [
                key
                for key, entry in self.allowed.items()
                if entry.issuer == issuer and entry.subject == subject
            ]
            for key in doomed:
                del self.allowed[key]
        return len(doomed)
