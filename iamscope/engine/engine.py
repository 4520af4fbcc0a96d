"""The enforcement core shared by the ASGI and WSGI middlewares and the decorators.

:class:`IAMScope` holds the verifier shells, the policy in force, the token cache and
the audit sink, and turns a request's headers into a :class:`Decision`:

    headers ─► credential bytes ─► cache (hit: done) ─► extract + verify (single-flight
    per credential) ─► resolve ─► cache ─► Decision ─► audit

Only :meth:`IAMScope.decide` (sync) and :meth:`IAMScope.decide_async` differ, and only
where they wait for the verifier; everything else is one code path. Denials become
answers through :func:`iamscope.engine.answers.denial` (or the app's ``answer`` hook).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import get_current_span

from iamscope.config import Config, load_config
from iamscope.engine import decision as ids
from iamscope.engine.answers import Answer, denial
from iamscope.engine.cache import CacheSettings, RevocationStore, TokenCache, digest
from iamscope.engine.decision import Decision
from iamscope.errors import (
    ConfigError,
    IAMScopeError,
    RevocationsUnavailable,
    TokenError,
    TokenMissing,
    TokenRevoked,
)
from iamscope.fleet.sync import Fleet
from iamscope.policy.reload import PolicyStore
from iamscope.telemetry.audit import AuditSink, HitSummary, LoggerSink, SubjectHasher, audit_event
from iamscope.telemetry.metrics import Metrics
from iamscope.telemetry.settings import TelemetrySettings, hash_key_from_env
from iamscope.telemetry.spans import identity_attributes, tag
from iamscope.tokens.extract import Source, extract_from_headers
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.keys import KeyPolicy
from iamscope.tokens.principal import Principal
from iamscope.tokens.verifier import AsyncTokenVerifier, TokenVerifier
from iamscope.tokens.verify import Clock, Verifier

__all__ = ["IAMScope"]

Headers = Sequence[tuple[bytes, bytes]]

# Decision's generated __new__ is a Python function; the hit path builds its tuple directly.
_tuple_new = tuple.__new__


class IAMScope:
    """One per application: who is this, what may they see. Thread- and loop-safe."""

    def __init__(
        self,
        issuers: Iterable[IssuerConfig],
        policy: PolicyStore,
        *,
        clock: Clock = time.time,
        cache: CacheSettings | None = None,
        revocations: RevocationStore | None = None,
        key_policy: KeyPolicy | None = None,
        audit: AuditSink | None = None,
        audit_hits: float | Literal["summary"] = 1.0,
        summary_interval: float = 60.0,
        hash_key: bytes | None = None,
        telemetry: TelemetrySettings | None = None,
        meter_provider: MeterProvider | None = None,
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = (),
        optional: bool = False,
        realm: str = "iamscope",
        answer: Answer | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.telemetry = telemetry or TelemetrySettings()
        self.hasher = _hasher(hash_key, self.telemetry)
        self.metrics = Metrics(meter_provider)
        self.core = Verifier(issuers, clock=clock, key_policy=key_policy)
        self.core.keys.on_refresh = self.metrics.key_fetch
        self.verifier = TokenVerifier(self.core)
        self.async_verifier = AsyncTokenVerifier(self.core)
        self.policy = policy
        policy.observers.append(lambda result: self.metrics.policy_reload(result.changed))
        if fleet is not None and revocations is not None:
            raise ValueError("give revocations or fleet, not both: the fleet brings its own")
        self.fleet = fleet
        if fleet is not None:
            revocations = fleet.revocations
        self.cache = TokenCache(cache, clock=clock, revocations=revocations)
        self.clock = clock
        self.audit = audit if audit is not None else LoggerSink()
        self.audit_hits = audit_hits
        self._summary = (
            HitSummary(self.audit, self.hasher, interval=summary_interval, clock=clock)
            if audit_hits == "summary"
            else None
        )
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)
        self.optional = optional
        self.realm = realm
        #: Renders refusals: (error, decision_id, scope) → (status, headers, body).
        self.answer: Answer = answer or functools.partial(denial, realm=realm)
        # One source per distinct place tokens arrive, in issuer order.
        self.sources: tuple[Source, ...] = tuple(
            dict.fromkeys(cfg.token_source for cfg in self.core.issuers)
        )
        self.header_names = frozenset({s.header_name.encode("latin-1") for s in self.sources})
        # (source, its header name, its cache-key prefix): one cache, keys kept apart.
        self._source_names = tuple(
            (s, s.header_name.encode("latin-1"), s.name.encode("latin-1") + b"\0")
            for s in self.sources
        )
        # The fast path serves the usual shape: tokens arrive in one place.
        self._single = self._source_names[0][1:] if len(self._source_names) == 1 else None
        self._sync_flights: dict[bytes, threading.Lock] = {}
        self._async_flights: dict[bytes, asyncio.Future[Decision]] = {}
        self._flight_lock = threading.Lock()
        if fleet is not None:
            self._join(fleet)

    def _join(self, fleet: Fleet) -> None:
        """Act on the fleet's broadcasts and report to it; start following it."""
        fleet.on("policy", lambda _: self.policy.reload())
        fleet.on("drop", lambda f: self.cache.drop_subject(f["issuer"], f["subject"]))
        fleet.on("keys", lambda f: self._refresh_from_fleet(f.get("issuer") or None))
        fleet.report = lambda: {"policy_version": self.policy.current.version}
        fleet.start()

    def _refresh_from_fleet(self, issuer: str | None) -> None:
        refresh = getattr(self, "refresh_keys", None)  # the key-lifecycle hook, when present
        if refresh is not None:
            refresh(issuer)

    @classmethod
    def from_config(
        cls, config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None, **kw: Any
    ) -> IAMScope:
        """Build from a config file, a mapping, or ``IAMSCOPE_CONFIG``."""
        loaded = config if isinstance(config, Config) else load_config(config)
        source: Any = loaded.source if loaded.source is not None else dict(loaded.policy)
        policy = PolicyStore(source, issuers=loaded.issuers)
        kw.setdefault("telemetry", loaded.telemetry)
        kw.setdefault("cache", loaded.cache)
        if loaded.shared is not None and "fleet" not in kw and "revocations" not in kw:
            kw["fleet"] = Fleet(loaded.shared, clock=kw.get("clock", time.time))
        return cls(loaded.issuers, policy, **kw)

    # --- public paths ----------------------------------------------------------------

    def is_public(self, path: str) -> bool:
        if path in self.public_paths:
            return True
        if not self.public_prefixes or "//" in path or "/." in path or "\\" in path:
            return False  # no prefix match through empty or dot segments: fail closed
        return path.startswith(self.public_prefixes)

    # --- deciding --------------------------------------------------------------------

    def hit(self, headers: Headers, method: str = "GET", path: str = "/") -> Decision | None:
        """The fast path: an allowed cache hit, audited, or None for everything else (which
        :meth:`decide` / :meth:`decide_now` then answer). One header scan, one digest, one
        dict lookup; no I/O, no lock unless hits are summarised."""
        single = self._single
        if single is None:
            return None
        wanted, prefix = single
        value = None
        for name, found in headers:
            if name == wanted:
                if value is not None:
                    return None  # repeated: the full path answers 400
                value = found
        if value is None:
            return None
        entry = self.cache.get(prefix + digest(value), self.policy.generation)
        if entry is None or entry.access is None:
            return None
        decision: Decision = _tuple_new(
            Decision,
            (True, ids.next_seq(), "hit", entry.access, entry.principal, None, entry.attributes),
        )
        return self._audited(decision, method, path)

    def decide(self, headers: Headers, method: str = "GET", path: str = "/") -> Decision:
        found = self._lookup(headers)
        if isinstance(found, Decision):
            return self._audited(found, method, path)
        key, token = found
        lock = self._sync_flight(key)
        with lock:  # concurrent misses on one credential verify once
            again = self._cached(key)
            if again is not None:
                return self._audited(again, method, path)
            started = time.perf_counter()
            try:
                principal = self.verifier.verify(token)
            except IAMScopeError as exc:
                decision = self._rejected(key, exc)
            else:
                decision = self._accepted(key, principal)
            self._verified(started, decision)
        with self._flight_lock:
            if self._sync_flights.get(key) is lock:
                del self._sync_flights[key]
        return self._audited(decision, method, path)

    def decide_now(
        self, headers: Headers, method: str = "GET", path: str = "/"
    ) -> Decision | tuple[bytes, str]:
        """The decision when no I/O is needed (cache hits, missing or malformed
        credentials), else ``(key, token)`` to hand to :meth:`decide_async`. Lets the
        ASGI middleware answer cache hits without creating a coroutine."""
        found = self._lookup(headers)
        if isinstance(found, Decision):
            return self._audited(found, method, path)
        return found

    async def decide_async(
        self,
        headers: Headers,
        method: str = "GET",
        path: str = "/",
        *,
        pending: tuple[bytes, str] | None = None,
    ) -> Decision:
        if pending is None:
            found = self._lookup(headers)
            if isinstance(found, Decision):
                return self._audited(found, method, path)
            pending = found
        key, token = pending
        flight = self._async_flights.get(key)
        if flight is not None and flight.get_loop() is asyncio.get_running_loop():
            decision = await asyncio.shield(flight)
            return self._audited(_again(decision), method, path)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._async_flights[key] = future
        try:
            started = time.perf_counter()
            try:
                principal = await self.async_verifier.verify(token)
            except IAMScopeError as exc:
                decision = self._rejected(key, exc)
            else:
                decision = self._accepted(key, principal)
            self._verified(started, decision)
            future.set_result(decision)
        except BaseException as exc:  # cancelled: waiters must not hang on the future
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: the waiters get it or nobody does
            raise
        finally:
            if self._async_flights.get(key) is future:
                del self._async_flights[key]
        return self._audited(decision, method, path)

    # --- the shared steps ------------------------------------------------------------

    def _lookup(self, headers: Headers) -> tuple[bytes, str] | Decision:
        """A cached decision, a denial, or (cache key, token) to verify.

        ASGI header names are lowercase (the spec says so; the WSGI shell builds them
        lowercase), so names compare as they come.
        """
        values: dict[bytes, list[bytes]] = {}
        wanted = self.header_names
        for name, value in headers:
            if name in wanted:
                if name in values:
                    values[name].append(value)
                else:
                    values[name] = [value]
        for source, name, prefix in self._source_names:
            raw = values.get(name)
            if not raw:
                continue
            key = prefix + (digest(raw[0]) if len(raw) == 1 else digest(b"\0".join(raw)))
            hit = self._cached(key)
            if hit is not None:
                return hit
            try:
                token = extract_from_headers(
                    [(name, v) for v in raw], source, max_bytes=self.core.max_token_bytes
                )
            except TokenMissing:
                continue  # e.g. a cookie header without our cookie: try the next source
            except IAMScopeError as exc:
                return Decision(False, ids.next_seq(), "none", error=exc)
            return key, token
        if self.optional:
            return Decision(True, ids.next_seq(), "none")
        return Decision(False, ids.next_seq(), "none", error=TokenMissing("no credentials"))

    def _cached(self, key: bytes) -> Decision | None:
        entry = self.cache.get(key, self.policy.generation)
        if entry is None:
            return None
        if entry.error is not None:
            return Decision(False, ids.next_seq(), "hit", error=entry.error)
        return Decision(
            True, ids.next_seq(), "hit", entry.access, entry.principal, None, entry.attributes
        )

    def _accepted(self, key: bytes, principal: Principal) -> Decision:
        # The version is read before the check: a revocation landing after it moves the
        # version past the entry's, so the next lookup re-checks (no window to miss it).
        checked = self.cache.revocations.version
        try:
            if self.cache.revocations.is_revoked(principal):
                return self._rejected(key, TokenRevoked("the credential was revoked"))
        except RevocationsUnavailable as exc:  # never cached: it ends with the outage
            return self._rejected(key, exc)
        generation = self.policy.generation
        access = self.policy.current.resolve(principal)
        attributes = identity_attributes(
            principal,
            access,
            self.hasher(principal.issuer, principal.subject)
            if self.hasher is not None and self.telemetry.user_hash
            else None,
            enduser_id=self.telemetry.enduser_id,
        )
        self.cache.put_allowed(key, principal, access, generation, attributes, checked)
        return Decision(True, ids.next_seq(), "miss", access, principal, None, attributes)

    def _verified(self, started: float, decision: Decision) -> None:
        code = decision.error.code if decision.error is not None else None
        self.metrics.verified(time.perf_counter() - started, code)

    def _rejected(self, key: bytes, error: IAMScopeError) -> Decision:
        if isinstance(error, TokenError):
            # An outage (KeysUnavailable) is never cached: it may end any second.
            self.cache.put_rejected(key, error, self.policy.generation)
        return Decision(False, ids.next_seq(), "miss", error=error)

    def _audited(self, decision: Decision, method: str, path: str) -> Decision:
        if decision.allowed and decision.cache == "hit":
            self.metrics.allowed_hits += 1
            if self._summary is not None:
                self._summary.add(decision, method, path)
                return decision
            if not _sampled(self.audit_hits):
                return decision
        else:
            code = decision.error.code if decision.error is not None else None
            self.metrics.decision(decision.allowed, code, decision.cache)
        self.audit.emit(audit_event(decision, method, path, self.hasher, self.clock()))
        return decision

    def audit_denial(
        self, decision: Decision, error: IAMScopeError, method: str, path: str
    ) -> None:
        """Record a refusal made after the middleware let the request in (a requirement
        checked by a decorator or a dependency), under the request's decision id."""
        refused = decision._replace(allowed=False, error=error)
        self.metrics.decision(False, error.code, refused.cache)
        span = get_current_span()
        if span.is_recording():
            tag(span, refused)
        self.audit.emit(audit_event(refused, method, path, self.hasher, self.clock()))

    def audit_export(self, decision: Decision, path: str, details: str) -> None:
        """One event per export decision of the OTLP gateway, under the request's id."""
        record = audit_event(decision, "POST", path, self.hasher, self.clock())
        self.audit.emit(record._replace(details=details))

    def _sync_flight(self, key: bytes) -> threading.Lock:
        with self._flight_lock:
            lock = self._sync_flights.get(key)
            if lock is None:
                lock = self._sync_flights[key] = threading.Lock()
            return lock

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.close()
        self.verifier.close()
        if self._summary is not None:
            self._summary.close()
        self.audit.close()


def _hasher(key: bytes | None, telemetry: TelemetrySettings) -> SubjectHasher | None:
    """The keyed subject hash for spans and audit. With hashing on (the default) and no
    key, refuse to start: a random key would make hashes uncorrelatable, and no key at
    all would mean the raw subject."""
    key = key if key is not None else hash_key_from_env(telemetry.hash_key_env)
    if key is not None:
        return SubjectHasher(key)
    if telemetry.user_hash:
        raise ConfigError(
            f"user.hash is on but {telemetry.hash_key_env} is not set: set it to a secret "
            "(e.g. `openssl rand -hex 32`), pass hash_key=, or set telemetry.user_hash: false",
            key="hash_key_env",
        )
    return None


def _again(decision: Decision) -> Decision:
    """A waiter's own copy of a shared miss: its own decision id, marked as a hit."""
    return Decision(
        decision.allowed,
        ids.next_seq(),
        "hit",
        decision.access,
        decision.principal,
        decision.error,
        decision.attributes,
    )


def _sampled(rate: float | str) -> bool:
    if not isinstance(rate, float | int) or rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return random.random() < rate  # noqa: S311 - sampling, not security
