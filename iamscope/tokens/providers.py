"""Provider presets: each identity provider's claim layout and its own extra rules.

A preset is data (where the subject, groups, roles, scopes and attributes live) plus
small pure hooks: how to tell a user from a service or workload, and checks the
provider's documentation requires beyond the generic JWT rules (Entra ID's groups
overage, Cognito's ``token_use`` and ``client_id``, the AWS ALB ``signer``...).
Paths may name ``{client_id}`` or ``{namespace}``, filled from the issuer's settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iamscope.errors import (
    AudienceInvalid,
    ClaimInvalid,
    ClaimMissing,
    GroupsOverage,
    SignerInvalid,
    TokenTypeInvalid,
)
from iamscope.tokens.claims import BOOLEAN, OBJECT, STRING, ClaimMap, Kind
from iamscope.tokens.extract import Source
from iamscope.tokens.issuer_fields import IssuerFields as IssuerConfig  # no import cycle
from iamscope.tokens.principal import PrincipalKind

__all__ = ["PRESETS", "Preset"]

Claims = Mapping[str, Any]
Check = Callable[[Claims, Claims, "IssuerConfig"], None]  # (header, payload, issuer)


def _user(claims: Claims) -> PrincipalKind:
    return "user"


def _workload(claims: Claims) -> PrincipalKind:
    return "workload"


def _no_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    return None


def check_audience(payload: Claims, cfg: IssuerConfig) -> None:
    """RFC 7519 §4.1.3: ``aud`` is a string or a list; one value must be ours."""
    aud = payload.get("aud")
    if aud is None:
        raise ClaimMissing("token has no 'aud'", claim="aud", issuer=cfg.name)
    if isinstance(aud, str) and aud in cfg.audience_set:
        return  # the common shape, decided without building a list (every cold verification)
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or not all(isinstance(a, str) for a in values):
        raise AudienceInvalid(
            "'aud' must be a string or a list of strings", claim="aud", issuer=cfg.name
        )
    if cfg.audience_set.isdisjoint(values):
        raise AudienceInvalid("token is not meant for this audience", claim="aud", issuer=cfg.name)


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    claims: ClaimMap = field(default_factory=ClaimMap)
    kind: Callable[[Claims], PrincipalKind] = _user
    check: Check = _no_check
    #: ``None``: check ``aud`` against the configured audience (the default); a function
    #: replaces that check for providers that put the audience elsewhere.
    audience: Callable[[Claims, IssuerConfig], None] | None = None
    audience_required: bool = True
    source: Source = field(default_factory=Source.bearer)
    allow_padding: bool = False
    #: Algorithms the provider signs with, when narrower than "whatever the keys allow".
    algorithms: tuple[str, ...] | None = None
    #: Issuer settings the preset cannot work without.
    requires: tuple[str, ...] = ()
    #: Per-kid PEM key endpoint instead of a JWKS (AWS ALB).
    pem_keys: bool = False
    #: CI presets: who may sign in (organisations / namespaces); empty is a config error.
    owners: Callable[[IssuerConfig], tuple[str, ...]] | None = None
    #: The JSON type of every claim ``kind``, ``check`` and ``audience`` read beyond the
    #: claim map (whose paths are typed by the mapping itself), checked before they run.
    claim_types: Mapping[str, Kind] = field(default_factory=dict)


# --- Okta -------------------------------------------------------------------------------


def _okta_kind(claims: Claims) -> PrincipalKind:
    # Client-credentials access tokens: subject is the client id and there is no user id.
    if "uid" not in claims and claims.get("sub") == claims.get("cid"):
        return "service"
    return "user"


OKTA = Preset(
    "okta",
    ClaimMap(
        groups=("groups",),
        scopes=("scp",),
        attributes={"email": ("email",), "client_id": ("cid",), "user_id": ("uid",)},
    ),
    kind=_okta_kind,
    claim_types={"uid": STRING, "cid": STRING},
)

# --- Microsoft Entra ID (v1 sts.windows.net and v2 login.microsoftonline.com) ---------


def _entra_kind(claims: Claims) -> PrincipalKind:
    if claims.get("idtyp") == "app":
        return "service"
    if (
        "scp" not in claims
        and claims.get("oid") is not None
        and claims.get("oid") == claims.get("sub")
    ):
        return "service"
    return "user"


def _entra_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    names = payload.get("_claim_names")
    if (isinstance(names, Mapping) and "groups" in names) or payload.get("hasgroups") is True:
        # Over 200 groups (150 in SAML, 6 in implicit flow): Entra leaves them out and
        # points at Graph. Reading that as "no groups" would silently deny or mis-grant.
        raise GroupsOverage(
            "Entra ID omitted the groups claim (overage); fetch groups from Microsoft Graph "
            "or emit group names via app roles",
            claim="groups",
            issuer=cfg.name,
        )


ENTRA = Preset(
    "entra",
    ClaimMap(
        subject=("oid", "sub"),
        groups=("groups",),
        roles=("roles",),
        scopes=("scp",),
        attributes={
            "tenant": ("tid",),
            "username": ("preferred_username", "upn", "unique_name"),
            "email": ("email",),
            "app_id": ("azp", "appid"),
        },
    ),
    kind=_entra_kind,
    check=_entra_check,
    # sub: read by `kind` even where oid names the subject.
    claim_types={"idtyp": STRING, "sub": STRING, "_claim_names": OBJECT, "hasgroups": BOOLEAN},
)

# --- Google ------------------------------------------------------------------------------


def _google_kind(claims: Claims) -> PrincipalKind:
    email = claims.get("email")
    if isinstance(email, str) and email.endswith(".gserviceaccount.com"):
        return "service"
    return "user"


def _hosted_domain_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    if not cfg.hosted_domains:
        return
    hd = payload.get("hd")
    if not isinstance(hd, str) or hd not in cfg.hosted_domains:
        # Without this check any Google account (gmail.com included) passes.
        raise ClaimInvalid(
            "account is not in an allowed hosted domain", claim="hd", issuer=cfg.name
        )


GOOGLE = Preset(
    "google",
    ClaimMap(
        groups=(),
        scopes=(),
        attributes={
            "email": ("email",),
            "hosted_domain": ("hd",),
            "email_verified": ("email_verified",),
        },
    ),
    kind=_google_kind,
    check=_hosted_domain_check,
    claim_types={"email": STRING, "hd": STRING},
)

# --- AWS Cognito -------------------------------------------------------------------------


def _cognito_kind(claims: Claims) -> PrincipalKind:
    if claims.get("token_use") == "access" and "username" not in claims:
        return "service"  # client-credentials grant
    return "user"


def _cognito_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    use = payload.get("token_use")
    if not isinstance(use, str):
        raise ClaimMissing("token has no 'token_use'", claim="token_use", issuer=cfg.name)
    if use not in cfg.token_use:
        raise ClaimInvalid("token_use is not accepted here", claim="token_use", issuer=cfg.name)


def _cognito_audience(payload: Claims, cfg: IssuerConfig) -> None:
    # Access tokens carry the app client in `client_id` and have no `aud` (AWS docs,
    # "Verifying a JSON web token"); ID tokens carry it in `aud`.
    if payload.get("token_use") == "access":
        client = payload.get("client_id")
        if not isinstance(client, str) or client not in cfg.audience_set:
            raise AudienceInvalid(
                "token is not for this app client", claim="client_id", issuer=cfg.name
            )
        return
    check_audience(payload, cfg)


COGNITO = Preset(
    "cognito",
    ClaimMap(
        groups=("cognito:groups",),
        scopes=("scope",),
        attributes={"username": ("username", "cognito:username"), "email": ("email",)},
    ),
    kind=_cognito_kind,
    check=_cognito_check,
    audience=_cognito_audience,
    claim_types={"token_use": STRING, "client_id": STRING, "username": STRING},
)

# --- Keycloak ----------------------------------------------------------------------------


def _keycloak_kind(claims: Claims) -> PrincipalKind:
    name = claims.get("preferred_username")
    if isinstance(name, str) and name.startswith("service-account-"):
        return "service"
    return "user"


def _keycloak_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    # Keycloak says a token's purpose in the payload's `typ`: "Bearer" for access tokens,
    # "ID", "Refresh", "Logout"... otherwise. An ID token whose audience happens to match
    # must not pass where an access token is required (RFC 9068 §4, RFC 8725 §3.11).
    purpose = payload.get("typ")
    if purpose is not None and purpose != "Bearer":
        raise TokenTypeInvalid(
            "a Keycloak token of another purpose is not an access token", issuer=cfg.name
        )


KEYCLOAK = Preset(
    "keycloak",
    ClaimMap(
        groups=("groups",),
        roles=("realm_access.roles", "resource_access.{client_id}.roles"),
        scopes=("scope",),
        attributes={"username": ("preferred_username",), "email": ("email",), "client": ("azp",)},
    ),
    kind=_keycloak_kind,
    check=_keycloak_check,
    claim_types={"preferred_username": STRING, "typ": STRING},
)

# --- Auth0 -------------------------------------------------------------------------------


def _auth0_kind(claims: Claims) -> PrincipalKind:
    return "service" if claims.get("gty") == "client-credentials" else "user"


AUTH0 = Preset(
    "auth0",
    ClaimMap(
        # Auth0 only lets custom claims in under a namespace URL (Actions docs).
        groups=("{namespace}/groups",),
        roles=("{namespace}/roles",),
        scopes=("scope", "permissions"),
        attributes={"email": ("{namespace}/email", "email"), "client": ("azp",)},
    ),
    kind=_auth0_kind,
    claim_types={"gty": STRING},
)

# --- CI and workload identities ----------------------------------------------------------


def github_owners(cfg: IssuerConfig) -> tuple[str, ...]:
    """Configured ``owners``, else the owner in a default audience ``https://github.com/<owner>``."""
    if cfg.owners:
        return cfg.owners
    prefix = "https://github.com/"
    return tuple(
        a[len(prefix) :]
        for a in cfg.audience
        if a.startswith(prefix) and _GH_NAME.fullmatch(a[len(prefix) :])
    )


