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
import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import get_current_span

from iamscope.config import Config, in_file, load_config
from iamscope.engine import decision as ids
from iamscope.engine.answers import Answer, denial
from iamscope.engine.cache import CacheSettings, RevocationStore, TokenCache, digest
from iamscope.engine.decision import Decision
from iamscope.errors import (
    ConfigError,
    IAMScopeError,
    KeyNotFound,
    RevocationsUnavailable,
    SignatureInvalid,
    TokenError,
    TokenMissing,
    TokenRevoked,
)
from iamscope.fleet.sync import Fleet
from iamscope.policy.reload import PolicyStore, ReloadResult
from iamscope.telemetry.audit import AuditSink, HitSummary, LoggerSink, SubjectHasher, audit_event
from iamscope.telemetry.metrics import Metrics
from iamscope.telemetry.settings import TelemetrySettings, hash_key_from_env
from iamscope.telemetry.spans import identity_attributes, tag
from iamscope.tokens.extract import Source, extract_from_headers
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.keys import KeyPolicy, RefreshResult
from iamscope.tokens.principal import Principal
from iamscope.tokens.verifier import AsyncTokenVerifier, TokenVerifier
from iamscope.tokens.verify import Clock, Verifier

__all__ = ["IAMScope"]

Headers = Sequence[tuple[bytes, bytes]]

