"""Issuer keys over time: building keys, rotation, retirement, refresh decisions. No I/O.

The network shells (:mod:`iamscope.tokens.verifier`) drive :meth:`KeyStore.refresh_flow`,
a generator that yields :class:`FetchRequest` and receives :class:`FetchResponse`, so the
sync (``httpx.Client``) and async (``httpx.AsyncClient``) shells share every rule. Each
issuer follows its own :class:`~iamscope.tokens.key_policy.KeyPolicy`:

- keys are built once (PyJWT's ``PyJWK``) when the JWKS changes, never per request: a
  refresh is a conditional request (``If-None-Match``) and an unchanged body is not rebuilt;
- requests cause at most one fetch per issuer per ``min_refetch``: an unknown ``kid``, or a
  bad signature under a known ``kid`` when the JWKS is older than that (same-``kid``
  rotation). A ``kid`` that a JWKS fetched for it lacks is answered 401 from memory for
  that long; when the library could not look (interval not over, the fetch still running,
  the issuer failing) the answer is 503 with a ``Retry-After``, never "bad token";
- the background refresher fetches each JWKS every ``refresh`` seconds (a shorter
  ``Cache-Control: max-age`` within ``[min_refresh, refresh]``);
- a key gone from the JWKS, or whose material changed under the same ``kid``, keeps
  verifying for ``removed_key_grace`` seconds, then is retired and ``on_retired`` tells
  the decision cache to evict what it verified (keys are told apart by a thumbprint of
  their material, not by ``kid``);
- several keys under one ``kid`` are all tried (at most :data:`MAX_CANDIDATES`);
- a failed fetch keeps the last good key set; a document over ``max_bytes`` or a JWKS
  over ``max_keys`` is a failed fetch (a log line, a metric, 503 for keys it lacks),
  never silently truncated;
- discovery must name exactly the configured issuer (OIDC Discovery §4.3) and may only
  point at http(s) — an https issuer's keys are never fetched over plain http.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from iamscope._fork import after_fork
from iamscope.errors import (
    HeaderInvalid,
    KeyNotFound,
    KeysUnavailable,
    TokenError,
)
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.jose import loads_object
from iamscope.tokens.key_policy import KeyPolicy

__all__ = [
    "MAX_CANDIDATES",
    "FetchRequest",
    "FetchResponse",
    "KeyNeed",
    "KeyPolicy",
    "KeyStore",
    "RefreshResult",
    "VerificationKey",
    "build_jwk",
    "max_age",
]

log = logging.getLogger("iamscope.keys")

MIN_RSA_BITS = 2048
#: Keys tried for one ``kid`` (some issuers publish duplicates during a rollover).
MAX_CANDIDATES = 4
_MAX_MISSING = 1024  # kids remembered as missing, per issuer
_LOG_EVERY = 60.0  # the same refresh failure is logged at most this often
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_EC_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_SAFE_KID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")

Cause = Literal["demand", "periodic", "operator"]
Outcome = Literal["ok", "not_modified", "failed", "over_limit", "skipped", "abandoned"]


@dataclass(frozen=True, slots=True)
class FetchRequest:
    issuer: str  # the configured issuer's name
    url: str
    purpose: Literal["discovery", "jwks", "pem"]
    etag: str | None = None  # sent as If-None-Match: an unchanged JWKS costs a 304


@dataclass(frozen=True, slots=True)
class FetchResponse:
    status: int = 0
    body: bytes = b""
    error: str | None = None  # transport fault, already stripped of anything secret
    over_limit: bool = False  # the error is a size cap, not an outage of the issuer
    etag: str | None = None
    cache_control: str | None = None


class KeyNeed(NamedTuple):
    """What the verification flow yields when it needs keys: the shell refreshes (or joins
    the refresh under way) and resumes it. ``ticket``: refreshes finished when asked."""

    issuer: str
    kid: str | None
    ticket: int


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """One refresh: what happened and why, with every exchange (for ``iamscope doctor``)."""

    issuer: str
    outcome: Outcome
    reason: str | None = None
    keys: int = 0  # keys held afterwards
    fetches: tuple[tuple[FetchRequest, FetchResponse], ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "not_modified", "skipped")


def max_age(cache_control: str | None) -> float | None:
    """Seconds from a ``Cache-Control`` value; ``no-cache``/``no-store`` read as 0."""
    if not cache_control:
        return None
    found: float | None = None
    for part in cache_control.lower().split(","):
        name, _, value = part.strip().partition("=")
        if name in ("no-cache", "no-store"):
            return 0.0
        if name == "max-age":
            try:
                found = max(float(int(value.strip().strip('"'))), 0.0)
            except ValueError:
                return None  # malformed: the configured interval applies
    return found


class KeyBuildError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    key: Any  # a cryptography public key object, built once
    algorithms: frozenset[str]
    #: Identifies the key material (and its algorithms), whatever its ``kid``: a key
    #: replaced under the same ``kid`` has a new thumbprint, so its old one retires.
    thumbprint: str = ""


def build_jwk(jwk: Mapping[str, Any]) -> VerificationKey:
    """A verification key from one JWK, or :class:`KeyBuildError` saying why not."""
    for member in ("use", "kty", "alg", "kid", "crv"):
        if member in jwk and not isinstance(jwk[member], str):
            raise KeyBuildError(f"JWK member {member!r} is not a string")
    ops = jwk.get("key_ops")
    if ops is not None and (
        not isinstance(ops, list) or not all(isinstance(op, str) for op in ops)
    ):
        raise KeyBuildError("JWK member 'key_ops' is not a list of strings")
    if jwk.get("use", "sig") != "sig":
        raise KeyBuildError("key is not for signatures")
    if ops is not None and "verify" not in ops:
        raise KeyBuildError("key_ops excludes verify")
    if jwk.get("kty") == "oct" or "d" in jwk:
        raise KeyBuildError("symmetric or private key material in a JWKS")
    try:
        built = jwt.PyJWK(dict(jwk))
    except Exception as exc:  # any fault in one entry only skips that entry
        raise KeyBuildError(f"unusable key: {type(exc).__name__}") from exc
    algorithms = _algorithms_for(built.key)
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in algorithms:
            raise KeyBuildError(f"declared alg {declared!r} does not fit the key type")
        algorithms = frozenset({declared})
    return _key(jwk.get("kid"), built.key, algorithms)


def build_pem(kid: str, pem: bytes) -> VerificationKey:
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyBuildError("PEM is not a public key") from exc
    return _key(kid, key, _algorithms_for(key))


def _key(kid: str | None, key: Any, algorithms: frozenset[str]) -> VerificationKey:
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    thumb = hashlib.sha256(der + ",".join(sorted(algorithms)).encode()).hexdigest()[:32]
    return VerificationKey(kid, key, algorithms, thumb)


def _algorithms_for(key: Any) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyBuildError(f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
        return _RSA_ALGS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_CURVES.get(key.curve.name)
        if alg is None:
            raise KeyBuildError(f"unsupported curve {key.curve.name}")
        return frozenset({alg})
    if isinstance(key, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA"})
    raise KeyBuildError(f"unsupported key type {type(key).__name__}")


@dataclass(frozen=True, slots=True)
class _KeySet:
    """One issuer's keys, swapped in as one object: a lookup reads one consistent
    snapshot, never a new key list with an old removal list."""

    #: The last key set the issuer published: kid → candidate keys.
    published: Mapping[str | None, tuple[VerificationKey, ...]] = field(default_factory=dict)
    #: Keys gone from it, still inside their grace: thumbprint → (key, when it left).
    leaving: Mapping[str, tuple[VerificationKey, float]] = field(default_factory=dict)
    #: ``published`` and ``leaving`` together, for lookups.
    keys: Mapping[str | None, tuple[VerificationKey, ...]] = field(default_factory=dict)
    prints: frozenset[str] = frozenset()


def _keyset(
    published: Mapping[str | None, tuple[VerificationKey, ...]],
    leaving: Mapping[str, tuple[VerificationKey, float]],
) -> _KeySet:
    keys = dict(published)
    for key, _ in leaving.values():
        keys[key.kid] = (*keys.get(key.kid, ()), key)
    prints = {k.thumbprint for candidates in keys.values() for k in candidates}
    return _KeySet(published, leaving, keys, frozenset(prints))


def _merge(
    current: _KeySet,
    published: Mapping[str | None, tuple[VerificationKey, ...]] | None,
    now: float,
    grace: float,
) -> tuple[_KeySet, frozenset[str]]:
    """The key set after a fetch (``published``; None: unchanged) at ``now``, and the
    thumbprints retired by it: gone from the JWKS for ``grace`` seconds or more."""
    fresh = current.published if published is None else published
    kept = {k.thumbprint for candidates in fresh.values() for k in candidates}
    leaving = {tp: v for tp, v in current.leaving.items() if tp not in kept}
    for candidates in current.published.values():
        for key in candidates:
            if key.thumbprint not in kept:
                leaving.setdefault(key.thumbprint, (key, now))
    retired = frozenset(tp for tp, (_, left) in leaving.items() if now >= left + grace)
    if not retired and published is None and leaving == current.leaving:
        return current, retired
    return _keyset(fresh, {tp: v for tp, v in leaving.items() if tp not in retired}), retired


@dataclass(slots=True)
class _IssuerKeys:
    """Mutable state of one issuer's keys; written only under the store's lock."""

    keyset: _KeySet = field(default_factory=_KeySet)
    missing: OrderedDict[str | None, float] = field(default_factory=OrderedDict)
    jwks_uri: str | None = None
    etag: str | None = None  # of the JWKS held, for If-None-Match
    digest: bytes | None = None  # of the JWKS body held: an unchanged body is not rebuilt
    max_age: float | None = None
    last_demand: float | None = None  # when a request last caused a fetch
    last_success: float | None = None
    next_refresh: float = 0.0  # when the background refresher fetches next (0: at start)
    inflight: set[str | None] = field(default_factory=set)  # request-caused refreshes
    failing: bool = False
    logged: tuple[str, float] | None = None  # the last failure logged, and when
    refreshing: int = 0  # refreshes under way
    generation: int = 0  # refreshes finished (success, failure or abandoned)
    success_generation: int = -1  # the generation number of the last success
    changes: int = 0  # JWKS bodies that differed from the one held (the first load not counted)


class KeyStore:
    """Every configured issuer's keys, safe to share across threads and event loops.

    A refresh is asked for with a *ticket* (:class:`KeyNeed`): the number of refreshes
    finished when the need was seen. Shells skip the fetch when another refresh finished
    after the ticket, and :meth:`missing_error` uses it to tell "fetched, the kid is not
    there" (401, and the kid is remembered) from "no fetch succeeded since we asked" (503).
    """

    def __init__(self, issuers: Iterable[IssuerConfig], policy: KeyPolicy | None = None) -> None:
        #: The default for issuers without a ``keys:`` block of their own.
        self.policy = policy or KeyPolicy()
        self._issuers = {cfg.name: cfg for cfg in issuers}
        self._policies = {name: cfg.keys or self.policy for name, cfg in self._issuers.items()}
        self._state = {
            name: _IssuerKeys(jwks_uri=cfg.jwks_uri) for name, cfg in self._issuers.items()
        }
        self._lock = threading.Lock()
        #: Told of each finished refresh: (issuer name, outcome). Metrics hook.
        self.on_refresh: Callable[[str, str], None] | None = None
        #: Told when keys retire: (issuer name, thumbprints). The decision cache's hook.
        self.on_retired: Callable[[str, frozenset[str]], None] | None = None
        #: Told when an issuer's published keys changed (added, removed or replaced) or
        #: a key was retired: a fleet tells its other processes to refresh now.
        self.on_change: Callable[[str], None] | None = None
        after_fork(self, KeyStore._forked)

    def policy_for(self, name: str) -> KeyPolicy:
        return self._policies[name]

    # --- lookups (the miss path) -----------------------------------------------------

    def lookup(
        self, cfg: IssuerConfig, kid: str | None, alg: str, now: float
    ) -> tuple[VerificationKey, ...]:
        """The live keys a token may be checked with: the candidates under its ``kid``;
        with no ``kid``, the issuer's one key for ``alg`` (several: the token is refused)."""
        snapshot = self._state[cfg.name].keyset
        if kid is None:
            grace = self._policies[cfg.name].removed_key_grace
            live = tuple(
                k
                for candidates in snapshot.keys.values()
                for k in candidates
                if alg in k.algorithms and _live(snapshot, k, now, grace)
            )
            if len(live) > 1:
                raise HeaderInvalid(
                    "token has no 'kid' and the issuer has several keys for its algorithm",
                    issuer=cfg.name,
                )
            return live
        candidates = snapshot.keys.get(kid, ())
        if not snapshot.leaving:
            return candidates
        grace = self._policies[cfg.name].removed_key_grace
        return tuple(k for k in candidates if _live(snapshot, k, now, grace))

    def holds(self, name: str, thumbprint: str) -> bool:
        """Whether a key is still held (published, or leaving inside its grace)."""
        state = self._state.get(name)
        return state is not None and thumbprint in state.keyset.prints

    def generation(self, name: str) -> int:
        with self._lock:
            return self._state[name].generation

    def key_set_age(self, now: float) -> float | None:
        """Seconds since the stalest issuer's keys were last fetched successfully; None
        while some issuer has none yet (``iamscope fleet status`` shows it)."""
        with self._lock:
            fetched = [state.last_success for state in self._state.values()]
        if not fetched or any(when is None for when in fetched):
            return None
        return now - min(when for when in fetched if when is not None)

    def demand(self, cfg: IssuerConfig, kid: str | None, now: float) -> KeyNeed | None:
        """A need to hand to the shell when no key fits and a fetch may run (or one caused
        by a request is under way), else None: the library cannot look right now."""
        if cfg.keys_url is not None and not _safe_kid(kid):
            return None  # never put such a kid in a URL; it simply names no key
        policy = self._policies[cfg.name]
        state = self._state[cfg.name]
        with self._lock:
            seen = state.missing.get(kid)
            if seen is not None and now - seen < policy.min_refetch:
                return None  # a fetch made for this kid lacked it just now
            return self._claim(cfg, state, policy, kid, now)

    def demand_after_bad_signature(
        self, cfg: IssuerConfig, kid: str | None, now: float
    ) -> KeyNeed | None:
        """A need when the key under a known ``kid`` does not verify and the keys are older
        than ``min_refetch``: the issuer may have replaced the material under that kid."""
        policy = self._policies[cfg.name]
        state = self._state[cfg.name]
        with self._lock:
            if state.last_success is not None and now - state.last_success < policy.min_refetch:
                return None
            return self._claim(cfg, state, policy, kid, now)

    def _claim(
        self, cfg: IssuerConfig, state: _IssuerKeys, policy: KeyPolicy, kid: str | None, now: float
    ) -> KeyNeed | None:
        # Under the lock. Joining a request-caused refresh under way costs nothing;
        # starting one is allowed once per min_refetch per issuer, whatever the kids.
        if _flight_kid(cfg, kid) in state.inflight:
            return KeyNeed(cfg.name, kid, state.generation)
        if state.last_demand is not None and now - state.last_demand < policy.min_refetch:
            return None
        state.last_demand = now
        # In flight from now on, so that the requests arriving before the fetch starts
        # join it (the refresh flow clears this when it ends).
        state.inflight.add(_flight_kid(cfg, kid))
        return KeyNeed(cfg.name, kid, state.generation)

    def missing_error(
        self, cfg: IssuerConfig, kid: str | None, now: float, need: KeyNeed | None
    ) -> Exception:
        """What to raise when no key fits: 401 only when keys fetched for this token
        lack its ``kid``; 503 with a ``Retry-After`` when the library could not look."""
        if cfg.keys_url is not None and not _safe_kid(kid):
            return KeyNotFound("no key of the issuer matches the token", issuer=cfg.name)
        policy = self._policies[cfg.name]
        state = self._state[cfg.name]
        with self._lock:
            if need is not None:
                looked = state.success_generation > need.ticket and not state.failing
                if looked:
                    state.missing[kid] = now
                    state.missing.move_to_end(kid)
                    while len(state.missing) > _MAX_MISSING:
                        state.missing.popitem(last=False)
            else:
                seen = state.missing.get(kid)
                looked = seen is not None and now - seen < policy.min_refetch
            last = state.last_demand
        if looked:
            return KeyNotFound("no key of the issuer matches the token", issuer=cfg.name)
        # The next fetch a request may cause; a fetch still running is waited for again.
        wait = policy.min_refetch if last is None else last + policy.min_refetch - now
        return KeysUnavailable(
            f"keys for issuer {cfg.name!r} could not be checked for this token right now",
            issuer=cfg.name,
            retry_after=max(wait, 0.0),
        )

    # --- refresh (driven by the I/O shells) ----------------------------------------------

    def refresh_flow(
        self, name: str, kid: str | None, now: float, *, cause: Cause = "demand"
    ) -> Generator[FetchRequest, FetchResponse, RefreshResult]:
        """Fetch discovery (if needed) then keys, apply them, record success or failure."""
        cfg = self._issuers[name]
        state = self._state[name]
        policy = self._policies[name]
        flight = _flight_kid(cfg, kid)
        with self._lock:
            previous_demand = state.last_demand
            changes = state.changes
            state.refreshing += 1
            if cause == "demand":
                state.inflight.add(flight)
        fetches: list[tuple[FetchRequest, FetchResponse]] = []
        outcome: Outcome = "failed"
        reason: str | None = None
        retired: frozenset[str] = frozenset()
        try:
            if cfg.keys_url is None:
                outcome, retired = yield from self._jwks_flow(cfg, state, policy, now, fetches)
            elif kid is not None:
                outcome = yield from self._pem_flow(cfg, state, policy, kid, now, fetches)
            else:
                outcome, reason = "skipped", "keys are fetched per kid (keys_url)"
        except GeneratorExit:
            outcome = "abandoned"
            # Abandoned (its event loop closed): it learnt nothing, so it must not use up
            # the interval either.
            if cause == "demand":
                with self._lock:
                    state.last_demand = previous_demand
            raise
        except _FetchFailed as exc:
            outcome = "over_limit" if exc.over_limit else "failed"
            reason = str(exc)
            self._failed(cfg, state, policy, reason, now)
        finally:
            with self._lock:
                state.refreshing -= 1
                state.generation += 1
                if cause == "demand":
                    state.inflight.discard(flight)
            if outcome != "abandoned":
                self._tell(name, outcome, retired)
                if self.on_change is not None and (retired or state.changes != changes):
                    self.on_change(name)
        return RefreshResult(name, outcome, reason, _count(state.keyset), tuple(fetches))

    def _tell(self, name: str, outcome: str, retired: frozenset[str]) -> None:
        # Outside the lock; a metrics fault must not fail a key refresh.
        if self.on_refresh is not None:
            try:
                self.on_refresh(name, outcome)
            except Exception:
                log.exception("iamscope: the key refresh hook failed")
        if retired:
            self._tell_retired(name, retired)

    def _exchange(
        self, request: FetchRequest, fetches: list[tuple[FetchRequest, FetchResponse]]
    ) -> Generator[FetchRequest, FetchResponse, FetchResponse]:
        response = yield request
        fetches.append((request, response))
        return response

    def _succeeded(self, state: _IssuerKeys, policy: KeyPolicy, now: float) -> None:
        # Under the lock. The generation this refresh will get when its finally runs.
        state.last_success = now
        state.success_generation = state.generation + 1
        state.next_refresh = now + policy.refresh_interval(state.max_age)
        if state.failing:
            log.info("iamscope: key refresh recovered")
        state.failing = False
        state.logged = None

    def _failed(
        self, cfg: IssuerConfig, state: _IssuerKeys, policy: KeyPolicy, reason: str, now: float
    ) -> None:
        with self._lock:
            state.failing = True
            state.next_refresh = now + policy.min_refresh
            if cfg.jwks_uri is None:
                # Rediscover next time: the document may have moved.
                state.jwks_uri = state.etag = None
                state.digest = None
            logged = state.logged
            loud = logged is None or logged[0] != reason or now - logged[1] >= _LOG_EVERY
            if loud:
                state.logged = (reason, now)
        if loud:
            log.warning(
                "iamscope: key refresh for issuer %r failed: %s (the last good keys stay "
                "in use; tokens needing others are answered 503)",
                cfg.name,
                reason,
            )

    def _jwks_flow(
        self,
        cfg: IssuerConfig,
        state: _IssuerKeys,
        policy: KeyPolicy,
        now: float,
        fetches: list[tuple[FetchRequest, FetchResponse]],
    ) -> Generator[FetchRequest, FetchResponse, tuple[Outcome, frozenset[str]]]:
        if state.jwks_uri is None:
            request = FetchRequest(cfg.name, cfg.discovery_url, "discovery")
            doc = _document((yield from self._exchange(request, fetches)))
            state.jwks_uri = _jwks_uri_from_discovery(doc, cfg)
        request = FetchRequest(cfg.name, state.jwks_uri, "jwks", etag=state.etag)
        response = yield from self._exchange(request, fetches)
        outcome: Outcome = "not_modified"
        published = None
        digest = state.digest
        if not (response.error is None and response.status == 304 and request.etag):
            outcome = "ok"
            digest = hashlib.sha256(_body(response)).digest()
            if digest != state.digest:
                published = self._keys_from_jwks(_document(response), cfg, policy)
        with self._lock:
            if published is not None and state.digest is not None:
                state.changes += 1
            state.keyset, retired = _merge(state.keyset, published, now, policy.removed_key_grace)
            if outcome == "ok":
                state.etag, state.digest = response.etag, digest
            state.max_age = max_age(response.cache_control)
            for kid in published or ():
                state.missing.pop(kid, None)
            self._succeeded(state, policy, now)
        return outcome, retired

    def _pem_flow(
        self,
        cfg: IssuerConfig,
        state: _IssuerKeys,
        policy: KeyPolicy,
        kid: str,
        now: float,
        fetches: list[tuple[FetchRequest, FetchResponse]],
    ) -> Generator[FetchRequest, FetchResponse, Outcome]:
        if not _safe_kid(kid):  # demand() already refuses these
            raise _FetchFailed("kid is not safe to put in a key URL")
        url = str(cfg.keys_url).replace("{kid}", quote(kid, safe=""))
        response = yield from self._exchange(FetchRequest(cfg.name, url, "pem"), fetches)
        if response.error is None and response.status in (403, 404):
            # A definite "no such key" (S3-style endpoints answer 403): not an outage.
            with self._lock:
                self._succeeded(state, policy, now)
            return "ok"
        try:
            key = build_pem(kid, _body(response))
        except KeyBuildError as exc:
            raise _FetchFailed(str(exc)) from exc
        with self._lock:
            keys = {k: v for k, v in state.keyset.published.items() if k != kid}
            while len(keys) >= policy.max_keys:
                del keys[next(iter(keys))]  # oldest first: a per-kid cache, refetched on need
            keys[kid] = (key,)
            state.keyset = _keyset(keys, {})
            state.missing.pop(kid, None)
            self._succeeded(state, policy, now)
        return "ok"

    def _keys_from_jwks(
        self, doc: dict[str, Any], cfg: IssuerConfig, policy: KeyPolicy
    ) -> dict[str | None, tuple[VerificationKey, ...]]:
        entries = doc.get("keys")
        if not isinstance(entries, list):
            raise _FetchFailed("JWKS has no 'keys' list")
        if len(entries) > policy.max_keys:
            raise _FetchFailed(
                f"JWKS has {len(entries)} keys, over keys.max_keys ({policy.max_keys})",
                over_limit=True,
            )
        keys: dict[str | None, list[VerificationKey]] = {}
        shared: set[str | None] = set()
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            try:
                key = build_jwk(entry)
            except KeyBuildError as exc:
                log.info("iamscope: issuer %r: skipped a JWKS key: %s", cfg.name, exc)
                continue
            if not key.algorithms & cfg.allowed_algorithms:
                continue
            candidates = keys.setdefault(key.kid, [])
            if any(k.thumbprint == key.thumbprint for k in candidates):
                continue  # the same key twice
            if candidates:
                shared.add(key.kid)
            if len(candidates) < MAX_CANDIDATES:
                candidates.append(key)
        if shared:
            # Logged when the JWKS changes (an unchanged one is not rebuilt): once per JWKS.
            log.warning(
                "iamscope: issuer %r publishes several keys under one kid (%s): each is "
                "tried, at most %d per kid",
                cfg.name,
                ", ".join(sorted(repr(k) for k in shared)),
                MAX_CANDIDATES,
            )
        if not keys:
            raise _FetchFailed("JWKS has no usable signing key")
        return {kid: tuple(candidates) for kid, candidates in keys.items()}

    # --- the background refresher's schedule -----------------------------------------

    def due(self, now: float) -> list[str]:
        """Issuers whose background refresh is due, each claimed for the caller."""
        out = []
        with self._lock:
            for name, state in self._state.items():
                if self._issuers[name].keys_url is not None:
                    continue  # per-kid keys: no set to refresh
                if state.refreshing:
                    continue  # a refresh under way schedules the next one when it ends
                if state.next_refresh <= now:
                    # Claimed by moving the schedule on: a second refresher skips it, and
                    # a claim whose refresh never runs (its loop closed) costs one interval.
                    state.next_refresh = now + self._policies[name].refresh
                    out.append(name)
        return out

    def next_wake(self, now: float) -> float:
        """Seconds until a refresh is due or a leaving key's grace ends (whichever first),
        never longer than the shortest ``min_refresh`` (a refresh under way may fail)."""
        times = [now + min(p.min_refresh for p in self._policies.values())]
        for name, state in self._state.items():
            if self._issuers[name].keys_url is not None:
                continue
            if not state.refreshing:
                times.append(state.next_refresh)
            grace = self._policies[name].removed_key_grace
            times.extend(left + grace for _, left in state.keyset.leaving.values())
        return max(min(times) - now, 0.0)

    def retire_due(self, now: float) -> None:
        """Retire keys whose grace has ended, without waiting for the next fetch."""
        for name, state in self._state.items():
            if not state.keyset.leaving:
                continue
            with self._lock:
                grace = self._policies[name].removed_key_grace
                state.keyset, retired = _merge(state.keyset, None, now, grace)
            if retired:
                self._tell_retired(name, retired)

    def _tell_retired(self, name: str, retired: frozenset[str]) -> None:
        if self.on_retired is not None:
            try:
                self.on_retired(name, retired)
            except Exception:
                log.exception("iamscope: the key retirement hook failed")

    def _forked(self) -> None:
        """In a forked child: the parent's refresh threads are gone, and so is anything
        they held (a lock, a refresh under way)."""
        self._lock = threading.Lock()
        for state in self._state.values():
            state.refreshing = 0
            state.inflight.clear()
            state.generation += 1