_GH_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")


def _github_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    # Any workflow on GitHub can ask for a token with *our* audience: only the owner
    # claim says the workflow runs in one of our organisations.
    owner = payload.get("repository_owner")
    allowed = {o.lower() for o in github_owners(cfg)}
    if not isinstance(owner, str) or owner.lower() not in allowed:
        raise ClaimInvalid(
            "the workflow's repository owner is not allowed",
            claim="repository_owner",
            issuer=cfg.name,
        )


def _gitlab_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    path = payload.get("namespace_path")
    if not isinstance(path, str) or not any(
        path == owner or path.startswith(owner + "/") for owner in cfg.owners
    ):
        raise ClaimInvalid(
            "the pipeline's namespace is not allowed", claim="namespace_path", issuer=cfg.name
        )


GITHUB_ACTIONS = Preset(
    "github-actions",
    ClaimMap(
        groups=(),
        scopes=(),
        attributes={
            name: (name,)
            for name in (
                "repository",
                "repository_owner",
                "repository_id",
                "environment",
                "ref",
                "ref_type",
                "workflow",
                "job_workflow_ref",
                "event_name",
                "actor",
                "runner_environment",
            )
        },
    ),
    kind=_workload,
    check=_github_check,
    algorithms=("RS256",),
    owners=github_owners,
    claim_types={"repository_owner": STRING},
)