# Decision's generated __new__ is a Python function; the hit path builds its tuple directly.
_tuple_new = tuple.__new__
_sha256 = hashlib.sha256  # the cache key is cache.digest(); inlined on the hit path
#: Late refusals remembered until their request finishes (bounds what a caller that
#: refuses outside the web shells, and so never finishes, can leave behind).
_MAX_LATE = 4096


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
        audit_hits: float | Literal["summary"] = "summary",
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
        # One background refresher per engine, a thread (never on a request's path, in
        # WSGI and ASGI apps alike); the async shell only fetches what requests need.
        self.verifier = TokenVerifier(self.core)
        self.async_verifier = AsyncTokenVerifier(self.core, background=False)
        self.policy = policy
        policy.observers.append(lambda result: self.metrics.policy_reload(result.changed))
        if fleet is not None and revocations is not None:
            raise ValueError("give revocations or fleet, not both: the fleet brings its own")
        self.fleet = fleet
        if fleet is not None:
            revocations = fleet.revocations
        self.cache = TokenCache(cache, clock=clock, revocations=revocations)
        self.core.keys.on_retired = self.cache.evict_keys
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
        # With one source there is nothing to keep apart: the key is the bare digest,
        # as the hit path (peek) computes it.
        several = len(self.sources) > 1
        self._source_names = tuple(
            (
                s,
                s.header_name.encode("latin-1"),
                s.name.encode("latin-1") + b"\0" if several else b"",
            )
            for s in self.sources
        )
        # The fast path serves the usual shape: tokens arrive in one place.
        self._single = self._source_names[0][1] if len(self._source_names) == 1 else None
        self._allowed = self.cache.allowed
        self._revocations = self.cache.revocations
        self._late: dict[int, bool] = {}
        self._sync_flights: dict[bytes, _Flight] = {}
        self._async_flights: dict[bytes, asyncio.Future[Decision | None]] = {}
        self._flight_lock = threading.Lock()
        self._stopped = False
        #: Set while this thread acts on a fleet broadcast (not to announce it back).
        self._told_by_fleet = threading.local()
        if fleet is not None:
            self._join(fleet)

    def _join(self, fleet: Fleet) -> None:
        """Act on the fleet's broadcasts, tell it what this process notices first (new or
        retired keys, a changed policy file), report to it; start following it."""
        told = self._told_by_fleet

        def reload(_: Mapping[str, str]) -> None:
            told.active = True
            try:
                self.policy.reload()
            finally:
                told.active = False

        def policy_changed(result: ReloadResult) -> None:
            if result.changed and not getattr(told, "active", False):
                fleet.announce("policy")

        def keys_changed(issuer: str) -> None:
            if not getattr(told, "active", False):  # what the fleet said is not news
                fleet.announce("keys", issuer=issuer)

        fleet.on("policy", reload)
        fleet.on("drop", lambda f: self.cache.drop_subject(f["issuer"], f["subject"]))
        fleet.on("keys", lambda f: self._refresh_from_fleet(f.get("issuer") or None))
        self.policy.observers.append(policy_changed)
        self.core.keys.on_change = keys_changed
        fleet.report = lambda: {
            "policy_version": self.policy.current.version,
            "key_set_age": self.core.keys.key_set_age(self.core.clock()),
        }
        fleet.start()

    def _refresh_from_fleet(self, issuer: str | None) -> None:
        names = {cfg.name for cfg in self.core.issuers}
        if issuer is None or issuer in names:  # another service's issuer: not ours to refresh
            self._told_by_fleet.active = True
            try:
                self.refresh_keys(issuer)
            finally:
                self._told_by_fleet.active = False

    @classmethod
    def from_config(
        cls, config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None, **kw: Any
    ) -> IAMScope:
        """Build from a config file, a mapping, or ``IAMSCOPE_CONFIG``."""
        loaded = config if isinstance(config, Config) else load_config(config)
        source: Any = loaded.source if loaded.source is not None else dict(loaded.policy)
        try:  # checks of what the file names (environment variables) name the file too
            policy = PolicyStore(source, issuers=loaded.issuers)
            kw.setdefault("telemetry", loaded.telemetry)
            kw.setdefault("cache", loaded.cache)
            if loaded.shared is not None and "fleet" not in kw and "revocations" not in kw:
                kw["fleet"] = Fleet(loaded.shared, clock=kw.get("clock", time.time))
            return cls(loaded.issuers, policy, **kw)
        except ConfigError as exc:
            raise in_file(exc, loaded.source) from None

    # --- public paths ----------------------------------------------------------------

    def is_public(self, path: str) -> bool:
        if path in self.public_paths:
            return True
        if not self.public_prefixes or "//" in path or "/." in path or "\\" in path:
            return False  # no prefix match through empty or dot segments: fail closed
        return path.startswith(self.public_prefixes)

    # --- deciding --------------------------------------------------------------------

    def peek(self, headers: Headers) -> Decision | None:
        """The web shells' fast path: an allowed, valid cache hit, *not yet audited*, or
        None for everything else (which :meth:`decide_now` / :meth:`decide` answer). The
        shell ends an allowed request with :meth:`finish`. One header scan, one digest,
        one dict read; no I/O, no lock."""
        single = self._single
        if single is None:
            return None
        value = None
        for name, found in headers:
            if name == single:
                if value is not None:
                    return None  # repeated: the full path answers 400
                value = found
        if value is None:
            return None
        entry = self._allowed.get(_sha256(value).digest())
        # Anything but a fresh allowed entry (expired, stale generation, revocations
        # moved) goes the full way, which drops or re-checks it.
        if (
            entry is None
            or entry.generation != self.policy.generation
            or entry.revocations != self._revocations.version
            or entry.until <= self.clock()
        ):
            return None
        return _tuple_new(
            Decision,
            (True, ids.next_seq(), "hit", entry.access, entry, None, entry.span_attributes),
        )

    def hit(self, headers: Headers, method: str = "GET", path: str = "/") -> Decision | None:
        """:meth:`peek`, audited at once: for a caller with no later refusal to make."""
        decision = self.peek(headers)
        if decision is not None:
            self.finish(decision, method, path)
        return decision

    def decide(
        self, headers: Headers, method: str = "GET", path: str = "/", *, final: bool = True
    ) -> Decision:
        """The decision for a request's headers, verifying the credential if need be.

        ``final=False`` (the web shells): an allowed decision is not audited yet; the
        caller ends the request with :meth:`finish`, so that a refusal made later
        (:meth:`audit_denial`) is the request's one event. Denials are audited at once.
        """
        found = self._lookup(headers)
        if isinstance(found, Decision):
            return self._audited(found, method, path, final)
        key, token = found
        while True:  # concurrent misses on one credential verify once
            flight, leader = self._sync_flight(key)
            if leader:
                decision = self._lead(key, flight, lambda: self.verifier.verify(token))
                break
            flight.done.wait()
            shared = _shared(flight.decision)
            if shared is not None:
                decision = shared
                break
        return self._audited(decision, method, path, final)

    def _lead(self, key: bytes, flight: _Flight, verify: Callable[[], Principal]) -> Decision:
        try:
            flight.decision = self._cached(key) or self._verify(key, verify)
            return flight.decision
        finally:
            with self._flight_lock:
                if self._sync_flights.get(key) is flight:
                    del self._sync_flights[key]
            flight.done.set()

    def decide_now(
        self, headers: Headers, method: str = "GET", path: str = "/", *, final: bool = True
    ) -> Decision | tuple[bytes, str]:
        """The decision when no I/O is needed (cache hits, missing or malformed
        credentials), else ``(key, token)`` to hand to :meth:`decide_async`. Lets the
        ASGI middleware answer cache hits without creating a coroutine. ``final``: as
        for :meth:`decide`."""
        found = self._lookup(headers)
        if isinstance(found, Decision):
            return self._audited(found, method, path, final)
        return found

    async def decide_async(
        self,
        headers: Headers,
        method: str = "GET",
        path: str = "/",
        *,
        pending: tuple[bytes, str] | None = None,
        final: bool = True,
    ) -> Decision:
        """:meth:`decide` for async callers (``pending``: what :meth:`decide_now` left)."""
        if pending is None:
            found = self._lookup(headers)
            if isinstance(found, Decision):
                return self._audited(found, method, path, final)
            pending = found
        key, token = pending
        loop = asyncio.get_running_loop()
        while True:  # the same waiter rule as decide(): see _shared
            flight = self._async_flights.get(key)
            if flight is None or flight.get_loop() is not loop:
                break
            shared = _shared(await asyncio.shield(flight))
            if shared is not None:
                return self._audited(shared, method, path, final)
        future: asyncio.Future[Decision | None] = loop.create_future()
        self._async_flights[key] = future
        decision: Decision | None = None
        try:
            decision = self._cached(key)
            if decision is None:
                started = time.perf_counter()
                outcome: Principal | IAMScopeError
                try:
                    outcome = await self.async_verifier.verify(token)
                except IAMScopeError as exc:
                    outcome = exc
                decision = self._settle(key, started, outcome)
        finally:
            # Cancelled or crashed: None tells the waiters to decide for themselves.
            future.set_result(decision)
            if self._async_flights.get(key) is future:
                del self._async_flights[key]
        return self._audited(decision, method, path, final)

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
            True, ids.next_seq(), "hit", entry.access, entry, None, entry.span_attributes
        )

    def _verify(self, key: bytes, verify: Callable[[], Principal]) -> Decision:
        started = time.perf_counter()
        outcome: Principal | IAMScopeError
        try:
            outcome = verify()
        except IAMScopeError as exc:
            outcome = exc
        return self._settle(key, started, outcome)

    def _settle(self, key: bytes, started: float, outcome: Principal | IAMScopeError) -> Decision:
        """A verification's outcome made a decision, cached, measured (sync and async)."""
        if isinstance(outcome, IAMScopeError):
            decision = self._rejected(key, outcome)
        else:
            decision = self._accepted(key, outcome)
        self._verified(started, decision)
        self._keep_keys_fresh()
        return decision

    def _keep_keys_fresh(self) -> None:
        # Started lazily by the first verification (a cheap check after that); never
        # on the cache-hit path.
        if not self.verifier.refreshing and not self._stopped:
            self.verifier.start()

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
        entry = self.cache.put_allowed(key, principal, access, generation, attributes, checked)
        thumbprint = principal.key_thumbprint
        if thumbprint is not None and not self.core.keys.holds(principal.issuer, thumbprint):
            # Its key retired while it was verified (after the cache's eviction scan).
            self.cache.discard(key)
        # The entry, the principal every later hit will carry (its claims are gone).
        return Decision(True, ids.next_seq(), "miss", access, entry, None, entry.span_attributes)

    def _verified(self, started: float, decision: Decision) -> None:
        code = decision.error.code if decision.error is not None else None
        self.metrics.verified(time.perf_counter() - started, code)

    def _rejected(self, key: bytes, error: IAMScopeError) -> Decision:
        if isinstance(error, TokenError):
            # An outage (KeysUnavailable) is never cached: it may end any second. A key
            # fault is cached no longer than the issuer's min_refetch: a JWKS lagging its
            # tokens must not be remembered past the next fetch.
            ttl = None
            if isinstance(error, KeyNotFound | SignatureInvalid) and error.issuer is not None:
                ttl = self.core.keys.policy_for(error.issuer).min_refetch
            self.cache.put_rejected(key, error, self.policy.generation, ttl)
        return Decision(False, ids.next_seq(), "miss", error=error)

    def _audited(self, decision: Decision, method: str, path: str, final: bool) -> Decision:
        if decision.allowed:
            if final:
                self.finish(decision, method, path)
            return decision
        code = decision.error.code if decision.error is not None else None
        self.metrics.decision(False, code, decision.cache)
        self.audit.emit(audit_event(decision, method, path, self.hasher, self.clock()))
        return decision

    def finish(self, decision: Decision, method: str, path: str) -> None:
        """The end of a request the engine allowed: its audit event carries the final
        decision (contract 7). Nothing when a refusal after the decision already recorded
        it (:meth:`audit_denial`); an allowed cache hit goes to the summary (the default),
        or is sampled; every other allowed decision (a first one for a token, one with no
        credentials in optional mode) is an event of its own."""
        if not decision.allowed:
            return  # refusals are audited when they are made
        late = self._late
        if late and late.pop(decision.seq, None) is not None:
            return
        if decision.cache == "hit":
            self.metrics.allowed_hits += 1
            summary = self._summary
            if summary is not None:
                summary.add(decision, method, path)
                return
            if not _sampled(self.audit_hits):
                return
        else:
            self.metrics.decision(True, None, decision.cache)
        self.audit.emit(audit_event(decision, method, path, self.hasher, self.clock()))

    def audit_denial(
        self, decision: Decision, error: IAMScopeError, method: str, path: str
    ) -> None:
        """Record a refusal made after the middleware let the request in (a requirement
        checked by a decorator or a dependency), under the request's decision id. It is
        the request's one audit event: :meth:`finish` then records nothing."""
        self._claim(decision)
        refused = decision._replace(allowed=False, error=error)
        self.metrics.decision(False, error.code, refused.cache)
        span = get_current_span()
        if span.is_recording():
            tag(span, refused)
        self.audit.emit(audit_event(refused, method, path, self.hasher, self.clock()))

    def audit_export(self, decision: Decision, path: str, details: str) -> None:
        """One event per export decision of the OTLP gateway, under the request's id. It
        is the request's one audit event (what was forwarded says more than "allow"):
        :meth:`finish` then records nothing."""
        self._claim(decision)
        record = audit_event(decision, "POST", path, self.hasher, self.clock())
        self.audit.emit(record._replace(details=details))

    def _claim(self, decision: Decision) -> None:
        """Mark a request's audit event as recorded, so :meth:`finish` skips it."""
        late = self._late
        if len(late) >= _MAX_LATE:  # claims whose request never finished: the oldest go
            for stale in list(late)[: _MAX_LATE // 2]:
                late.pop(stale, None)
        late[decision.seq] = True

    def _sync_flight(self, key: bytes) -> tuple[_Flight, bool]:
        """The flight for ``key``, and whether the caller leads it."""
        with self._flight_lock:
            flight = self._sync_flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._sync_flights[key] = _Flight()
            return flight, True

    # --- keys over time --------------------------------------------------------------

    def start(self) -> None:
        """Start the background key refresher now (it also starts with the first
        verification): at an ASGI lifespan startup, or after building a WSGI app."""
        self._stopped = False
        self.verifier.start()

    def refresh_keys(self, issuer: str | None = None) -> dict[str, RefreshResult]:
        """Refresh issuers' keys now, whatever the schedule (every issuer, or the one
        named), and say how each went and, when it failed, why. For operators, the
        doctor, and a fleet telling its workers that keys changed."""
        return self.verifier.refresh_keys(issuer)

    def stop(self) -> None:
        """Stop the background key refresher (an ASGI lifespan shutdown does this)."""
        self._stopped = True
        self.verifier.stop()
        self.async_verifier.stop()

    def flush_audit(self) -> None:
        """Report the allowed cache hits summarised so far now, rather than at the end of
        the interval (a demo, a test, before a planned shutdown)."""
        if self._summary is not None:
            self._summary.flush()

    def close(self) -> None:
        self._stopped = True
        if self.fleet is not None:
            self.fleet.close()
        self.verifier.close()
        self.async_verifier.stop()
        if self._summary is not None:
            self._summary.close()
        self.audit.close()


class _Flight:
    """One credential's verification under way in the sync path; waiters block on it."""

    __slots__ = ("decision", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.decision: Decision | None = None


def _shared(decision: Decision | None) -> Decision | None:
    """The one waiter rule, sync and async: a waiter takes the leader's finished decision,
    whatever it is (a 503 included), as its own (its own id, marked a hit); when the leader
    did not finish (cancelled, or crashed), None: the waiter decides for itself."""
    return None if decision is None else _again(decision)


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
