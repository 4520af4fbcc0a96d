"""The verification core: raw token → :class:`Principal`. Pure, synchronous, no I/O.

Order matters and runs one way: parse once → select the issuer by exact ``iss`` →
check the header against *that* issuer's rules → find the key in *that* issuer's key
set → check the signature → check time, audience and provider claims → map claims.
When keys must be fetched (an unknown kid, or a bad signature under a known kid whose
keys are older than the issuer's ``min_refetch``) the flow yields a ``KeyNeed``; the I/O
shell refreshes that issuer's keys (single-flight) and resumes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from iamscope.errors import (
    AlgorithmNotAllowed,
    AudienceInvalid,
    ClaimInvalid,
    ClaimMappingError,
    ClaimMissing,
    ClaimTypeInvalid,
    ConfigError,
    IssuerUntrusted,
    SignatureInvalid,
    TokenExpired,
    TokenIssuedInFuture,
    TokenLifetimeExceeded,
    TokenMalformed,
    TokenNotYetValid,
    TokenTooLarge,
    TokenTypeInvalid,
)
from iamscope.tokens import claims as claim_paths
from iamscope.tokens.issuer import IssuerConfig, media_type
from iamscope.tokens.jose import DEFAULT_MAX_TOKEN_BYTES, ParsedToken, parse
from iamscope.tokens.keys import KeyNeed, KeyPolicy, KeyStore, VerificationKey
from iamscope.tokens.principal import Principal, PrincipalKind
from iamscope.tokens.providers import check_audience
from iamscope.tokens.signatures import SIGNATURE_CHECKS

__all__ = ["Clock", "Verifier", "principal_from_claims"]

Clock = Callable[[], float]


class Verifier:
    """Sans-I/O verifier over a set of trusted issuers. Thread-safe; share one per app."""

    def __init__(
        self,
        issuers: Iterable[IssuerConfig],
        *,
        clock: Clock = time.time,
        key_policy: KeyPolicy | None = None,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    ) -> None:
        self.issuers: tuple[IssuerConfig, ...] = tuple(issuers)
        if not self.issuers:
            raise ConfigError("at least one issuer must be configured")
        self._by_url = {cfg.issuer: cfg for cfg in self.issuers}
        self._by_name = {cfg.name: cfg for cfg in self.issuers}
        if len(self._by_url) != len(self.issuers) or len(self._by_name) != len(self.issuers):
            raise ConfigError("issuer names and URLs must be unique")
        self.clock = clock
        self.keys = KeyStore(self.issuers, key_policy)
        self.max_token_bytes = max(max_token_bytes, *(c.max_token_bytes for c in self.issuers))

    def verify_flow(self, token: str) -> Generator[KeyNeed, None, Principal]:
        """Verify ``token``. When keys must be fetched it yields a :class:`KeyNeed`; the
        shell refreshes (or joins a refresh, waiting at most ``request_wait``) and resumes
        it. At most one refresh per verification."""
        parsed, cfg, alg, kid = self._prepare(token)
        now = self.clock()
        keys = self.keys.lookup(cfg, kid, alg, now)
        if not keys:
            need = self.keys.demand(cfg, kid, now)
            if need is not None:
                yield need
                now = self.clock()
                keys = self.keys.lookup(cfg, kid, alg, now)
            if not keys:
                raise self.keys.missing_error(cfg, kid, now, need)
            return _finish(parsed, cfg, alg, keys, now)
        key = _verified_key(parsed, cfg, alg, keys)
        if key is None:
            # A known kid that does not verify: the issuer may have replaced the key under
            # it (same-kid rotation). One refetch, bounded like an unknown kid's.
            need = self.keys.demand_after_bad_signature(cfg, kid, now)
            if need is not None:
                yield need
                now = self.clock()
                fresh = self.keys.lookup(cfg, kid, alg, now)
                if fresh and fresh != keys:
                    return _finish(parsed, cfg, alg, fresh, now)
            raise SignatureInvalid("signature does not verify", issuer=cfg.name)
        return _principal(parsed, cfg, now, key)

    def verify_offline(self, token: str) -> Principal:
        """Verify with the keys already held: never waits, never fetches."""
        parsed, cfg, alg, kid = self._prepare(token)
        now = self.clock()
        keys = self.keys.lookup(cfg, kid, alg, now)
        if not keys:
            raise self.keys.missing_error(cfg, kid, now, None)
        key = _verified_key(parsed, cfg, alg, keys)  # _finish, inlined: a call per token
        if key is None:
            raise SignatureInvalid("signature does not verify", issuer=cfg.name)
        return _principal(parsed, cfg, now, key)

    def _prepare(self, token: str) -> tuple[ParsedToken, IssuerConfig, str, str | None]:
        """Parse, select the issuer by exact ``iss``, check the header against its rules.
        (One method: each call saved is ~1 % of a cold verification.)"""
        parsed = parse(token, max_bytes=self.max_token_bytes)
        iss = parsed.payload.get("iss")
        if not isinstance(iss, str):
            raise IssuerUntrusted("token has no issuer")
        cfg = self._by_url.get(iss)
        if cfg is None:
            # The claimed issuer is attacker-controlled text: it stays out of the message.
            raise IssuerUntrusted("token issuer is not trusted")
        if len(token) > cfg.max_token_bytes:
            raise TokenTooLarge(f"token exceeds {cfg.max_token_bytes} bytes", issuer=cfg.name)
        if parsed.padded and not cfg.preset.allow_padding:
            raise TokenMalformed("base64url padding is not accepted", issuer=cfg.name)
        header = parsed.header
        alg: str = header["alg"]
        if alg not in cfg.allowed_algorithms:
            # The alg is unsigned attacker text at this point: it stays out of the message.
            raise AlgorithmNotAllowed("the token's algorithm is not allowed", issuer=cfg.name)
        typ = header.get("typ")  # a string or absent: jose.parse checked
        if cfg.token_types:
            if typ is None or media_type(typ) not in cfg.token_types:
                raise TokenTypeInvalid("token type is not accepted here", issuer=cfg.name)
        elif typ is not None and typ != "JWT" and _other_purpose(media_type(typ)):
            raise TokenTypeInvalid("token type is for another purpose", issuer=cfg.name)
        return parsed, cfg, alg, header.get("kid")


#: ``typ`` values (RFC 7515 §4.1.9, without "application/") registered for JWTs that are
#: not access or ID tokens. Signed by the same keys as access tokens, they must never pass
#: as one (RFC 8725 §3.11), ``token_types`` set or not. An issuer that means to accept one
#: names it in ``token_types``.
OTHER_PURPOSE_TYPES = frozenset(
    {
        "logout+jwt",  # OpenID Connect Back-Channel Logout 1.0
        "secevent+jwt",  # RFC 8417 Security Event Token
        "token-introspection+jwt",  # RFC 9701 introspection response
        "oauth-authz-req+jwt",  # RFC 9101 request object
        "dpop+jwt",  # RFC 9449 DPoP proof
        "kb+jwt",  # RFC 9901 SD-JWT key binding
        "vc+jwt",  # W3C VC-JOSE-COSE verifiable credential
        "vp+jwt",  # W3C VC-JOSE-COSE verifiable presentation
        "entity-statement+jwt",  # OpenID Federation 1.0
        "trust-mark+jwt",  # OpenID Federation 1.0
        "trust-mark-delegation+jwt",  # OpenID Federation 1.0
        "resolve-response+jwt",  # OpenID Federation 1.0
        "jwk-set+jwt",  # OpenID Federation 1.0 signed JWK set
        "status-list+jwt",  # OAuth Token Status List
        "oauth-client-attestation+jwt",  # OAuth attestation-based client authentication
        "oauth-client-attestation-pop+jwt",
    }
)


_EVENT_TYPES = frozenset({"logout+jwt", "secevent+jwt"})


def _other_purpose(typ: str) -> bool:
    # An SD-JWT ("+sd-jwt", RFC 9901) is a credential presentation, never a bearer token.
    return typ in OTHER_PURPOSE_TYPES or typ.endswith("+sd-jwt")


def _finish(
    parsed: ParsedToken,
    cfg: IssuerConfig,
    alg: str,
    keys: tuple[VerificationKey, ...],
    now: float,
) -> Principal:
    key = _verified_key(parsed, cfg, alg, keys)
    if key is None:
        raise SignatureInvalid("signature does not verify", issuer=cfg.name)
    return _principal(parsed, cfg, now, key)


def _verified_key(
    parsed: ParsedToken, cfg: IssuerConfig, alg: str, keys: tuple[VerificationKey, ...]
) -> VerificationKey | None:
    """The candidate key that verifies the signature (several share a kid at times)."""
    fitting = False
    check = SIGNATURE_CHECKS[alg]
    for key in keys:
        if alg in key.algorithms:
            fitting = True
            if check(key.key, parsed.signing_input, parsed.signature):
                return key
    if not fitting:
        # The JWK's own alg (or its key type) must agree with the token's.
        raise AlgorithmNotAllowed("the token's algorithm does not fit the key", issuer=cfg.name)
    return None


# NumericDate bounds (RFC 7519 §2): a date a datetime can hold, years 1 to 9999. The
# upper one is also well inside I-JSON's exact integers (±(2**53 - 1), RFC 7493 §2.2), so
# no float rounding moves a date across it; "exp": 1e300 is refused, never "never expires".
MIN_NUMERIC_DATE = -62135596800  # 0001-01-01T00:00:00Z
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z


def _numeric_date(value: Any, name: str, issuer: str) -> float:
    # bool is an int subclass and strings are not NumericDate (RFC 7519 §2).
    if type(value) not in (int, float):
        raise ClaimTypeInvalid(f"'{name}' must be a number", claim=name, issuer=issuer)
    # One chained comparison: exact for ints of any size, False for NaN and infinities.
    if not MIN_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE:
        raise ClaimInvalid(
            f"'{name}' is not a date between the years 1 and 9999", claim=name, issuer=issuer
        )
    return float(value)


def _date_claim(payload: Mapping[str, Any], name: str, issuer: str) -> float | None:
    """A NumericDate claim, or None when absent (``null`` counts as absent)."""
    value = payload.get(name)
    return None if value is None else _numeric_date(value, name, issuer)


def _check_times(
    payload: Mapping[str, Any], cfg: IssuerConfig, now: float
) -> tuple[float, float | None]:
    # exp and iat as nearly every token has them, integers in range, judged here: two
    # calls fewer per token. Anything else goes through the same functions as before.
    exp = payload.get("exp")
    if type(exp) is int and MIN_NUMERIC_DATE <= exp <= MAX_NUMERIC_DATE:
        exp = float(exp)
    else:
        exp = _date_claim(payload, "exp", cfg.name)
        if exp is None:
            raise ClaimMissing("token has no 'exp'", claim="exp", issuer=cfg.name)
    nbf = payload.get("nbf")  # judged only when present: most tokens carry none
    if nbf is not None:
        nbf = _numeric_date(nbf, "nbf", cfg.name)
    iat = payload.get("iat")
    if type(iat) is int and MIN_NUMERIC_DATE <= iat <= MAX_NUMERIC_DATE:
        iat = float(iat)
    elif iat is not None:
        iat = _numeric_date(iat, "iat", cfg.name)
    leeway = cfg.leeway
    if now >= exp + leeway:
        raise TokenExpired("token has expired", claim="exp", issuer=cfg.name)
    if nbf is not None and now + leeway < nbf:
        raise TokenNotYetValid("token is not valid yet", claim="nbf", issuer=cfg.name)
    if iat is not None and iat > now + leeway:
        raise TokenIssuedInFuture("token was issued in the future", claim="iat", issuer=cfg.name)
    if cfg.max_lifetime is not None:
        start = iat if iat is not None else nbf
        if start is None:
            raise ClaimMissing(
                "a lifetime limit needs 'iat' or 'nbf'", claim="iat", issuer=cfg.name
            )
        if exp - start > cfg.max_lifetime:
            raise TokenLifetimeExceeded(
                f"token lifetime exceeds {cfg.max_lifetime:g} s", claim="exp", issuer=cfg.name
            )
    return exp, iat


def _principal(
    parsed: ParsedToken, cfg: IssuerConfig, now: float, key: VerificationKey
) -> Principal:
    payload = parsed.payload
    exp, iat = _check_times(payload, cfg, now)
    try:
        _check_claim_types(payload, cfg)
        _check_rules(parsed.header, payload, cfg)
        return _map(payload, cfg, exp, iat, key)
    except ClaimMappingError as exc:
        exc.issuer = exc.issuer or cfg.name  # raised by pure helpers that know no issuer
        raise


def _check_rules(header: Mapping[str, Any], payload: Mapping[str, Any], cfg: IssuerConfig) -> None:
    if isinstance(payload.get("events"), dict) and not _EVENT_TYPES & set(cfg.token_types):
        # A SET or a logout token whose typ was left out (RFC 8417 §2.3: the events
        # claim is what sets them apart from access and ID tokens).
        raise TokenTypeInvalid(
            "a security event or logout token is not accepted here", issuer=cfg.name
        )
    preset = cfg.preset
    if preset.audience is not None:
        preset.audience(payload, cfg)
    elif cfg.audience or preset.audience_required:
        check_audience(payload, cfg)
    for name in cfg.required_claims:
        if name not in payload:
            raise ClaimMissing(f"token has no '{name}'", claim=name, issuer=cfg.name)
    preset.check(header, payload, cfg)


def _check_claim_types(payload: Mapping[str, Any], cfg: IssuerConfig) -> None:
    """The JSON type of every claim a rule below reads, checked once, before any reads it:
    a validly signed token with ``"aud": 7`` is a 401, never a TypeError (a 500)."""
    aud = payload.get("aud")
    if aud is not None and type(aud) is not str and not _string_list(aud):
        # Checked even where the audience is not (Cognito access tokens, AWS ALB).
        raise AudienceInvalid(
            "'aud' must be a string or a list of strings", claim="aud", issuer=cfg.name
        )
    jti = payload.get("jti")
    if jti is not None and type(jti) is not str:
        raise ClaimTypeInvalid("'jti' must be a string", claim="jti", issuer=cfg.name)
    if cfg.preset.claim_types:
        claim_paths.check_types(payload, cfg.preset.claim_types, issuer=cfg.name)


def _string_list(value: Any) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _map(
    payload: dict[str, Any],
    cfg: IssuerConfig,
    exp: float,
    iat: float | None,
    key: VerificationKey | None = None,
) -> Principal:
    cmap = cfg.claim_map
    path, subject = claim_paths.first(payload, cmap.subject)
    if type(subject) is not str:
        if path:  # the first subject claim present has another type: never skipped over
            raise ClaimTypeInvalid(f"'{path}' must be a string", claim=path, issuer=cfg.name)
        claim = cmap.subject[0] if cmap.subject else "sub"
        raise ClaimMissing("token has no usable subject", claim=claim, issuer=cfg.name)
    aud = payload.get("aud")  # a string, a list of strings or absent: checked above
    strings = cmap.allow_string
    attributes = cmap.attributes
    return _new_principal(
        cfg.name,
        cfg.issuer,
        subject,
        cfg.preset.kind(payload),
        exp,
        claim_paths.union(payload, cmap.groups, delimiter=cmap.delimiter, allow_string=strings),
        claim_paths.union(payload, cmap.roles, delimiter=cmap.delimiter, allow_string=strings)
        if cmap.roles  # most providers send no roles claim: no call for nothing
        else _NO_ROLES,
        claim_paths.union(payload, cmap.scopes, delimiter=None, split_spaces=True),
        MappingProxyType(_attributes(payload, attributes)) if attributes else _NO_ATTRIBUTES,
        claim_paths.FrozenClaims(payload),  # not freeze(): a call fewer per token
        (aud,) if type(aud) is str else tuple(aud or ()),
        iat,
        payload.get("jti"),
        key.kid if key is not None else None,
        key.thumbprint if key is not None else None,
    )


_NO_ATTRIBUTES: Mapping[str, tuple[str, ...]] = MappingProxyType({})
_NO_ROLES: frozenset[str] = frozenset()

# Principal is a frozen dataclass: its __init__ sets each of its fifteen fields through
# object.__setattr__, ~4 µs of a ~40 µs cold verification. A plain class with the very
# same slots is filled by ordinary attribute stores (~20 ns each, where the slots' own
# descriptors, called, take ~50), then becomes a Principal by __class__ assignment, which
# Python allows between classes of one layout (and refuses, TypeError, between any
# others: a field added to Principal alone fails on the first verification, and in
# tests/tokens/test_verify.py, which also checks every field is set, nothing else).


class _PrincipalDraft:
    __slots__ = Principal.__slots__
    issuer: str
    issuer_url: str
    subject: str
    kind: PrincipalKind
    expires_at: float
    groups: frozenset[str]
    roles: frozenset[str]
    scopes: frozenset[str]
    attributes: Mapping[str, tuple[str, ...]]
    claims: Mapping[str, Any]
    audience: tuple[str, ...]
    issued_at: float | None
    token_id: str | None
    key_id: str | None
    key_thumbprint: str | None


_object_new = object.__new__


def _new_principal(
    issuer: str,
    issuer_url: str,
    subject: str,
    kind: PrincipalKind,
    expires_at: float,
    groups: frozenset[str],
    roles: frozenset[str],
    scopes: frozenset[str],
    attributes: Mapping[str, tuple[str, ...]],
    claims: Mapping[str, Any],
    audience: tuple[str, ...],
    issued_at: float | None,
    token_id: str | None,
    key_id: str | None,
    key_thumbprint: str | None,
) -> Principal:
    draft = _object_new(_PrincipalDraft)
    draft.issuer = issuer
    draft.issuer_url = issuer_url
    draft.subject = subject
    draft.kind = kind
    draft.expires_at = expires_at
    draft.groups = groups
    draft.roles = roles
    draft.scopes = scopes
    draft.attributes = attributes
    draft.claims = claims
    draft.audience = audience
    draft.issued_at = issued_at
    draft.token_id = token_id
    draft.key_id = key_id
    draft.key_thumbprint = key_thumbprint
    draft.__class__ = Principal  # type: ignore[assignment]
    return draft  # type: ignore[return-value]  # a Principal now (typing.cast is a call)


def _attributes(
    payload: Mapping[str, Any], spec: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name, paths in spec.items():
        path, value = claim_paths.first(payload, paths)
        if claim_paths.is_missing(value) or value is None:
            continue
        if isinstance(value, bool):
            out[name] = ("true" if value else "false",)
        elif isinstance(value, int):
            out[name] = (str(value),)
        else:
            out[name] = claim_paths.string_values(value, claim=path, delimiter=None)
    return out


def principal_from_claims(claims: Mapping[str, Any], cfg: IssuerConfig) -> Principal:
    """Map claims through ``cfg``'s layout and provider rules, verifying NOTHING else.

    For explanations and policy tests (``iamscope explain --claims``, ``iamscope test``),
    where the question is "what would this identity get", not "is this token genuine".
    Claims of the wrong type are refused as verification would refuse them. Never use it
    on request input.
    """
    payload = dict(claims)
    exp = _date_claim(payload, "exp", cfg.name)
    iat = _date_claim(payload, "iat", cfg.name)
    try:
        _check_claim_types(payload, cfg)
        cfg.preset.check({}, payload, cfg)
        return _map(payload, cfg, math.inf if exp is None else exp, iat)
    except ClaimMappingError as exc:
        exc.issuer = exc.issuer or cfg.name
        raise
