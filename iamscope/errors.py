"""Every error iamscope raises, in one tree.

Each class carries a stable machine ``code`` (used in HTTP problem bodies and audit
events), the HTTP ``status`` it answers with, and the RFC 6750 ``error`` value for the
``WWW-Authenticate`` header. Messages never contain the raw token or its claim values:
they name the rule that failed, and at most the *name* of a claim.

    IAMScopeError ........................... iamscope_error
    ├── ConfigError ......................... config_invalid  (load time, not per request)
    ├── RequestInvalid ...................... request_invalid        400 invalid_request
    ├── TokenError .......................... token_invalid          401 invalid_token
    │   ├── TokenMissing .................... token_missing
    │   ├── TokenTooLarge ................... token_too_large
    │   ├── TokenMalformed .................. token_malformed        (bad encoding, junk, non-ASCII)
    │   ├── TokenUnsupported ................ token_unsupported      (JWE, JSON form, alg none)
    │   ├── HeaderInvalid ................... header_invalid         (crit, jwk/jku/x5u/x5c, kid)
    │   │   ├── AlgorithmNotAllowed ......... algorithm_not_allowed
    │   │   └── TokenTypeInvalid ............ token_type_invalid     (logout+jwt, secevent+jwt…)
    │   ├── IssuerUntrusted ................. issuer_untrusted
    │   ├── TokenRevoked .................... token_revoked
    │   ├── KeyNotFound ..................... key_not_found
    │   ├── SignatureInvalid ................ signature_invalid
    │   ├── ClaimInvalid (.claim) ........... claim_invalid          (e.g. a date beyond year 9999)
    │   │   ├── ClaimMissing ................ claim_missing
    │   │   ├── ClaimTypeInvalid ............ claim_type_invalid     (wrong JSON type)
    │   │   ├── TokenExpired ................ token_expired
    │   │   ├── TokenNotYetValid ............ token_not_yet_valid
    │   │   ├── TokenIssuedInFuture ......... token_issued_in_future
    │   │   ├── TokenLifetimeExceeded ....... token_lifetime_exceeded
    │   │   ├── AudienceInvalid ............. audience_invalid
    │   │   └── SignerInvalid ............... signer_invalid         (AWS ALB)
    │   └── ClaimMappingError (.claim) ...... claim_mapping_invalid
    │       ├── ClaimNotList ................ claim_not_list         (a string; see `delimiter`)
    │       └── GroupsOverage ............... groups_overage         (Entra ID)
    ├── PlanUnsupported ..................... plan_unsupported       (renderer cannot express)
    ├── AccessDenied (.requirement) ......... access_denied          403 insufficient_scope
    │   ├── RoleRequired .................... role_required
    │   ├── PermissionRequired .............. permission_required
    │   ├── TraceScopeRequired .............. trace_scope_required
    │   ├── AttributeMissing ................ attribute_missing
    │   └── RequirementFailed ............... requirement_failed     (a custom predicate)
    ├── KeysUnavailable ..................... keys_unavailable       503 (outage, not bad token)
    └── RevocationsUnavailable .............. revocations_unavailable 503 (shared list out of reach)

Every fault *in the credential* (its bytes, its encoding, its JSON, its claims) is a
``TokenError`` answering 401; ``RequestInvalid`` (400) is only for faults of the request
around it: the credential sent twice, or two credentials in one header.

``KeysUnavailable`` deliberately does not inherit from ``TokenError``: code that catches
token faults to answer 401 must not swallow an outage.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AlgorithmNotAllowed",
    "AttributeMissing",
    "AudienceInvalid",
    "ClaimInvalid",
    "ClaimMappingError",
    "ClaimMissing",
    "ClaimNotList",
    "ClaimTypeInvalid",
    "ConfigError",
    "GroupsOverage",
    "HeaderInvalid",
    "IAMScopeError",
    "IssuerUntrusted",
    "KeyNotFound",
    "KeysUnavailable",
    "PermissionRequired",
    "PlanUnsupported",
    "RequestInvalid",
    "RequirementFailed",
    "RevocationsUnavailable",
    "RoleRequired",
    "SignatureInvalid",
    "SignerInvalid",
    "TokenError",
    "TokenExpired",
    "TokenIssuedInFuture",
    "TokenLifetimeExceeded",
    "TokenMalformed",
    "TokenMissing",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenTooLarge",
    "TokenTypeInvalid",
    "TokenUnsupported",
    "TraceScopeRequired",
]


class IAMScopeError(Exception):
    """Base of every iamscope error."""

    code: str = "iamscope_error"
    status: int = 500
    error: str = ""  # RFC 6750 error value, empty when the answer is not an auth challenge

    def __init__(self, message: str, *, issuer: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The configured issuer's *name* when one was selected (never an unverified URL).
        self.issuer = issuer


class ConfigError(IAMScopeError):
    """A configuration or policy that cannot be loaded. Raised at load time."""

    code = "config_invalid"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        where = source or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")
        #: The message without the location, for re-raising with a better one.
        self.detail = message
        self.source = source
        self.line = line
        self.key = key


class RequestInvalid(IAMScopeError):
    """The request around the credential is malformed: the credential's header or cookie
    sent twice, or two credentials in one header. A fault in the credential itself is a
    :class:`TokenError` (401)."""

    code = "request_invalid"
    status = 400
    error = "invalid_request"


class TokenError(IAMScopeError):
    """The credential is missing or cannot be trusted."""

    code = "token_invalid"
    status = 401
    error = "invalid_token"


class TokenMissing(TokenError):
    code = "token_missing"
    # RFC 6750 §3.1: a request with no credentials gets a bare challenge, no error code.
    error = ""


class TokenTooLarge(TokenError):
    code = "token_too_large"


class TokenMalformed(TokenError):
    code = "token_malformed"


class TokenUnsupported(TokenError):
    code = "token_unsupported"


class HeaderInvalid(TokenError):
    code = "header_invalid"


class AlgorithmNotAllowed(HeaderInvalid):
    code = "algorithm_not_allowed"


class TokenTypeInvalid(HeaderInvalid):
    code = "token_type_invalid"


class IssuerUntrusted(TokenError):
    code = "issuer_untrusted"


class TokenRevoked(TokenError):
    """The token, its subject or its issuer was revoked."""

    code = "token_revoked"


class KeyNotFound(TokenError):
    code = "key_not_found"


class SignatureInvalid(TokenError):
    code = "signature_invalid"


class ClaimInvalid(TokenError):
    code = "claim_invalid"

    def __init__(self, message: str, *, claim: str, issuer: str | None = None) -> None:
        super().__init__(message, issuer=issuer)
        #: The claim's name (never its value).
        self.claim = claim


class ClaimMissing(ClaimInvalid):
    code = "claim_missing"


class ClaimTypeInvalid(ClaimInvalid):
    """A claim the verification or a preset rule reads has the wrong JSON type
    (a number for ``aud``, an object for ``token_use``...): refused, never guessed at."""

    code = "claim_type_invalid"


class TokenExpired(ClaimInvalid):
    code = "token_expired"


class TokenNotYetValid(ClaimInvalid):
    code = "token_not_yet_valid"


class TokenIssuedInFuture(ClaimInvalid):
    code = "token_issued_in_future"


class TokenLifetimeExceeded(ClaimInvalid):
    code = "token_lifetime_exceeded"


class AudienceInvalid(ClaimInvalid):
    code = "audience_invalid"


class SignerInvalid(ClaimInvalid):
    code = "signer_invalid"


class ClaimMappingError(TokenError):
    """A verified token whose claims do not have the shape the issuer's mapping expects."""

    code = "claim_mapping_invalid"

    def __init__(self, message: str, *, claim: str, issuer: str | None = None) -> None:
        super().__init__(message, issuer=issuer)
        self.claim = claim


