"""Provider presets, end to end: each provider's real token shape, verified over loopback.

Every token is signed by a real key of a :class:`LocalIssuer` and verified by a real
:class:`TokenVerifier` that fetches discovery and JWKS (or the per-kid PEM keys of an AWS
ALB) over HTTP on 127.0.0.1. Claims mirror what each provider documents; only the issuer
URL is the local one (path-shaped like the provider's where it helps).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from jwt.algorithms import get_default_algorithms

from iamscope import errors
from iamscope.testing import LocalIssuer
from iamscope.tokens import (
    PRESETS,
    AsyncTokenVerifier,
    IssuerConfig,
    Principal,
    Source,
    TokenVerifier,
    extract_from_headers,
)

Factory = Callable[..., LocalIssuer]

#: Every preset this module exercises; a new preset without tests fails the coverage test.
COVERED_PRESETS = {
    "generic",
    "okta",
    "entra",
    "google",
    "cognito",
    "keycloak",
    "auth0",
    "github-actions",
    "gitlab-ci",
    "kubernetes",
    "spiffe",
    "google-iap",
    "aws-alb",
    "cloudflare-access",
    "pomerium",
}


def now() -> int:
    return int(time.time())


def verify(token: str, *issuers: IssuerConfig) -> Principal:
    """Real verification: a fresh verifier fetches keys from the local issuer(s)."""
    verifier = TokenVerifier(issuers)
    try:
        return verifier.verify(token)
    finally:
        verifier.close()


def refused(
    token: str, issuers: IssuerConfig | tuple[IssuerConfig, ...], error: type[Exception]
) -> Any:
    cfgs = issuers if isinstance(issuers, tuple) else (issuers,)
    with pytest.raises(error) as info:
        verify(token, *cfgs)
    return info.value


def slash_issuer(factory: Factory, path: str = "", **kwargs: Any) -> tuple[LocalIssuer, str]:
    """An issuer whose identifier ends in '/' (Entra v1, Auth0), discovery saying the same."""
    issuer = factory(path=path, **kwargs)
    iss = issuer.url + "/"
    issuer.discovery_overrides["issuer"] = iss
    return issuer, iss


def b64_padded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def padded_token(
    issuer: LocalIssuer, header: Mapping[str, Any], payload: Mapping[str, Any], alg: str
) -> str:
    """A token in the AWS ALB spelling: base64url *with* '=' padding, signed as sent."""
    key = issuer.key_for(alg)
    h = b64_padded(json.dumps({"alg": alg, "kid": key.kid, **header}).encode())
    p = b64_padded(json.dumps(dict(payload)).encode())
    signature = get_default_algorithms()[alg].sign(f"{h}.{p}".encode(), key.private_key)
    return f"{h}.{p}.{b64_padded(signature)}"


# --- coverage and token sources --------------------------------------------------------


def test_every_preset_has_provider_tests() -> None:
    assert set(PRESETS) == COVERED_PRESETS


@pytest.mark.parametrize(
    ("preset", "settings", "expected"),
    [
        ("google-iap", {}, Source("header", "x-goog-iap-jwt-assertion")),
        (
            "aws-alb",
            {
                "audience": (),
                "keys_url": "https://public-keys.auth.elb.eu-west-1.amazonaws.com/{kid}",
                "signers": ("arn:aws:elasticloadbalancing:eu-west-1:123456789012:lb",),
            },
            Source("header", "x-amzn-oidc-data"),
        ),
        ("cloudflare-access", {}, Source("header", "cf-access-jwt-assertion")),
        ("pomerium", {}, Source("header", "x-pomerium-jwt-assertion")),
        ("okta", {}, Source("bearer", "authorization")),
        ("entra", {}, Source("bearer", "authorization")),
        ("github-actions", {"owners": ("acme",)}, Source("bearer", "authorization")),
        ("generic", {}, Source("bearer", "authorization")),
    ],
)
def test_issuer_reads_tokens_from_the_presets_header(
    preset: str, settings: dict[str, Any], expected: Source
) -> None:
    cfg = IssuerConfig(
        name=preset,
        issuer="https://idp.example",
        preset=PRESETS[preset],
        **{"audience": ("api://orders",), **settings},
    )
    assert cfg.token_source == expected
    assert cfg.token_source.header_name == expected.name


def test_explicit_source_overrides_the_presets_header() -> None:
    cfg = IssuerConfig.from_mapping(
        {
            "name": "iap-behind-envoy",
            "issuer": "https://cloud.google.com/iap",
            "audience": "/projects/123/global/backendServices/456",
            "preset": "google-iap",
            "source": {"header": "X-Forwarded-IAP-Assertion"},
        }
    )
    assert cfg.token_source == Source("header", "x-forwarded-iap-assertion")


# --- Okta --------------------------------------------------------------------------------


@pytest.fixture
def okta(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    issuer = local_issuer_factory(path="/oauth2/default")
    cfg = IssuerConfig(
        name="okta", issuer=issuer.url, audience=("api://default",), preset=PRESETS["okta"]
    )
    return issuer, cfg


def test_okta_user_access_token_maps_groups_scopes_and_ids(
    okta: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = okta
    token = issuer.mint(
        {
            "ver": 1,
            "jti": "AT.u0sCCqAGqBl7sQnJ3kTDpP2TSmrhBvXpAGuHCA8JbtA",
            "aud": "api://default",
            "cid": "0oa1x2y3z4ORDERSWEB",
            "uid": "00u1a2b3c4ALICE",
            "scp": ["openid", "profile", "orders:read"],
            "auth_time": now() - 60,
            "sub": "alice@acme.example",
            "groups": ["Everyone", "Engineering"],
        }
    )
    p = verify(token, cfg)
    assert p.subject == "alice@acme.example"
    assert p.kind == "user"
    assert p.groups == {"Everyone", "Engineering"}
    assert p.roles == frozenset()
    assert p.scopes == {"openid", "profile", "orders:read"}
    assert dict(p.attributes) == {
        "client_id": ("0oa1x2y3z4ORDERSWEB",),
        "user_id": ("00u1a2b3c4ALICE",),
    }
    assert p.issuer == "okta"
    assert p.issuer_url == issuer.url
    assert p.token_id == "AT.u0sCCqAGqBl7sQnJ3kTDpP2TSmrhBvXpAGuHCA8JbtA"


def test_okta_client_credentials_token_is_a_service(
    okta: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = okta
    token = issuer.mint(
        {
            "ver": 1,
            "jti": "AT.svc",
            "aud": "api://default",
            "cid": "0oa9SYNCJOB",
            "scp": ["orders:sync"],
            "sub": "0oa9SYNCJOB",
        }
    )
    p = verify(token, cfg)
    assert p.subject == "0oa9SYNCJOB"
    assert p.kind == "service"
    assert p.scopes == {"orders:sync"}
    assert p.groups == frozenset()
    assert dict(p.attributes) == {"client_id": ("0oa9SYNCJOB",)}


# --- Microsoft Entra ID ------------------------------------------------------------------

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
API_CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
API_APP_ID_URI = "api://orders.acme.example"
WEB_CLIENT_ID = "c44b4083-3bb0-49c1-b47d-974e53cbdf3c"
ALICE_OID = "00000000-0000-0000-66f3-3332eca7ea81"
SP_OID = "1b2f3c4d-5e6f-4a1b-8c9d-0e1f2a3b4c5d"
GROUP_ENG = "0e8b8f4a-5b4a-4a1e-9c3c-6d2f1b7e9a10"
GROUP_OPS = "93b1ad1c-2f4e-4d7a-8a6b-3c5d7e9f1a2b"


def entra_config(name: str, iss: str) -> IssuerConfig:
    return IssuerConfig(
        name=name,
        issuer=iss,
        audience=(API_CLIENT_ID, API_APP_ID_URI),
        preset=PRESETS["entra"],
    )


@pytest.fixture
def entra_v2(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    # https://login.microsoftonline.com/{tenant}/v2.0
    issuer = local_issuer_factory(path=f"/{TENANT}/v2.0")
    return issuer, entra_config("entra-v2", issuer.url)


@pytest.fixture
def entra_v1(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    # https://sts.windows.net/{tenant}/ — with the trailing slash, as Entra spells it.
    issuer, iss = slash_issuer(local_issuer_factory, f"/{TENANT}")
    return issuer, entra_config("entra-v1", iss)


def entra_v2_user_claims(issuer: LocalIssuer, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": API_CLIENT_ID,
        "iss": issuer.url,
        "nbf": now() - 5,
        "aio": "AWQAm/8TAAAA",
        "azp": WEB_CLIENT_ID,
        "azpacr": "0",
        "name": "Alice Example",
        "oid": ALICE_OID,
        "preferred_username": "alice@acme.example",
        "rh": "0.AAAA",
        "roles": ["Orders.Admin"],
        "scp": "Orders.Read Orders.Write",
        "sid": "0f3b6c2e-8a1d-4e2b-9c7f-5a6b7c8d9e0f",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": TENANT,
        "uti": "AbCdEfGh",
        "ver": "2.0",
        "groups": [GROUP_ENG, GROUP_OPS],
    }
    claims.update(extra)
    return claims


def entra_v1_user_claims(iss: str, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": API_APP_ID_URI,
        "iss": iss,
        "nbf": now() - 5,
        "acr": "1",
        "aio": "E2ZgYDj",
        "amr": ["pwd", "mfa"],
        "appid": WEB_CLIENT_ID,
        "appidacr": "0",
        "family_name": "Example",
        "given_name": "Alice",
        "ipaddr": "203.0.113.7",
        "name": "Alice Example",
        "oid": ALICE_OID,
        "rh": "0.AAAA",
        "scp": "Orders.Read",
        "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
        "tid": TENANT,
        "unique_name": "alice@acme.example",
        "upn": "alice@acme.example",
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "1.0",
        "groups": [GROUP_ENG],
    }
    claims.update(extra)
    return claims


ENTRA_HEADER = {"x5t": "nOo3ZDrODXEK1jKWhXslHR_KXEg"}


def test_entra_v2_delegated_token_maps_oid_roles_groups_and_scp(
    entra_v2: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = entra_v2
    p = verify(issuer.mint(entra_v2_user_claims(issuer), headers=ENTRA_HEADER), cfg)
    assert p.subject == ALICE_OID  # oid, stable across apps, not the pairwise sub
    assert p.kind == "user"
    assert p.groups == {GROUP_ENG, GROUP_OPS}
    assert p.roles == {"Orders.Admin"}
    assert p.scopes == {"Orders.Read", "Orders.Write"}
    assert dict(p.attributes) == {
        "tenant": (TENANT,),
        "username": ("alice@acme.example",),
        "app_id": (WEB_CLIENT_ID,),
    }
    assert p.audience == (API_CLIENT_ID,)


def test_entra_v1_delegated_token_maps_upn_and_appid(
    entra_v1: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = entra_v1
    token = issuer.mint(entra_v1_user_claims(cfg.issuer), headers=ENTRA_HEADER)
    p = verify(token, cfg)
    assert p.issuer_url.endswith(f"/{TENANT}/")
    assert p.subject == ALICE_OID
    assert p.kind == "user"
    assert p.groups == {GROUP_ENG}
    assert p.roles == frozenset()
    assert p.scopes == {"Orders.Read"}
    assert dict(p.attributes) == {
        "tenant": (TENANT,),
        "username": ("alice@acme.example",),  # upn: v1 has no preferred_username
        "app_id": (WEB_CLIENT_ID,),  # appid: v1 has no azp
    }


def test_entra_v1_personal_account_falls_back_to_unique_name(
    entra_v1: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = entra_v1
    claims = entra_v1_user_claims(cfg.issuer, upn=None, unique_name="live.com#bob@outlook.com")
    p = verify(issuer.mint(claims), cfg)
    assert p.attributes["username"] == ("live.com#bob@outlook.com",)


def test_entra_v1_and_v2_tokens_of_one_user_map_to_the_same_subject(
    entra_v1: tuple[LocalIssuer, IssuerConfig], entra_v2: tuple[LocalIssuer, IssuerConfig]
) -> None:
    (v1, v1_cfg), (v2, v2_cfg) = entra_v1, entra_v2
    verifier = TokenVerifier([v1_cfg, v2_cfg])
    try:
        one = verifier.verify(v1.mint(entra_v1_user_claims(v1_cfg.issuer)))
        two = verifier.verify(v2.mint(entra_v2_user_claims(v2)))
    finally:
        verifier.close()
    assert (one.issuer, two.issuer) == ("entra-v1", "entra-v2")
    assert one.subject == two.subject == ALICE_OID


def test_entra_v2_app_only_token_with_idtyp_app_is_a_service(
    entra_v2: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = entra_v2
    claims = {
        "aud": API_CLIENT_ID,
        "azp": "f5a2c3d4-1111-2222-3333-444455556666",
        "azpacr": "1",
        "idtyp": "app",
        "oid": SP_OID,
        "roles": ["Orders.ReadWrite.All"],
        "sub": SP_OID,
        "tid": TENANT,
        "ver": "2.0",
    }
    p = verify(issuer.mint(claims), cfg)
    assert p.subject == SP_OID
    assert p.kind == "service"
    assert p.roles == {"Orders.ReadWrite.All"}
    assert p.scopes == frozenset()
    assert p.attributes["app_id"] == ("f5a2c3d4-1111-2222-3333-444455556666",)


def test_entra_v1_app_only_token_without_scp_and_oid_equal_sub_is_a_service(
    entra_v1: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = entra_v1
    claims = {
        "aud": API_APP_ID_URI,
        "appid": "f5a2c3d4-1111-2222-3333-444455556666",
        "appidacr": "1",
        "oid": SP_OID,
        "roles": ["Orders.ReadWrite.All"],
        "sub": SP_OID,
        "tid": TENANT,
        "ver": "1.0",
    }
    p = verify(issuer.mint(claims, iss=cfg.issuer), cfg)
    assert p.kind == "service"
    assert p.attributes["app_id"] == ("f5a2c3d4-1111-2222-3333-444455556666",)


def test_entra_id_token_without_scp_but_pairwise_sub_is_a_user(
    entra_v2: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = entra_v2
    claims = entra_v2_user_claims(issuer, scp=None, roles=None, azp=None)
    p = verify(issuer.mint(claims), cfg)
    assert p.kind == "user"
    assert p.scopes == frozenset()


@pytest.mark.parametrize(
    "overage",
    [
        pytest.param(
            {
                "_claim_names": {"groups": "src1"},
                "_claim_sources": {
                    "src1": {
                        "endpoint": f"https://graph.microsoft.com/v1.0/users/{ALICE_OID}"
                        "/getMemberObjects"
                    }
                },
            },
            id="claim_names",
        ),
        pytest.param({"hasgroups": True}, id="hasgroups"),
    ],
)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_entra_groups_overage_is_refused_not_read_as_no_groups(
    entra_v1: tuple[LocalIssuer, IssuerConfig],
    entra_v2: tuple[LocalIssuer, IssuerConfig],
    overage: dict[str, Any],
    version: str,
) -> None:
    if version == "v1":
        issuer, cfg = entra_v1
        claims = entra_v1_user_claims(cfg.issuer, groups=None, **overage)
    else:
        issuer, cfg = entra_v2
        claims = entra_v2_user_claims(issuer, groups=None, **overage)
    exc = refused(issuer.mint(claims), cfg, errors.GroupsOverage)
    assert exc.code == "groups_overage"
    assert exc.claim == "groups"
    assert exc.issuer == cfg.name
    assert isinstance(exc, errors.ClaimMappingError)


def test_entra_claim_names_for_other_claims_is_not_a_groups_overage(
    entra_v2: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = entra_v2
    claims = entra_v2_user_claims(issuer, _claim_names={"roles": "src1"}, hasgroups=False)
    assert verify(issuer.mint(claims), cfg).groups == {GROUP_ENG, GROUP_OPS}


# --- Google ------------------------------------------------------------------------------

GOOGLE_CLIENT = "1234987819200-okjr2l6c1o4e3n8vhd1hkbe0jbqt5gq0.apps.googleusercontent.com"


@pytest.fixture
def google(local_issuer_factory: Factory) -> LocalIssuer:
    return local_issuer_factory()  # https://accounts.google.com: no path


def google_config(issuer: LocalIssuer, **settings: Any) -> IssuerConfig:
    settings.setdefault("audience", (GOOGLE_CLIENT,))
    return IssuerConfig(name="google", issuer=issuer.url, preset=PRESETS["google"], **settings)


def google_id_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "azp": GOOGLE_CLIENT,
        "aud": GOOGLE_CLIENT,
        "sub": "110169484474386276334",
        "hd": "acme.example",
        "email": "alice@acme.example",
        "email_verified": True,
        "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
        "nonce": "0394852-3190485-2490358",
        "name": "Alice Example",
        "picture": "https://lh3.googleusercontent.com/a/default-user",
        "given_name": "Alice",
        "family_name": "Example",
        "scope": "ignored-by-the-google-preset",
    }
    claims.update(extra)
    return claims


def test_google_id_token_maps_email_and_hosted_domain(google: LocalIssuer) -> None:
    p = verify(google.mint(google_id_claims()), google_config(google))
    assert p.subject == "110169484474386276334"
    assert p.kind == "user"
    assert p.groups == frozenset()
    assert p.scopes == frozenset()  # Google ID tokens carry no scopes: none are mapped
    assert dict(p.attributes) == {
        "email": ("alice@acme.example",),
        "hosted_domain": ("acme.example",),
        "email_verified": ("true",),
    }


def test_google_service_account_id_token_is_a_service(google: LocalIssuer) -> None:
    claims = {
        "aud": "https://orders.acme.example",
        "azp": "108230469478361574963",
        "email": "ci-deployer@acme-prod.iam.gserviceaccount.com",
        "email_verified": True,
        "sub": "108230469478361574963",
    }
    cfg = google_config(google, audience=("https://orders.acme.example",))
    p = verify(google.mint(claims), cfg)
    assert p.kind == "service"
    assert p.subject == "108230469478361574963"
    assert "hosted_domain" not in p.attributes


def test_google_hosted_domain_is_enforced_when_configured(google: LocalIssuer) -> None:
    cfg = google_config(google, hosted_domains=("acme.example",))
    assert verify(google.mint(google_id_claims()), cfg).attributes["hosted_domain"] == (
        "acme.example",
    )


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        pytest.param({"hd": None, "email": "alice@gmail.com"}, "claim_invalid", id="consumer"),
        pytest.param(
            {"hd": "evil.example", "email": "eve@evil.example"}, "claim_invalid", id="other-domain"
        ),
        pytest.param({"hd": ["acme.example"]}, "claim_type_invalid", id="hd-not-a-string"),
        pytest.param({"hd": "ACME.example"}, "claim_invalid", id="case-variant"),
    ],
)
def test_google_account_outside_hosted_domains_is_refused(
    google: LocalIssuer, claims: dict[str, Any], code: str
) -> None:
    cfg = google_config(google, hosted_domains=("acme.example",))
    exc = refused(google.mint(google_id_claims(**claims)), cfg, errors.ClaimInvalid)
    assert exc.code == code
    assert exc.claim == "hd"


def test_google_without_hosted_domains_accepts_consumer_accounts(google: LocalIssuer) -> None:
    claims = google_id_claims(hd=None, email="alice@gmail.com")
    p = verify(google.mint(claims), google_config(google))
    assert p.attributes["email"] == ("alice@gmail.com",)
    assert "hosted_domain" not in p.attributes


# --- AWS Cognito -------------------------------------------------------------------------

COGNITO_CLIENT = "3n4b5urk1ft4fl3mg5e62d9ado"
COGNITO_POOL = "us-east-1_AbC123xyz"


@pytest.fixture
def cognito(local_issuer_factory: Factory) -> LocalIssuer:
    # https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123xyz
    return local_issuer_factory(path=f"/{COGNITO_POOL}")


def cognito_config(issuer: LocalIssuer, **settings: Any) -> IssuerConfig:
    return IssuerConfig(
        name="cognito",
        issuer=issuer.url,
        audience=(COGNITO_CLIENT,),
        preset=PRESETS["cognito"],
        **settings,
    )


def cognito_access_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "aud": None,  # Cognito access tokens have no aud
        "cognito:groups": ["orders-admins", "everyone"],
        "version": 2,
        "client_id": COGNITO_CLIENT,
        "origin_jti": "1d2e3f40-aaaa-bbbb-cccc-111122223333",
        "event_id": "64f2a7b0-dddd-eeee-ffff-444455556666",
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin phone openid profile email",
        "auth_time": now() - 30,
        "jti": "aaaaaaaa-1111-2222-3333-bbbbbbbbbbbb",
        "username": "alice",
    }
    claims.update(extra)
    return claims


def cognito_id_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "at_hash": "ZgfWbxGYkHW0S4Rbzhxd-A",
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "cognito:groups": ["orders-admins"],
        "email_verified": True,
        "cognito:username": "alice",
        "origin_jti": "1d2e3f40-aaaa-bbbb-cccc-111122223333",
        "aud": COGNITO_CLIENT,
        "event_id": "64f2a7b0-dddd-eeee-ffff-444455556666",
        "token_use": "id",
        "auth_time": now() - 30,
        "jti": "cccccccc-1111-2222-3333-dddddddddddd",
        "email": "alice@acme.example",
    }
    claims.update(extra)
    return claims


def test_cognito_access_token_checks_client_id_and_maps_groups_and_scope(
    cognito: LocalIssuer,
) -> None:
    p = verify(cognito.mint(cognito_access_claims()), cognito_config(cognito))
    assert p.subject == "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    assert p.kind == "user"
    assert p.groups == {"orders-admins", "everyone"}
    assert p.scopes == {"aws.cognito.signin.user.admin", "phone", "openid", "profile", "email"}
    assert dict(p.attributes) == {"username": ("alice",)}
    assert p.audience == ()


def test_cognito_client_credentials_access_token_is_a_service(cognito: LocalIssuer) -> None:
    claims = cognito_access_claims(
        sub=COGNITO_CLIENT,
        username=None,
        **{"cognito:groups": None},
        scope="orders/read orders/write",
        origin_jti=None,
        event_id=None,
        auth_time=None,
    )
    p = verify(cognito.mint(claims), cognito_config(cognito))
    assert p.subject == COGNITO_CLIENT
    assert p.kind == "service"
    assert p.scopes == {"orders/read", "orders/write"}
    assert p.groups == frozenset()


def test_cognito_access_token_for_another_app_client_is_refused(cognito: LocalIssuer) -> None:
    # An `aud` naming our client does not help: access tokens are judged by client_id.
    claims = cognito_access_claims(client_id="7other0app0client0id0000000", aud=COGNITO_CLIENT)
    exc = refused(cognito.mint(claims), cognito_config(cognito), errors.AudienceInvalid)
    assert exc.code == "audience_invalid"
    assert exc.claim == "client_id"


def test_cognito_access_token_without_client_id_is_refused(cognito: LocalIssuer) -> None:
    claims = cognito_access_claims(client_id=None)
    exc = refused(cognito.mint(claims), cognito_config(cognito), errors.AudienceInvalid)
    assert exc.claim == "client_id"


def test_cognito_id_token_is_refused_where_access_tokens_are_expected(
    cognito: LocalIssuer,
) -> None:
    exc = refused(cognito.mint(cognito_id_claims()), cognito_config(cognito), errors.ClaimInvalid)
    assert type(exc) is errors.ClaimInvalid
    assert exc.code == "claim_invalid"
    assert exc.claim == "token_use"


def test_cognito_token_without_token_use_is_refused(cognito: LocalIssuer) -> None:
    claims = cognito_id_claims(token_use=None)
    exc = refused(cognito.mint(claims), cognito_config(cognito), errors.ClaimMissing)
    assert exc.code == "claim_missing"
    assert exc.claim == "token_use"


def test_cognito_id_token_is_judged_by_aud(cognito: LocalIssuer) -> None:
    cfg = cognito_config(cognito, token_use=("id",))
    p = verify(cognito.mint(cognito_id_claims()), cfg)
    assert p.kind == "user"
    assert p.groups == {"orders-admins"}
    assert dict(p.attributes) == {
        "username": ("alice",),  # from cognito:username
        "email": ("alice@acme.example",),
    }
    assert p.audience == (COGNITO_CLIENT,)

    other = cognito_id_claims(aud="7other0app0client0id0000000", client_id=COGNITO_CLIENT)
    exc = refused(cognito.mint(other), cfg, errors.AudienceInvalid)
    assert exc.claim == "aud"


def test_cognito_access_token_refused_where_only_id_tokens_are_accepted(
    cognito: LocalIssuer,
) -> None:
    cfg = cognito_config(cognito, token_use=("id",))
    exc = refused(cognito.mint(cognito_access_claims()), cfg, errors.ClaimInvalid)
    assert exc.code == "claim_invalid"
    assert exc.claim == "token_use"


def test_async_verifier_maps_a_cognito_access_token(cognito: LocalIssuer) -> None:
    cfg = cognito_config(cognito)
    token = cognito.mint(cognito_access_claims())

    async def run() -> Principal:
        verifier = AsyncTokenVerifier([cfg])
        try:
            return await verifier.verify(token)
        finally:
            await verifier.aclose()

    p = asyncio.run(run())
    assert p.groups == {"orders-admins", "everyone"}
    assert p.attributes["username"] == ("alice",)


# --- Keycloak ----------------------------------------------------------------------------


@pytest.fixture
def keycloak(local_issuer_factory: Factory) -> LocalIssuer:
    return local_issuer_factory(path="/realms/acme")  # https://sso.acme.example/realms/acme


def keycloak_config(issuer: LocalIssuer, **settings: Any) -> IssuerConfig:
    return IssuerConfig(
        name="keycloak",
        issuer=issuer.url,
        audience=("orders-api",),
        preset=PRESETS["keycloak"],
        **settings,
    )


def keycloak_user_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "auth_time": now() - 120,
        "jti": "onrtac:4c7b1f3e-5a4e-4b2a-9f0e-1c2d3e4f5a6b",
        "aud": ["orders-api", "account"],
        "sub": "f:8c2a4a3e-0f6d-4a52-9a55-3a0c2b1d7e6f:alice",
        "typ": "Bearer",
        "azp": "orders-web",
        "sid": "5c1b6f0a-3d2e-4f1a-8b9c-0d1e2f3a4b5c",
        "acr": "1",
        "allowed-origins": ["https://orders.acme.example"],
        "realm_access": {
            "roles": ["offline_access", "uma_authorization", "default-roles-acme"],
        },
        "resource_access": {
            "orders-api": {"roles": ["orders-admin"]},
            "account": {"roles": ["manage-account", "view-profile"]},
        },
        "scope": "openid profile email",
        "email_verified": True,
        "name": "Alice Example",
        "preferred_username": "alice",
        "given_name": "Alice",
        "family_name": "Example",
        "email": "alice@acme.example",
        "groups": ["/engineering", "/engineering/backend"],
    }
    claims.update(extra)
    return claims


def test_keycloak_token_maps_realm_roles_and_only_our_clients_roles(
    keycloak: LocalIssuer,
) -> None:
    cfg = keycloak_config(keycloak, client_id="orders-api")
    p = verify(keycloak.mint(keycloak_user_claims()), cfg)
    assert p.subject == "f:8c2a4a3e-0f6d-4a52-9a55-3a0c2b1d7e6f:alice"
    assert p.kind == "user"
    assert p.roles == {
        "offline_access",
        "uma_authorization",
        "default-roles-acme",
        "orders-admin",
    }
    assert "manage-account" not in p.roles  # another client's roles stay out
    assert p.groups == {"/engineering", "/engineering/backend"}
    assert p.scopes == {"openid", "profile", "email"}
    assert dict(p.attributes) == {
        "username": ("alice",),
        "email": ("alice@acme.example",),
        "client": ("orders-web",),
    }
    assert p.audience == ("orders-api", "account")


@pytest.mark.parametrize("purpose", ["ID", "Refresh", "Logout", "Offline", "bearer"])
def test_keycloak_tokens_of_another_purpose_are_refused(
    keycloak: LocalIssuer, purpose: str
) -> None:
    # An ID token whose audience matches our client is still not an access token.
    cfg = keycloak_config(keycloak, client_id="orders-api")
    with pytest.raises(errors.TokenTypeInvalid):
        verify(keycloak.mint(keycloak_user_claims(typ=purpose)), cfg)
    claims = keycloak_user_claims()
    del claims["typ"]  # older servers send none: the other checks still apply
    assert verify(keycloak.mint(claims), cfg).subject.endswith(":alice")


def test_keycloak_without_client_id_maps_only_realm_roles(keycloak: LocalIssuer) -> None:
    p = verify(keycloak.mint(keycloak_user_claims()), keycloak_config(keycloak))
    assert p.roles == {"offline_access", "uma_authorization", "default-roles-acme"}


def test_keycloak_client_id_with_dots_finds_its_resource_access_roles(
    keycloak: LocalIssuer,
) -> None:
    claims = keycloak_user_claims(
        resource_access={"orders.api": {"roles": ["orders-reader"]}}, realm_access=None
    )
    cfg = keycloak_config(keycloak, client_id="orders.api")
    assert verify(keycloak.mint(claims), cfg).roles == {"orders-reader"}


def test_keycloak_service_account_token_is_a_service(keycloak: LocalIssuer) -> None:
    claims = {
        "aud": "orders-api",
        "sub": "f:8c2a4a3e-0f6d-4a52-9a55-3a0c2b1d7e6f:svc",
        "typ": "Bearer",
        "azp": "orders-sync",
        "realm_access": {"roles": ["default-roles-acme"]},
        "resource_access": {"orders-api": {"roles": ["orders-writer"]}},
        "scope": "profile email",
        "clientHost": "10.0.4.17",
        "preferred_username": "service-account-orders-sync",
        "clientAddress": "10.0.4.17",
        "client_id": "orders-sync",
    }
    cfg = keycloak_config(keycloak, client_id="orders-api")
    p = verify(keycloak.mint(claims), cfg)
    assert p.kind == "service"
    assert p.roles == {"default-roles-acme", "orders-writer"}
    assert p.attributes["client"] == ("orders-sync",)


# --- Auth0 -------------------------------------------------------------------------------

AUTH0_NS = "https://acme.example"


@pytest.fixture
def auth0(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    # https://acme.us.auth0.com/ — Auth0's issuer ends with a slash.
    issuer, iss = slash_issuer(local_issuer_factory)
    cfg = IssuerConfig(
        name="auth0",
        issuer=iss,
        audience=("https://api.acme.example",),
        preset=PRESETS["auth0"],
        namespace=AUTH0_NS,
    )
    return issuer, cfg


def test_auth0_user_token_maps_namespaced_claims_and_permissions(
    auth0: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = auth0
    claims = {
        f"{AUTH0_NS}/groups": ["engineering", "on-call"],
        f"{AUTH0_NS}/roles": ["orders-admin"],
        f"{AUTH0_NS}/email": "alice@acme.example",
        "iss": cfg.issuer,
        "sub": "auth0|64f1c0ffee0000000000beef",
        "aud": ["https://api.acme.example", f"{cfg.issuer}userinfo"],
        "scope": "openid profile email",
        "azp": "AbCdEf1234567890AbCdEf1234567890",
        "permissions": ["read:orders", "write:orders"],
    }
    p = verify(issuer.mint(claims), cfg)
    assert p.subject == "auth0|64f1c0ffee0000000000beef"
    assert p.kind == "user"
    assert p.groups == {"engineering", "on-call"}
    assert p.roles == {"orders-admin"}
    assert p.scopes == {"openid", "profile", "email", "read:orders", "write:orders"}
    assert dict(p.attributes) == {
        "email": ("alice@acme.example",),
        "client": ("AbCdEf1234567890AbCdEf1234567890",),
    }


def test_auth0_ignores_un_namespaced_groups(auth0: tuple[LocalIssuer, IssuerConfig]) -> None:
    issuer, cfg = auth0
    claims = {
        "iss": cfg.issuer,
        "aud": "https://api.acme.example",
        "sub": "auth0|64f1c0ffee0000000000beef",
        "groups": ["admins"],
        "email": "alice@acme.example",
    }
    p = verify(issuer.mint(claims), cfg)
    assert p.groups == frozenset()
    assert p.attributes["email"] == ("alice@acme.example",)  # plain email is a fallback


def test_auth0_client_credentials_token_is_a_service(
    auth0: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = auth0
    claims = {
        "iss": cfg.issuer,
        "sub": "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed@clients",
        "aud": "https://api.acme.example",
        "scope": "read:orders",
        "gty": "client-credentials",
        "azp": "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed",
        "permissions": ["read:orders"],
    }
    p = verify(issuer.mint(claims), cfg)
    assert p.subject == "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed@clients"
    assert p.kind == "service"
    assert p.scopes == {"read:orders"}


# --- GitHub Actions ----------------------------------------------------------------------


def github_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "jti": "6f5e4d3c-2b1a-4f0e-9d8c-7b6a5f4e3d2c",
        "sub": "repo:acme/checkout:environment:staging",
        "environment": "staging",
        "aud": "https://github.com/acme",
        "ref": "refs/heads/main",
        "sha": "d6f0a7e1c2b3a4958f7e6d5c4b3a29180f7e6d5c",
        "repository": "acme/checkout",
        "repository_owner": "acme",
        "actor_id": "1234567",
        "repository_visibility": "private",
        "repository_id": "456789012",
        "repository_owner_id": "9876543",
        "run_id": "7000000001",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "workflow": "Deploy",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_type": "branch",
        "workflow_ref": "acme/checkout/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_ref": "acme/platform/.github/workflows/deploy.yml@refs/tags/v3",
        "nbf": now() - 5,
    }
    claims.update(extra)
    return claims


@pytest.fixture
def github(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    issuer = local_issuer_factory()  # https://token.actions.githubusercontent.com
    cfg = IssuerConfig(
        name="github",
        issuer=issuer.url,
        audience=("https://github.com/acme",),
        preset=PRESETS["github-actions"],
    )
    return issuer, cfg


def test_github_actions_token_is_a_workload_with_repository_attributes(
    github: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = github
    headers = {"x5t": "ykNaY4qM_ta4k2TgZOCEYLkcYlA"}
    p = verify(issuer.mint(github_claims(), headers=headers), cfg)
    assert p.subject == "repo:acme/checkout:environment:staging"
    assert p.kind == "workload"
    assert p.groups == frozenset()
    assert p.roles == frozenset()
    assert p.scopes == frozenset()
    assert dict(p.attributes) == {
        "repository": ("acme/checkout",),
        "repository_owner": ("acme",),
        "repository_id": ("456789012",),
        "environment": ("staging",),
        "ref": ("refs/heads/main",),
        "ref_type": ("branch",),
        "workflow": ("Deploy",),
        "job_workflow_ref": ("acme/platform/.github/workflows/deploy.yml@refs/tags/v3",),
        "event_name": ("push",),
        "actor": ("octocat",),
        "runner_environment": ("github-hosted",),
    }
    assert p.claims["sha"] == "d6f0a7e1c2b3a4958f7e6d5c4b3a29180f7e6d5c"
    assert p.token_id == "6f5e4d3c-2b1a-4f0e-9d8c-7b6a5f4e3d2c"


def test_github_actions_pull_request_token_has_no_environment_attribute(
    github: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = github
    claims = github_claims(
        sub="repo:acme/checkout:pull_request",
        environment=None,
        ref="refs/pull/17/merge",
        event_name="pull_request",
        head_ref="feature/cart",
        base_ref="main",
    )
    p = verify(issuer.mint(claims), cfg)
    assert p.subject == "repo:acme/checkout:pull_request"
    assert "environment" not in p.attributes
    assert p.attributes["event_name"] == ("pull_request",)


def test_github_actions_refuses_anything_but_rs256(
    github: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = github
    exc = refused(issuer.mint(github_claims(), alg="ES256"), cfg, errors.AlgorithmNotAllowed)
    assert exc.code == "algorithm_not_allowed"


# --- GitLab CI ---------------------------------------------------------------------------


def test_gitlab_ci_token_is_a_workload_with_project_attributes(
    local_issuer_factory: Factory,
) -> None:
    issuer = local_issuer_factory()  # https://gitlab.com
    cfg = IssuerConfig(
        name="gitlab",
        issuer=issuer.url,
        audience=("https://vault.acme.example",),
        preset=PRESETS["gitlab-ci"],
        owners=("acme",),
    )
    claims = {
        "namespace_id": "72",
        "namespace_path": "acme/platform",
        "project_id": "20",
        "project_path": "acme/platform/billing",
        "user_id": "1",
        "user_login": "alice",
        "user_email": "alice@acme.example",
        "user_access_level": "maintainer",
        "pipeline_id": "574",
        "pipeline_source": "push",
        "job_id": "302",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "production",
        "environment_protected": "true",
        "deployment_tier": "production",
        "environment_action": "start",
        "runner_id": 1,
        "runner_environment": "gitlab-hosted",
        "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "project_visibility": "private",
        "ci_config_ref_uri": "gitlab.com/acme/platform/billing//.gitlab-ci.yml@refs/heads/main",
        "ci_config_sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "jti": "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b",
        "nbf": now() - 5,
        "sub": "project_path:acme/platform/billing:ref_type:branch:ref:main",
        "aud": "https://vault.acme.example",
    }
    p = verify(issuer.mint(claims), cfg)
    assert p.subject == "project_path:acme/platform/billing:ref_type:branch:ref:main"
    assert p.kind == "workload"
    assert p.groups == frozenset()
    assert dict(p.attributes) == {
        "namespace_path": ("acme/platform",),
        "project_path": ("acme/platform/billing",),
        "environment": ("production",),
        "environment_protected": ("true",),
        "ref": ("main",),
        "ref_type": ("branch",),
        "ref_protected": ("true",),
        "pipeline_source": ("push",),
        "user_login": ("alice",),
        "runner_environment": ("gitlab-hosted",),
    }


# --- Kubernetes service accounts ---------------------------------------------------------

EKS_PATH = "/id/EXAMPLED539D4633E53DE1B71EXAMPLE"


@pytest.fixture
def kubernetes(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    # https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE
    issuer = local_issuer_factory(path=EKS_PATH)
    cfg = IssuerConfig(
        name="eks",
        issuer=issuer.url,
        audience=("vault",),
        preset=PRESETS["kubernetes"],
    )
    return issuer, cfg


def k8s_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": ["vault"],
        "jti": "2a1e3f0c-7d4b-4e5a-9c8b-1f2e3d4c5b6a",
        "kubernetes.io": {
            "namespace": "payments",
            "node": {"name": "ip-10-0-1-23.eu-west-1.compute.internal", "uid": "node-uid"},
            "pod": {"name": "api-7d4b9c6f5-x2x9q", "uid": "6c0f8a1e-pod"},
            "serviceaccount": {"name": "api", "uid": "9b8a7c6d-sa"},
            "warnafter": now() + 60,
        },
        "nbf": now() - 5,
        "sub": "system:serviceaccount:payments:api",
    }
    claims.update(extra)
    return claims


def test_kubernetes_service_account_token_maps_namespace_account_and_pod(
    kubernetes: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = kubernetes
    p = verify(issuer.mint(k8s_claims(), headers={"typ": None}), cfg)
    assert p.subject == "system:serviceaccount:payments:api"
    assert p.kind == "workload"
    assert p.groups == frozenset()
    assert p.scopes == frozenset()
    assert dict(p.attributes) == {
        "namespace": ("payments",),
        "service_account": ("api",),
        "pod": ("api-7d4b9c6f5-x2x9q",),
    }
    assert p.audience == ("vault",)


def test_kubernetes_token_not_bound_to_a_pod_has_no_pod_attribute(
    kubernetes: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = kubernetes
    claims = k8s_claims()
    claims["kubernetes.io"] = {
        "namespace": "payments",
        "serviceaccount": {"name": "api", "uid": "9b8a7c6d-sa"},
    }
    p = verify(issuer.mint(claims), cfg)
    assert dict(p.attributes) == {"namespace": ("payments",), "service_account": ("api",)}


@pytest.mark.parametrize(
    "sub",
    [
        "system:node:ip-10-0-1-23.eu-west-1.compute.internal",
        "alice@acme.example",
        "serviceaccount:payments:api",
        "SYSTEM:SERVICEACCOUNT:payments:api",
    ],
)
def test_kubernetes_non_service_account_subject_is_refused(
    kubernetes: tuple[LocalIssuer, IssuerConfig], sub: str
) -> None:
    issuer, cfg = kubernetes
    exc = refused(issuer.mint(k8s_claims(sub=sub)), cfg, errors.ClaimInvalid)
    assert exc.code == "claim_invalid"
    assert exc.claim == "sub"


# --- SPIFFE JWT-SVID ---------------------------------------------------------------------


@pytest.fixture
def spiffe(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    issuer = local_issuer_factory(algorithms=("ES256", "RS256"))  # SPIRE OIDC provider
    cfg = IssuerConfig(
        name="spire",
        issuer=issuer.url,
        audience=("spiffe://example.org/ns/prod/sa/orders",),
        preset=PRESETS["spiffe"],
    )
    return issuer, cfg


def test_spiffe_jwt_svid_is_a_workload_named_by_its_spiffe_id(
    spiffe: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = spiffe
    claims = {
        "aud": ["spiffe://example.org/ns/prod/sa/orders"],
        "sub": "spiffe://example.org/ns/prod/sa/api",
    }
    p = verify(issuer.mint(claims, alg="ES256"), cfg)
    assert p.subject == "spiffe://example.org/ns/prod/sa/api"
    assert p.kind == "workload"
    assert p.groups == frozenset()
    assert p.roles == frozenset()
    assert p.scopes == frozenset()
    assert dict(p.attributes) == {}


@pytest.mark.parametrize(
    "sub",
    [
        "spiffe://example.org/9eebccd2-12bf-40a6-b262-65fe0487d453",
        "spiffe://k8s-west.example.com/ns/staging/sa/default",
        "spiffe://trust_domain.example.com/payments/web-fe",
        "spiffe://example.org/a.b/c_d/e-f",
    ],
)
def test_spiffe_accepts_valid_spiffe_ids(
    spiffe: tuple[LocalIssuer, IssuerConfig], sub: str
) -> None:
    issuer, cfg = spiffe
    aud = ["spiffe://example.org/ns/prod/sa/orders"]
    assert verify(issuer.mint({"aud": aud, "sub": sub}), cfg).subject == sub


@pytest.mark.parametrize(
    "sub",
    [
        pytest.param("https://example.org/ns/prod/sa/api", id="wrong-scheme"),
        pytest.param("spiffe://Example.org/ns/prod/sa/api", id="uppercase-trust-domain"),
        pytest.param("spiffe:///ns/prod/sa/api", id="empty-trust-domain"),
        pytest.param("spiffe://example.org/ns/prod/sa/api/", id="trailing-slash"),
        pytest.param("spiffe://example.org/ns//sa/api", id="empty-segment"),
        pytest.param("spiffe://example.org/ns/prod?sa=api", id="query"),
        pytest.param("spiffe://example.org/ns/prod#api", id="fragment"),
        pytest.param("spiffe://admin@example.org/ns/prod", id="userinfo"),
        pytest.param("spiffe://example.org:8443/ns/prod", id="port"),
        pytest.param("spiffe://example.org/ns/prod/../admin", id="dot-dot-segment"),
        pytest.param("spiffe://example.org/ns/./prod", id="dot-segment"),
        pytest.param("spiffe://example.org/ns/prod%2Fadmin", id="percent-encoded"),
        pytest.param("spiffe://example.org/ns/prod/sa/api@admin", id="char-outside-set"),
        pytest.param("spiffe://example.org/ns/prod/sa/api:1", id="colon-in-path"),
    ],
)
def test_spiffe_malformed_spiffe_id_is_refused(
    spiffe: tuple[LocalIssuer, IssuerConfig], sub: str
) -> None:
    # SPIFFE-ID spec §2.1/§2.2: trust domain [a-z0-9.-_]; path segments [a-zA-Z0-9.-_],
    # no empty or dot segments, no percent-encoding, no trailing '/', no query/fragment.
    issuer, cfg = spiffe
    claims = {"aud": ["spiffe://example.org/ns/prod/sa/orders"], "sub": sub}
    exc = refused(issuer.mint(claims, alg="ES256"), cfg, errors.ClaimInvalid)
    assert exc.code == "claim_invalid"
    assert exc.claim == "sub"


# --- Google IAP --------------------------------------------------------------------------

IAP_AUDIENCE = "/projects/123/global/backendServices/456"


@pytest.fixture
def iap(local_issuer_factory: Factory) -> LocalIssuer:
    # iss https://cloud.google.com/iap; keys from https://www.gstatic.com/iap/verify/...
    return local_issuer_factory(algorithms=("ES256",), path="/iap")


def iap_config(issuer: LocalIssuer, **settings: Any) -> IssuerConfig:
    return IssuerConfig(
        name="iap",
        issuer=issuer.url,
        audience=(IAP_AUDIENCE,),
        jwks_uri=issuer.jwks_uri,
        preset=PRESETS["google-iap"],
        **settings,
    )


def iap_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": IAP_AUDIENCE,
        "azp": IAP_AUDIENCE,
        "email": "alice@acme.example",
        "google": {"access_levels": ["accessPolicies/1234/accessLevels/corp_devices"]},
        "hd": "acme.example",
        "identity_source": "GOOGLE",
        "sub": "accounts.google.com:1234",
    }
    claims.update(extra)
    return claims


def test_google_iap_assertion_from_its_header_maps_email_and_domain(iap: LocalIssuer) -> None:
    cfg = iap_config(iap)
    token = iap.mint(iap_claims(), alg="ES256")
    headers = [(b"x-goog-iap-jwt-assertion", token.encode()), (b"host", b"orders.acme.example")]
    extracted = extract_from_headers(headers, cfg.token_source)
    assert extracted == token
    p = verify(extracted, cfg)
    assert p.subject == "accounts.google.com:1234"
    assert p.kind == "user"
    assert p.groups == frozenset()
    assert dict(p.attributes) == {
        "email": ("alice@acme.example",),
        "hosted_domain": ("acme.example",),
    }
    assert p.audience == (IAP_AUDIENCE,)
    assert iap.requests["/jwks.json"] == 1
    assert iap.requests[f"{iap.url[len(iap.base_url) :]}/.well-known/openid-configuration"] == 0


def test_google_iap_ignores_a_bearer_token(iap: LocalIssuer) -> None:
    token = iap.mint(iap_claims(), alg="ES256")
    with pytest.raises(errors.TokenMissing):
        extract_from_headers(
            [(b"authorization", f"Bearer {token}".encode())], iap_config(iap).token_source
        )


def test_google_iap_enforces_hosted_domains(iap: LocalIssuer) -> None:
    cfg = iap_config(iap, hosted_domains=("acme.example",))
    assert verify(iap.mint(iap_claims(), alg="ES256"), cfg).subject == "accounts.google.com:1234"
    outsider = iap_claims(hd=None, email="mallory@gmail.com", sub="accounts.google.com:999")
    exc = refused(iap.mint(outsider, alg="ES256"), cfg, errors.ClaimInvalid)
    assert exc.claim == "hd"


def test_google_iap_refuses_rs256(local_issuer_factory: Factory) -> None:
    issuer = local_issuer_factory(algorithms=("ES256", "RS256"), path="/iap")
    exc = refused(issuer.mint(iap_claims()), iap_config(issuer), errors.AlgorithmNotAllowed)
    assert exc.code == "algorithm_not_allowed"


# --- AWS ALB -----------------------------------------------------------------------------

ALB_ARN = (
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:"
    "loadbalancer/app/orders-alb/50dc6c495c0c9188"
)
OTHER_ARN = (
    "arn:aws:elasticloadbalancing:eu-west-1:210987654321:loadbalancer/app/evil-alb/0123456789abcdef"
)
ALB_CLIENT = "3n4b5urk1ft4fl3mg5e62d9ado"


@pytest.fixture
def alb(local_issuer_factory: Factory) -> LocalIssuer:
    # The `iss` is the IdP behind the ALB; keys come from the regional per-kid PEM URL.
    return local_issuer_factory(algorithms=("ES256",), path=f"/{COGNITO_POOL}")


def alb_config(issuer: LocalIssuer, **settings: Any) -> IssuerConfig:
    return IssuerConfig(
        name="alb",
        issuer=issuer.url,
        preset=PRESETS["aws-alb"],
        keys_url=issuer.pem_url,
        signers=(ALB_ARN,),
        **settings,
    )


def alb_token(issuer: LocalIssuer, **header: Any) -> str:
    exp = now() + 120
    full_header = {"signer": ALB_ARN, "iss": issuer.url, "client": ALB_CLIENT, "exp": exp}
    full_header.update(header)
    full_header = {k: v for k, v in full_header.items() if v is not None}
    payload = {
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "email_verified": "true",
        "email": "alice@acme.example",
        "username": "alice",
        "groups": ["orders-admins"],
        "exp": exp,
        "iss": issuer.url,
    }
    return padded_token(issuer, full_header, payload, "ES256")


def test_aws_alb_padded_token_verifies_with_the_per_kid_pem_key(alb: LocalIssuer) -> None:
    cfg = alb_config(alb)
    token = alb_token(alb)
    assert "=" in token  # ALB spells base64url with padding
    headers = [(b"x-amzn-oidc-data", token.encode()), (b"x-amzn-oidc-identity", b"aaaa")]
    p = verify(extract_from_headers(headers, cfg.token_source), cfg)
    assert p.subject == "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    assert p.kind == "user"
    assert p.groups == {"orders-admins"}
    assert p.scopes == frozenset()
    assert dict(p.attributes) == {"email": ("alice@acme.example",)}
    assert p.audience == ()
    kid = alb.key_for("ES256").kid
    assert alb.requests[f"/pem/{kid}"] == 1
    assert alb.requests["/jwks.json"] == 0


def test_aws_alb_checks_the_client_when_configured(alb: LocalIssuer) -> None:
    cfg = alb_config(alb, client_id=ALB_CLIENT)
    assert verify(alb_token(alb), cfg).subject == "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    exc = refused(alb_token(alb, client="another-client"), cfg, errors.SignerInvalid)
    assert exc.code == "signer_invalid"
    assert exc.claim == "client"


@pytest.mark.parametrize(
    "signer",
    [
        pytest.param(OTHER_ARN, id="another-load-balancer"),
        pytest.param(None, id="missing"),
        pytest.param(ALB_ARN.upper(), id="case-variant"),
        pytest.param([ALB_ARN], id="not-a-string"),
    ],
)
def test_aws_alb_token_from_an_unconfigured_signer_is_refused(
    alb: LocalIssuer, signer: Any
) -> None:
    exc = refused(alb_token(alb, signer=signer), alb_config(alb), errors.SignerInvalid)
    assert exc.code == "signer_invalid"
    assert exc.claim == "signer"


def test_aws_alb_requires_signers_and_keys_url() -> None:
    base = {"name": "alb", "issuer": "https://idp.example", "preset": "aws-alb"}
    with pytest.raises(errors.ConfigError) as info:
        IssuerConfig.from_mapping({**base, "keys_url": "https://keys.example/{kid}"})
    assert info.value.key == "signers"
    with pytest.raises(errors.ConfigError) as info:
        IssuerConfig.from_mapping({**base, "signers": ALB_ARN})
    assert info.value.key == "keys_url"


def test_padding_is_refused_for_issuers_other_than_aws_alb(
    alb: LocalIssuer, local_issuer_factory: Factory
) -> None:
    other = local_issuer_factory()
    generic = IssuerConfig(name="generic", issuer=other.url, audience=(other.audience,))
    claims = other.claims(sub="alice")
    token = padded_token(other, {"typ": "JWT"}, claims, "RS256")
    assert "=" in token
    # The same verifier trusts an ALB: padding is judged per issuer, not per verifier.
    exc = refused(token, (alb_config(alb), generic), errors.TokenMalformed)
    assert exc.code == "token_malformed"
    assert exc.issuer == "generic"
    # The unpadded spelling of the same claims passes.
    assert verify(other.mint(claims), generic).subject == "alice"


# --- Cloudflare Access -------------------------------------------------------------------

CF_AUD = "32eafc7626e974616deaf0dc3ce63d7bcbed58a2731e84d06bc3cdf1b53c4228"


@pytest.fixture
def cloudflare(local_issuer_factory: Factory) -> tuple[LocalIssuer, IssuerConfig]:
    # https://acme.cloudflareaccess.com, keys at /cdn-cgi/access/certs
    issuer = local_issuer_factory()
    cfg = IssuerConfig(
        name="cloudflare",
        issuer=issuer.url,
        audience=(CF_AUD,),
        jwks_uri=issuer.jwks_uri,
        preset=PRESETS["cloudflare-access"],
    )
    return issuer, cfg


def test_cloudflare_access_user_assertion_maps_email_and_country(
    cloudflare: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = cloudflare
    claims = {
        "aud": [CF_AUD],
        "email": "alice@acme.example",
        "nbf": now() - 5,
        "type": "app",
        "identity_nonce": "6ei69kawdKzMIAPF",
        "sub": "7335d417-61da-459d-899c-0a01c76a2f94",
        "country": "DE",
    }
    token = issuer.mint(claims)
    headers = [(b"Cf-Access-Jwt-Assertion", token.encode())]
    p = verify(extract_from_headers(headers, cfg.token_source), cfg)
    assert p.subject == "7335d417-61da-459d-899c-0a01c76a2f94"
    assert p.kind == "user"
    assert p.groups == frozenset()
    assert dict(p.attributes) == {"email": ("alice@acme.example",), "country": ("DE",)}
    assert p.audience == (CF_AUD,)


def test_cloudflare_access_service_token_with_empty_sub_is_a_service(
    cloudflare: tuple[LocalIssuer, IssuerConfig],
) -> None:
    # Cloudflare service tokens: empty `sub`, the client id in `common_name`.
    issuer, cfg = cloudflare
    claims = {
        "aud": [CF_AUD],
        "common_name": "88bf3b6d86161464f6509f7219099e57.access",
        "nbf": now() - 5,
        "sub": "",
        "type": "app",
        "identity_nonce": "7fj70lbxeLaNJBQG",
    }
    p = verify(issuer.mint(claims), cfg)
    assert p.kind == "service"
    assert p.subject == "88bf3b6d86161464f6509f7219099e57.access"
    assert "email" not in p.attributes


def test_cloudflare_access_refuses_a_token_for_another_application(
    cloudflare: tuple[LocalIssuer, IssuerConfig],
) -> None:
    issuer, cfg = cloudflare
    claims = {"aud": ["0" * 64], "sub": "7335d417-61da-459d-899c-0a01c76a2f94", "type": "app"}
    exc = refused(issuer.mint(claims), cfg, errors.AudienceInvalid)
    assert exc.code == "audience_invalid"


# --- Pomerium ----------------------------------------------------------------------------

POMERIUM_HOST = "orders.corp.acme.example"


def pomerium_claims(iss: str, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": POMERIUM_HOST,
        "iss": iss,
        "jti": "f1e2d3c4-b5a6-4789-8a7b-6c5d4e3f2a1b",
        "sub": "00u1a2b3c4ALICE",
        "user": "00u1a2b3c4ALICE",
        "email": "alice@acme.example",
        "groups": ["00g1engineering", "engineering"],
        "name": "Alice Example",
        "sid": "3f2e1d0c-session",
    }
    claims.update(extra)
    return claims


def test_pomerium_assertion_maps_email_groups_and_user(local_issuer_factory: Factory) -> None:
    # jwt_issuer_format: uri — the issuer is a URL; keys at /.well-known/pomerium/jwks.json
    issuer = local_issuer_factory(algorithms=("ES256",))
    cfg = IssuerConfig(
        name="pomerium",
        issuer=issuer.url,
        audience=(POMERIUM_HOST,),
        jwks_uri=issuer.jwks_uri,
        preset=PRESETS["pomerium"],
    )
    token = issuer.mint(pomerium_claims(issuer.url), alg="ES256")
    headers = [(b"x-pomerium-jwt-assertion", token.encode())]
    p = verify(extract_from_headers(headers, cfg.token_source), cfg)
    assert p.subject == "00u1a2b3c4ALICE"
    assert p.kind == "user"
    assert p.groups == {"00g1engineering", "engineering"}
    assert p.scopes == frozenset()
    assert dict(p.attributes) == {
        "email": ("alice@acme.example",),
        "user": ("00u1a2b3c4ALICE",),
    }


def test_pomerium_default_host_only_issuer_can_be_trusted(local_issuer_factory: Factory) -> None:
    # Pomerium's default `jwt_issuer_format` is `hostOnly`: iss is the route's host name,
    # not a URL. Its JWKS is fetched from an explicit URL, so no discovery is needed.
    issuer = local_issuer_factory(algorithms=("ES256",))
    cfg = IssuerConfig(
        name="pomerium",
        issuer=POMERIUM_HOST,
        audience=(POMERIUM_HOST,),
        jwks_uri=issuer.jwks_uri,
        preset=PRESETS["pomerium"],
    )
    token = issuer.mint(pomerium_claims(POMERIUM_HOST), alg="ES256")
    assert verify(token, cfg).subject == "00u1a2b3c4ALICE"


# --- generic OIDC and per-issuer claim overrides -----------------------------------------


def test_generic_preset_reads_sub_groups_and_scope(local_issuer_factory: Factory) -> None:
    issuer = local_issuer_factory(path="/dex")
    cfg = IssuerConfig(name="dex", issuer=issuer.url, audience=("orders-api",))
    claims = {
        "aud": "orders-api",
        "sub": "CgVhbGljZRIFbG9jYWw",
        "groups": ["admins", "developers"],
        "scope": "openid groups",
        "scp": ["orders.read"],
        "email": "alice@acme.example",
        "roles": ["not-mapped-by-generic"],
    }
    p = verify(issuer.mint(claims), cfg)
    assert cfg.preset is PRESETS["generic"]
    assert p.subject == "CgVhbGljZRIFbG9jYWw"
    assert p.kind == "user"
    assert p.groups == {"admins", "developers"}
    assert p.roles == frozenset()
    assert p.scopes == {"openid", "groups", "orders.read"}
    assert dict(p.attributes) == {}


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ({"client_id": "orders-sync", "sub": "orders-sync"}, "service"),  # RFC 9068 §2.2
        ({"client_id": "orders-sync", "sub": "alice"}, "user"),  # a user via that client
        ({"client_id": "orders-sync", "sub": "orders-sync", "auth_time": 1}, "user"),
        ({"client_id": "orders-sync", "sub": "orders-sync", "email": "a@x"}, "user"),
        ({"sub": "orders-sync"}, "user"),
    ],
)
def test_generic_preset_tells_a_client_credentials_token_from_a_user(
    local_issuer_factory: Factory, extra: dict[str, Any], kind: str
) -> None:
    issuer = local_issuer_factory(path="/as")
    cfg = IssuerConfig(name="as", issuer=issuer.url, audience=("orders-api",))
    token = issuer.mint({"aud": "orders-api", "scope": "orders:sync", **extra})
    assert verify(token, cfg).kind == kind


@pytest.mark.parametrize("client_id", [["orders-sync"], 7, True, {"id": "orders-sync"}])
def test_generic_preset_refuses_a_client_id_that_is_not_one_string(
    local_issuer_factory: Factory, client_id: Any
) -> None:
    issuer = local_issuer_factory(path="/as")
    cfg = IssuerConfig(name="as", issuer=issuer.url, audience=("orders-api",))
    token = issuer.mint({"aud": "orders-api", "sub": "orders-sync", "client_id": client_id})
    exc = refused(token, cfg, errors.ClaimTypeInvalid)
    assert exc.claim == "client_id"


def test_claim_overrides_read_delimited_groups_from_a_nested_path(
    local_issuer_factory: Factory,
) -> None:
    issuer = local_issuer_factory(path="/legacy")
    cfg = IssuerConfig.from_mapping(
        {
            "name": "legacy",
            "issuer": issuer.url,
            "audience": "orders-api",
            "jwks_uri": issuer.jwks_uri,
            "claims": {
                "subject": ["employee_id", "sub"],
                "groups": "custom.path",
                "roles": "custom.roles",
                "delimiter": ",",
                "attributes": {"department": "org.department"},
            },
        }
    )
    claims = {
        "aud": "orders-api",
        "employee_id": "E-1042",
        "custom": {"path": "admins, billing,,ops ", "roles": "reader,writer"},
        "org": {"department": "Finance"},
        "scope": "orders.read orders.write",
        "groups": ["ignored-default-path"],
    }
    p = verify(issuer.mint(claims), cfg)
    assert p.subject == "E-1042"
    assert p.groups == {"admins", "billing", "ops"}
    assert p.roles == {"reader", "writer"}
    assert p.scopes == {"orders.read", "orders.write"}  # scopes split on spaces, not ','
    assert dict(p.attributes) == {"department": ("Finance",)}


def test_claim_overrides_keep_the_rest_of_the_presets_layout(
    keycloak: LocalIssuer,
) -> None:
    cfg = IssuerConfig.from_mapping(
        {
            "name": "keycloak",
            "issuer": keycloak.url,
            "audience": "orders-api",
            "preset": "keycloak",
            "client_id": "orders-api",
            "claims": {"groups": "custom.path", "delimiter": ","},
        }
    )
    claims = keycloak_user_claims(custom={"path": "team-a,team-b"})
    p = verify(keycloak.mint(claims), cfg)
    assert p.groups == {"team-a", "team-b"}  # the override, not Keycloak's `groups`
    assert "orders-admin" in p.roles  # the preset's {client_id} role path still applies
    assert p.kind == "user"
    assert p.attributes["username"] == ("alice",)


@pytest.mark.parametrize("groups", ["sales-east,analysts", "sales-east", ""])
@pytest.mark.parametrize("path", ["groups", "roles"])
def test_a_string_where_a_list_is_expected_is_refused_naming_the_settings(
    local_issuer_factory: Factory, groups: str, path: str
) -> None:
    # Read as one value, "sales-east,analysts" was a group nobody is bound to: a bare 403.
    issuer = local_issuer_factory()
    cfg = IssuerConfig.from_mapping(
        {
            "name": "local",
            "issuer": issuer.url,
            "audience": "orders-api",
            "claims": {"groups": "groups", "roles": "roles"},
        }
    )
    exc = refused(issuer.mint({"aud": "orders-api", path: groups}), cfg, errors.ClaimNotList)
    assert (exc.code, exc.claim, exc.status, exc.issuer) == ("claim_not_list", path, 401, "local")
    assert "claims.delimiter" in exc.message and "claims.allow_string" in exc.message
    if groups:
        assert groups not in exc.message  # the value is never echoed


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({"delimiter": ","}, {"sales-east", "analysts"}, id="delimiter"),
        pytest.param({"allow_string": True}, {"sales-east,analysts"}, id="allow-string"),
        pytest.param(
            {"allow_string": True, "delimiter": ","}, {"sales-east", "analysts"}, id="both"
        ),
    ],
)
def test_a_string_claim_is_read_only_when_the_issuer_says_how(
    local_issuer_factory: Factory, settings: dict[str, Any], expected: set[str]
) -> None:
    issuer = local_issuer_factory()
    cfg = IssuerConfig.from_mapping(
        {"name": "local", "issuer": issuer.url, "audience": "orders-api", "claims": settings}
    )
    p = verify(issuer.mint({"aud": "orders-api", "groups": "sales-east,analysts"}), cfg)
    assert p.groups == expected
    assert verify(issuer.mint({"aud": "orders-api", "groups": ["a", "b"]}), cfg).groups == {
        "a",
        "b",
    }


def test_allow_string_must_be_a_boolean() -> None:
    with pytest.raises(errors.ConfigError, match="allow_string"):
        IssuerConfig.from_mapping(
            {
                "name": "x",
                "issuer": "https://idp.example",
                "audience": "a",
                "claims": {"allow_string": "yes"},
            }
        )


def test_only_presets_for_issuers_that_send_lone_strings_allow_them() -> None:
    # Opting in is a per-preset decision, visible here: every other preset is strict.
    allowing = {name for name, preset in PRESETS.items() if preset.claims.allow_string}
    assert allowing == {"aws-alb"}


def test_aws_alb_reads_a_lone_group_string_as_one_group(alb: LocalIssuer) -> None:
    exp = now() + 120
    header = {"signer": ALB_ARN, "iss": alb.url, "client": ALB_CLIENT, "exp": exp}
    payload = {"sub": "u-1", "groups": "orders-admins", "exp": exp, "iss": alb.url}
    p = verify(padded_token(alb, header, payload, "ES256"), alb_config(alb))
    assert p.groups == {"orders-admins"}


@pytest.mark.parametrize(
    ("preset", "settings", "claims", "claim", "alg"),
    [
        pytest.param("okta", {}, {"groups": ["Everyone", 42]}, "groups", "RS256", id="okta"),
        pytest.param(
            "entra",
            {},
            {"oid": ALICE_OID, "roles": [{"id": "r1", "value": "Orders.Admin"}]},
            "roles",
            "RS256",
            id="entra-roles",
        ),
        pytest.param(
            "cognito",
            {},
            {
                "aud": None,
                "token_use": "access",
                "client_id": "api://local",
                "username": "alice",
                "cognito:groups": [1, 2],
            },
            "cognito:groups",
            "RS256",
            id="cognito",
        ),
        pytest.param(
            "keycloak",
            {"client_id": "orders-api"},
            {"resource_access": {"orders-api": {"roles": [None]}}},
            "resource_access.orders-api.roles",
            "RS256",
            id="keycloak",
        ),
        pytest.param(
            "auth0",
            {"namespace": AUTH0_NS},
            {f"{AUTH0_NS}/groups": [{"name": "engineering"}]},
            f"{AUTH0_NS}/groups",
            "RS256",
            id="auth0",
        ),
        pytest.param(
            "generic", {}, {"groups": {"admins": True}}, "groups", "RS256", id="groups-object"
        ),
        pytest.param("generic", {}, {"groups": [True]}, "groups", "RS256", id="groups-bools"),
        pytest.param("generic", {}, {"scope": 7}, "scope", "RS256", id="scope-number"),
        pytest.param(
            "github-actions",
            {"owners": ("acme",)},
            {"environment": {"name": "prod"}, "repository_owner": "acme"},
            "environment",
            "RS256",
            id="attribute-object",
        ),
        pytest.param(
            "kubernetes",
            {},
            {"sub": "system:serviceaccount:a:b", "kubernetes.io": {"namespace": 1.5}},
            "kubernetes.io.namespace",
            "RS256",
            id="attribute-float",
        ),
        pytest.param("pomerium", {}, {"groups": [["nested"]]}, "groups", "ES256", id="pomerium"),
    ],
)
def test_wrongly_shaped_claims_are_a_mapping_error_not_a_crash(
    local_issuer: LocalIssuer,
    preset: str,
    settings: dict[str, Any],
    claims: dict[str, Any],
    claim: str,
    alg: str,
) -> None:
    cfg = local_issuer.issuer_config(
        preset, preset=PRESETS[preset], jwks_uri=local_issuer.jwks_uri, **settings
    )
    exc = refused(local_issuer.mint(claims, alg=alg), cfg, errors.ClaimMappingError)
    assert type(exc) is errors.ClaimMappingError
    assert exc.code == "claim_mapping_invalid"
    assert exc.claim == claim
    assert exc.status == 401


def test_github_actions_refuses_workflows_of_other_owners(
    github: tuple[LocalIssuer, IssuerConfig],
) -> None:
    # Any workflow can ask GitHub for a token with our audience; only the owner claim
    # tells our organisation's workflows from everyone else's.
    issuer, cfg = github
    base = {"aud": "https://github.com/acme", "sub": "repo:evil/x:ref:refs/heads/main"}
    for owner in ("evil-org", None, ["acme"]):
        exc = refused(issuer.mint({**base, "repository_owner": owner}), cfg, errors.ClaimInvalid)
        assert exc.claim == "repository_owner"
    ok = verify(issuer.mint({**base, "repository_owner": "ACME"}), cfg)
    assert ok.kind == "workload"


def test_github_actions_owner_comes_from_the_default_audience_or_config() -> None:
    derived = IssuerConfig(
        name="gh",
        issuer="https://token.actions.githubusercontent.com",
        audience=("https://github.com/acme",),
        preset=PRESETS["github-actions"],
    )
    assert derived.preset.owners is not None and derived.preset.owners(derived) == ("acme",)
    with pytest.raises(errors.ConfigError, match="owners"):
        IssuerConfig(
            name="gh",
            issuer="https://token.actions.githubusercontent.com",
            audience=("sts.amazonaws.com",),
            preset=PRESETS["github-actions"],
        )


def test_gitlab_ci_refuses_other_namespaces(local_issuer_factory: Factory) -> None:
    issuer = local_issuer_factory()
    cfg = IssuerConfig(
        name="gitlab",
        issuer=issuer.url,
        audience=("https://vault.acme.example",),
        preset=PRESETS["gitlab-ci"],
        owners=("acme",),
    )
    base = {"aud": "https://vault.acme.example", "sub": "project_path:x/y:ref_type:branch:ref:main"}
    assert verify(issuer.mint({**base, "namespace_path": "acme/platform"}), cfg)
    assert verify(issuer.mint({**base, "namespace_path": "acme"}), cfg)
    for path in ("acmecorp/platform", "evil/acme", None):
        exc = refused(issuer.mint({**base, "namespace_path": path}), cfg, errors.ClaimInvalid)
        assert exc.claim == "namespace_path"
    with pytest.raises(errors.ConfigError, match="owners"):
        IssuerConfig(
            name="gl", issuer="https://gitlab.com", audience=("a",), preset=PRESETS["gitlab-ci"]
        )