GITLAB_CI = Preset(
    "gitlab-ci",
    ClaimMap(
        groups=(),
        scopes=(),
        attributes={
            name: (name,)
            for name in (
                "namespace_path",
                "project_path",
                "environment",
                "environment_protected",
                "ref",
                "ref_type",
                "ref_protected",
                "pipeline_source",
                "user_login",
                "runner_environment",
            )
        },
    ),
    kind=_workload,
    check=_gitlab_check,
    owners=lambda cfg: cfg.owners,
    claim_types={"namespace_path": STRING},
)


def _kubernetes_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub.startswith("system:serviceaccount:"):
        raise ClaimInvalid(
            "subject is not a Kubernetes service account", claim="sub", issuer=cfg.name
        )


KUBERNETES = Preset(
    "kubernetes",
    ClaimMap(
        groups=(),
        scopes=(),
        attributes={
            "namespace": ("kubernetes.io.namespace",),
            "service_account": ("kubernetes.io.serviceaccount.name",),
            "pod": ("kubernetes.io.pod.name",),
        },
    ),
    kind=_workload,
    check=_kubernetes_check,
    claim_types={"sub": STRING},  # read by the check, before the mapping types it
)

# SPIFFE ID (SPIFFE-ID spec §2): lowercase trust domain, path segments of [A-Za-z0-9._-]
# only: no percent-encoding, no "." or ".." segments (which could alias another workload).
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+")