def _live(snapshot: _KeySet, key: VerificationKey, now: float, grace: float) -> bool:
    leaving = snapshot.leaving.get(key.thumbprint)
    return leaving is None or now < leaving[1] + grace


def _count(keyset: _KeySet) -> int:
    return sum(len(candidates) for candidates in keyset.keys.values())


def _flight_kid(cfg: IssuerConfig, kid: str | None) -> str | None:
    """What a refresh fetches: the whole JWKS (None), or one kid's PEM key."""
    return kid if cfg.keys_url is not None else None


def _safe_kid(kid: str | None) -> bool:
    return kid is not None and set(kid) <= _SAFE_KID and kid not in (".", "..")


class _FetchFailed(Exception):
    def __init__(self, reason: str, *, over_limit: bool = False) -> None:
        super().__init__(reason)
        self.over_limit = over_limit


def _body(response: FetchResponse) -> bytes:
    if response.error is not None:
        raise _FetchFailed(response.error, over_limit=response.over_limit)
    if response.status != 200:
        raise _FetchFailed(f"HTTP {response.status}")
    return response.body


def _document(response: FetchResponse) -> dict[str, Any]:
    try:
        return loads_object(_body(response), "key document")
    except TokenError as exc:
        raise _FetchFailed(exc.message) from exc


def _jwks_uri_from_discovery(doc: dict[str, Any], cfg: IssuerConfig) -> str:
    if doc.get("issuer") != cfg.issuer:
        raise _FetchFailed("discovery document names another issuer")
    uri = doc.get("jwks_uri")
    if not isinstance(uri, str):
        raise _FetchFailed("discovery document has no jwks_uri")
    try:
        httpx.URL(uri)
        scheme = urlsplit(uri).scheme
    except (httpx.InvalidURL, ValueError) as exc:
        raise _FetchFailed("jwks_uri is not a valid URL") from exc
    if scheme not in ("https", "http") or (scheme == "http" and cfg.issuer.startswith("https:")):
        raise _FetchFailed("jwks_uri is not an acceptable URL")
    return uri