class ClaimNotList(ClaimMappingError):
    """A groups or roles claim is a plain string where a list is expected.

    Read as one value, ``"sales-east,analysts"`` would be one group nobody is bound to:
    the issuer's ``claims.delimiter`` splits such strings, ``claims.allow_string`` reads
    a lone string as a one-value list.
    """

    code = "claim_not_list"


class GroupsOverage(ClaimMappingError):
    """Entra ID left the groups out of the token (`_claim_names`): never read as 'no groups'."""

    code = "groups_overage"


class PlanUnsupported(IAMScopeError, ValueError):
    """A row plan has a shape or operator a renderer cannot express exactly.

    Raised instead of skipping or widening the filter; a server error (500), because it
    is a policy/renderer mismatch, not the caller's fault.
    """

    code = "plan_unsupported"


class AccessDenied(IAMScopeError):
    """A verified principal lacks what the resource requires."""

    code = "access_denied"
    status = 403
    error = "insufficient_scope"

    def __init__(
        self, message: str, *, requirement: str | None = None, issuer: str | None = None
    ) -> None:
        super().__init__(message, issuer=issuer)
        #: The requirement that failed, e.g. ``permission:sales:read`` (never a claim value).
        self.requirement = requirement


class RoleRequired(AccessDenied):
    code = "role_required"


class PermissionRequired(AccessDenied):
    code = "permission_required"


class TraceScopeRequired(AccessDenied):
    code = "trace_scope_required"


class AttributeMissing(AccessDenied):
    code = "attribute_missing"


class RequirementFailed(AccessDenied):
    code = "requirement_failed"


class KeysUnavailable(IAMScopeError):
    """A configured issuer's keys cannot be had right now (discovery or JWKS outage, or
    the library may not look again yet): an outage, answered 503 with ``Retry-After``."""

    code = "keys_unavailable"
    status = 503

    def __init__(
        self, message: str, *, issuer: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, issuer=issuer)
        #: Seconds until asking again may help (None: unknown).
        self.retry_after = retry_after


class RevocationsUnavailable(IAMScopeError):
    """The fleet's shared revocation list has been out of reach longer than
    ``shared.stale_after`` (or was never loaded): fail closed, never guess."""

    code = "revocations_unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        #: Seconds for the ``Retry-After`` header.
        self.retry_after = retry_after
