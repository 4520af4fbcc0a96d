"""Issuer key sets: building keys from JWKS, rollover, refresh decisions. No I/O here.

The network shells (:mod:`iamscope.tokens.verifier`) drive :meth:`KeyStore.refresh_flow`,
a generator that yields :class:`FetchRequest` and receives :class:`FetchResponse`, so the
sync (``httpx.Client``) and async (``httpx.AsyncClient``) shells share every rule:

- keys are built once (PyJWT's ``PyJWK``), never parsed per request;
- an unknown ``kid`` triggers at most one refetch per ``cooldown``, and a kid found
  missing is remembered for ``missing_ttl`` (bounded), so a flood costs one fetch;
- a failed fetch keeps the last good key set; an issuer with no usable keys answers
  ``keys_unavailable`` (503), never "bad token";
- new keys merge in; keys gone from the JWKS stay valid for ``grace`` seconds;
- discovery must name exactly the configured issuer (OIDC Discovery §4.3) and may only
  point at http(s) — an https issuer's keys are never fetched over plain http.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from iamscope.errors import (
    HeaderInvalid,
    KeyNotFound,
    KeysUnavailable,
    TokenError,
)
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.jose import loads_object

__all__ = [
    "FetchRequest",
    "FetchResponse",
    "KeyPolicy",
    "KeyStore",
    "VerificationKey",
    "build_jwk",
]

log = logging.getLogger("iamscope.keys")

MIN_RSA_BITS = 2048
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_EC_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_SAFE_KID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """How keys are fetched and retired. All durations in seconds."""

    cooldown: float = 30.0  # least time between refetches caused by an unknown kid
    retry_after_failure: float = 5.0  # least time between attempts while keys are missing
    missing_ttl: float = 300.0  # how long a kid found missing is answered from memory
    max_missing: int = 1024
    grace: float = 300.0  # how long a key removed from the JWKS keeps verifying
    max_keys: int = 64
    max_response_bytes: int = 512 * 1024
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    key: Any  # a cryptography public key object, built once
    algorithms: frozenset[str]


@dataclass(frozen=True, slots=True)
class FetchRequest:
    issuer: str  # the configured issuer's name
    url: str
    purpose: Literal["discovery", "jwks", "pem"]


@dataclass(frozen=True, slots=True)
class FetchResponse:
    status: int = 0
    body: bytes = b""
    error: str | None = None  # transport fault, already stripped of anything secret


class KeyBuildError(ValueError):
    pass


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
    return VerificationKey(jwk.get("kid"), built.key, algorithms)


def build_pem(kid: str, pem: bytes) -> VerificationKey:
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyBuildError("PEM is not a public key") from exc
    return VerificationKey(kid, key, _algorithms_for(key))


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
    """Keys and the time each left the JWKS, swapped in as one object: a lookup reads one
    consistent snapshot, never a new key list with an old removal list."""

    keys: Mapping[str | None, VerificationKey] = field(default_factory=dict)
    removed: Mapping[str | None, float] = field(default_factory=dict)


@dataclass(slots=True)
class _IssuerKeys:
    """Mutable state of one issuer's keys; written only under the store's lock."""

    keyset: _KeySet = field(default_factory=_KeySet)
    missing: OrderedDict[str, float] = field(default_factory=OrderedDict)
    jwks_uri: str | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    failing: bool = False
    refreshing: int = 0  # refreshes under way; callers that see one join it
    generation: int = 0  # refreshes finished (success, failure or abandoned)
    success_generation: int = -1  # the generation number of the last success


class KeyStore:
    """Every configured issuer's keys, safe to share across threads and event loops.

    A refresh is asked for with a *ticket*: the number of refreshes finished when the
    need was seen. Shells skip the fetch when another refresh finished after the ticket,
    and :meth:`missing_error` uses it to tell "fetched, the kid is not there" (401, and
    the kid is remembered) from "no fetch succeeded since we asked" (503).
    """

    def __init__(self, issuers: Iterable[IssuerConfig], policy: KeyPolicy | None = None) -> None:
        self.policy = policy or KeyPolicy()
        self._issuers = {cfg.name: cfg for cfg in issuers}
        self._state = {
            name: _IssuerKeys(jwks_uri=cfg.jwks_uri) for name, cfg in self._issuers.items()
        }
        self._lock = threading.Lock()
        #: Told of each finished refresh: (issuer name, succeeded). Metrics hook.
        self.on_refresh: Callable[[str, bool], None] | None = None

    # --- lookups (hot path) --------------------------------------------------------------

    def lookup(
        self, cfg: IssuerConfig, kid: str | None, alg: str, now: float
    ) -> VerificationKey | None:
        snapshot = self._state[cfg.name].keyset
        if kid is None:
            live = [
                k
                for k in snapshot.keys.values()
                if alg in k.algorithms and self._live(snapshot, k.kid, now)
            ]
            if len(live) > 1:
                raise HeaderInvalid(
                    "token has no 'kid' and the issuer has several keys", issuer=cfg.name
                )
            return live[0] if live else None
        key = snapshot.keys.get(kid)
        if key is None or not self._live(snapshot, kid, now):
            return None
        return key

    def _live(self, snapshot: _KeySet, kid: str | None, now: float) -> bool:
        left = snapshot.removed.get(kid)
        return left is None or now < left + self.policy.grace

    def refresh_ticket(self, cfg: IssuerConfig, kid: str | None, now: float) -> int | None:
        """A ticket when an unknown kid may cause a fetch now, else None (cooldown,
        missing memory, or a kid that cannot name a per-kid key)."""
        state = self._state[cfg.name]
        if cfg.keys_url is not None and not _safe_kid(kid):
            return None  # never put such a kid in a URL; it simply names no key
        with self._lock:
            ticket = state.generation
            if state.last_attempt is None or state.refreshing:
                return ticket
            since = now - state.last_attempt
            if state.failing or (state.last_success is None and cfg.keys_url is None):
                return ticket if since >= self.policy.retry_after_failure else None
            seen_missing = state.missing.get(kid) if kid is not None else None
            if seen_missing is not None and now - seen_missing < self.policy.missing_ttl:
                return None
            return ticket if since >= self.policy.cooldown else None

    def generation(self, name: str) -> int:
        with self._lock:
            return self._state[name].generation

    def missing_error(
        self, cfg: IssuerConfig, kid: str | None, now: float, *, ticket: int | None
    ) -> Exception:
        """What to raise when no key fits: an outage (503) or an unknown key (401)."""
        state = self._state[cfg.name]
        unavailable = KeysUnavailable(
            f"keys for issuer {cfg.name!r} cannot be fetched right now", issuer=cfg.name
        )
        with self._lock:
            if ticket is not None:
                if state.success_generation <= ticket or state.failing:
                    return unavailable  # asked for keys, none arrived since
                if kid is not None:
                    state.missing[kid] = now
                    state.missing.move_to_end(kid)
                    while len(state.missing) > self.policy.max_missing:
                        state.missing.popitem(last=False)
            elif state.failing or (state.last_success is None and cfg.keys_url is None):
                return unavailable
        return KeyNotFound("no key of the issuer matches the token", issuer=cfg.name)

    # --- refresh (driven by the I/O shells) ----------------------------------------------

    def refresh_flow(
        self, name: str, kid: str | None, now: float
    ) -> Generator[FetchRequest, FetchResponse, None]:
        """Fetch discovery (if needed) then keys, apply them, record success or failure."""
        cfg = self._issuers[name]
        state = self._state[name]
        with self._lock:
            previous_attempt, state.last_attempt = state.last_attempt, now
            state.refreshing += 1
        succeeded: bool | None = False
        try:
            if cfg.keys_url is not None:
                yield from self._pem_flow(cfg, state, kid, now)
            else:
                yield from self._jwks_flow(cfg, state, now)
            succeeded = True
        except GeneratorExit:
            succeeded = None  # abandoned: neither a success nor a failure
            # Abandoned (the request was cancelled): it learnt nothing, so it must not
            # use up the cooldown either.
            with self._lock:
                state.last_attempt = previous_attempt
            raise
        except _FetchFailed as exc:
            log.warning("iamscope: key refresh for issuer %r failed: %s", name, exc)
            with self._lock:
                state.failing = True
                if cfg.jwks_uri is None:
                    state.jwks_uri = None  # rediscover next time: the document may have moved
        finally:
            with self._lock:
                state.refreshing -= 1
                state.generation += 1
            if succeeded is not None and self.on_refresh is not None:
                try:
                    self.on_refresh(name, succeeded)
                except Exception:  # a metrics fault must not fail a key refresh
                    log.exception("iamscope: the key refresh hook failed")

    def _succeeded(self, state: _IssuerKeys, now: float) -> None:
        # Under the lock. The generation this refresh will get when its finally runs.
        state.last_success = now
        state.failing = False
        state.success_generation = state.generation + 1

    def _jwks_flow(
        self, cfg: IssuerConfig, state: _IssuerKeys, now: float
    ) -> Generator[FetchRequest, FetchResponse, None]:
        if state.jwks_uri is None:
            doc = _document((yield FetchRequest(cfg.name, cfg.discovery_url, "discovery")))
            state.jwks_uri = _jwks_uri_from_discovery(doc, cfg)
        doc = _document((yield FetchRequest(cfg.name, state.jwks_uri, "jwks")))
        keys = self._keys_from_jwks(doc, cfg)
        with self._lock:
            state.keyset = self._merge(state.keyset, keys, now)
            for kid in keys:
                if kid is not None:
                    state.missing.pop(kid, None)
            self._succeeded(state, now)

    def _pem_flow(
        self, cfg: IssuerConfig, state: _IssuerKeys, kid: str | None, now: float
    ) -> Generator[FetchRequest, FetchResponse, None]:
        if kid is None or not _safe_kid(kid):  # refresh_ticket already refuses these
            raise _FetchFailed("kid is not safe to put in a key URL")
        url = str(cfg.keys_url).replace("{kid}", quote(kid, safe=""))
        response = yield FetchRequest(cfg.name, url, "pem")
        if response.error is None and response.status in (403, 404):
            # A definite "no such key" (S3-style endpoints answer 403): not an outage.
            with self._lock:
                self._succeeded(state, now)
            return
        try:
            key = build_pem(kid, _body(response))
        except KeyBuildError as exc:
            raise _FetchFailed(str(exc)) from exc
        with self._lock:
            keys = {k: v for k, v in state.keyset.keys.items() if k != kid}
            while len(keys) >= self.policy.max_keys:
                del keys[next(iter(keys))]  # oldest first: dicts keep insertion order
            keys[kid] = key
            state.keyset = _KeySet(keys, {})
            self._succeeded(state, now)

    def _keys_from_jwks(
        self, doc: dict[str, Any], cfg: IssuerConfig
    ) -> dict[str | None, VerificationKey]:
        entries = doc.get("keys")
        if not isinstance(entries, list):
            raise _FetchFailed("JWKS has no 'keys' list")
        keys: dict[str | None, VerificationKey] = {}
        for entry in entries[: self.policy.max_keys]:
            if not isinstance(entry, dict):
                continue
            try:
                key = build_jwk(entry)
            except KeyBuildError as exc:
                log.info("iamscope: issuer %r: skipped a JWKS key: %s", cfg.name, exc)
                continue
            if key.algorithms & cfg.allowed_algorithms:
                keys[key.kid] = key
        if not keys:
            raise _FetchFailed("JWKS has no usable signing key")
        return keys

    def _merge(
        self, current: _KeySet, keys: dict[str | None, VerificationKey], now: float
    ) -> _KeySet:
        removed = {kid: t for kid, t in current.removed.items() if kid not in keys}
        for kid in current.keys.keys() - keys.keys():
            removed.setdefault(kid, now)
        expired = {kid for kid, t in removed.items() if now >= t + self.policy.grace}
        merged = {kid: k for kid, k in current.keys.items() if kid not in expired}
        merged.update(keys)
        return _KeySet(merged, {kid: t for kid, t in removed.items() if kid not in expired})


def _safe_kid(kid: str | None) -> bool:
    return kid is not None and set(kid) <= _SAFE_KID and kid not in (".", "..")


class _FetchFailed(Exception):
    pass


def _body(response: FetchResponse) -> bytes:
    if response.error is not None:
        raise _FetchFailed(response.error)
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