def _spiffe_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    sub = payload.get("sub")
    if (
        not isinstance(sub, str)
        or not _SPIFFE_ID.fullmatch(sub)
        or any(seg in (".", "..") for seg in sub[len("spiffe://") :].split("/")[1:])
    ):
        raise ClaimInvalid("subject is not a SPIFFE ID", claim="sub", issuer=cfg.name)


SPIFFE = Preset(
    "spiffe",
    ClaimMap(groups=(), scopes=(), attributes={}),
    kind=_workload,
    check=_spiffe_check,
    claim_types={"sub": STRING},  # read by the check, before the mapping types it
)

# --- Identity-aware proxies: signed assertion headers ----------------------------------

GOOGLE_IAP = Preset(
    "google-iap",
    ClaimMap(
        groups=(),
        scopes=(),
        attributes={"email": ("email",), "hosted_domain": ("hd",)},
    ),
    kind=_google_kind,
    check=_hosted_domain_check,
    source=Source.header("x-goog-iap-jwt-assertion"),
    algorithms=("ES256",),
    claim_types={"email": STRING, "hd": STRING},
)


def _alb_check(header: Claims, payload: Claims, cfg: IssuerConfig) -> None:
    # The ALB signs with a regional key; only the `signer` header ties the token to *our*
    # load balancer (AWS docs: "verify the signer field ... the ARN of the load balancer").
    signer = header.get("signer")
    if not isinstance(signer, str) or signer not in cfg.signers:
        raise SignerInvalid(
            "token was not signed by a configured load balancer", claim="signer", issuer=cfg.name
        )
    if cfg.client_id is not None and header.get("client") != cfg.client_id:
        raise SignerInvalid("token was issued for another client", claim="client", issuer=cfg.name)


AWS_ALB = Preset(
    "aws-alb",
    # The ALB forwards the claims of whatever IdP sits behind it as that IdP sends them;
    # several (ADFS, PingFederate) send a user's only group as a plain string.
    ClaimMap(groups=("groups",), scopes=(), attributes={"email": ("email",)}, allow_string=True),
    check=_alb_check,
    audience_required=False,
    source=Source.header("x-amzn-oidc-data"),
    allow_padding=True,
    algorithms=("ES256",),
    requires=("signers",),
    pem_keys=True,
)


def _cloudflare_kind(claims: Claims) -> PrincipalKind:
    # Service tokens carry `common_name` (the client id) and an empty subject.
    return "service" if claims.get("common_name") else "user"


CLOUDFLARE_ACCESS = Preset(
    "cloudflare-access",
    ClaimMap(
        subject=("sub", "common_name"),
        groups=(),
        scopes=(),
        attributes={"email": ("email",), "country": ("country",)},
    ),
    kind=_cloudflare_kind,
    source=Source.header("cf-access-jwt-assertion"),
    algorithms=("RS256",),
    claim_types={"common_name": STRING},
)

POMERIUM = Preset(
    "pomerium",
    ClaimMap(groups=("groups",), scopes=(), attributes={"email": ("email",), "user": ("user",)}),
    source=Source.header("x-pomerium-jwt-assertion"),
    algorithms=("ES256",),
)

#: Claims only a token issued for a signed-in person carries: RFC 9068 §2.2.1's
#: authentication information and the OIDC standard profile claims.
_USER_CLAIMS = (
    "auth_time",
    "acr",
    "amr",
    "sid",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "preferred_username",
    "email",
    "upn",
)


def _generic_kind(claims: Claims) -> PrincipalKind:
    # RFC 9068 §2.2: with no resource owner (client credentials) the subject is the
    # client itself, so sub == client_id; any user claim means a person signed in.
    client = claims.get("client_id")
    if not isinstance(client, str) or not client or client != claims.get("sub"):
        return "user"
    return "user" if any(name in claims for name in _USER_CLAIMS) else "service"


# client_id is one string (RFC 9068 §2.2, RFC 8693 §4.3): any other type is refused
# before the kind is read, as every preset's own claims are.
GENERIC = Preset("generic", kind=_generic_kind, claim_types={"client_id": STRING})

PRESETS: Mapping[str, Preset] = {
    p.name: p
    for p in (
        GENERIC,
        OKTA,
        ENTRA,
        GOOGLE,
        COGNITO,
        KEYCLOAK,
        AUTH0,
        GITHUB_ACTIONS,
        GITLAB_CI,
        KUBERNETES,
        SPIFFE,
        GOOGLE_IAP,
        AWS_ALB,
        CLOUDFLARE_ACCESS,
        POMERIUM,
    )
}
