"""Verification (tokens/verify.py) under attack, one class of RFC 8725 (JWT Best Current
Practices) after another.

Every token here is signed by a real key of a real LocalIssuer served over loopback, so
a refusal proves the rule fired, not that the key was missing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from iamscope import IAMScope, IAMScopeMiddleware, IAMScopeWSGIMiddleware, errors
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from iamscope.tokens import IssuerConfig, TokenVerifier
from iamscope.tokens.verify import MAX_NUMERIC_DATE, MIN_NUMERIC_DATE, OTHER_PURPOSE_TYPES
from tests.conftest import FakeClock

Verify = Callable[[str], Any]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw(
    issuer: LocalIssuer,
    header: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    alg: str = "RS256",
) -> str:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return issuer.sign_raw(h, p, key=issuer.key_for(alg), alg=alg)


def header_for(issuer: LocalIssuer, alg: str = "RS256", **extra: Any) -> dict[str, Any]:
    return {"alg": alg, "typ": "JWT", "kid": issuer.key_for(alg).kid, **extra}


@pytest.fixture
def verifier(local_issuer: LocalIssuer) -> TokenVerifier:
    return TokenVerifier([local_issuer.issuer_config()])


@pytest.fixture
def verify(verifier: TokenVerifier) -> Verify:
    return verifier.verify


def refused(verify: Verify, token: str, error: type[errors.IAMScopeError], code: str) -> None:
    with pytest.raises(error) as info:
        verify(token)
    assert info.value.code == code


@pytest.fixture
def engine(local_issuer: LocalIssuer) -> Iterator[IAMScope]:
    policy = PolicyStore({"version": "1", "roles": {}, "bindings": []})
    iam = IAMScope([local_issuer.issuer_config()], policy, audit=ListSink(), hash_key=b"k" * 32)
    yield iam
    iam.close()


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def asgi_answer(engine: IAMScope, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
    """The real ASGI middleware's answer to raw header bytes (non-ASCII ones included)."""

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=IAMScopeMiddleware(_ok, engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            request = client.build_request("GET", "/")
            request.headers = httpx.Headers(headers)
            return await client.send(request)

    return asyncio.run(run())


def wsgi_answer(engine: IAMScope, authorization: str) -> tuple[str, dict[str, Any]]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_AUTHORIZATION": authorization}
    seen: list[str] = []

    def ok(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    app = IAMScopeWSGIMiddleware(ok, engine)
    body = b"".join(app(environ, lambda status, headers, exc_info=None: seen.append(status)))
    return seen[0], json.loads(body) if not seen[0].startswith("200") else {}


def test_a_well_formed_token_passes(local_issuer: LocalIssuer, verify: Verify) -> None:
    principal = verify(local_issuer.mint(sub="alice"))
    assert principal.subject == "alice"
    assert principal.issuer == "local"


# --- RFC 8725 §2.1 / §3.1: algorithm verification --------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_alg_none_is_refused_in_every_spelling(
    local_issuer: LocalIssuer, verify: Verify, alg: str, signature: str
) -> None:
    header = b64(json.dumps({"alg": alg}).encode())
    token = f"{header}.{b64(json.dumps(local_issuer.claims()).encode())}.{signature}"
    refused(verify, token, errors.TokenUnsupported, "token_unsupported")


def test_empty_signature_is_an_unsigned_token(local_issuer: LocalIssuer, verify: Verify) -> None:
    head, body, _ = local_issuer.mint().split(".")
    refused(verify, f"{head}.{body}.", errors.TokenUnsupported, "token_unsupported")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_is_refused(
    local_issuer: LocalIssuer, verify: Verify, alg: str
) -> None:
    # The classic confusion: the attacker signs with HMAC, using the public key as secret.
    key = local_issuer.key_for("RS256")
    header = {"alg": alg, "typ": "JWT", "kid": key.kid}
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(local_issuer.claims()).encode())}"
    )
    digest = getattr(hashlib, "sha" + alg[2:])
    for secret in (key.public_pem, json.dumps(key.public_jwk).encode()):
        mac = hmac.new(secret, signing_input.encode(), digest).digest()
        refused(
            verify,
            f"{signing_input}.{b64(mac)}",
            errors.AlgorithmNotAllowed,
            "algorithm_not_allowed",
        )


def test_algorithm_outside_the_issuers_allow_list_is_refused(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config(algorithms=("ES256",))])
    assert verifier.verify(local_issuer.mint(alg="ES256")).subject == "user-1"
    refused(
        verifier.verify,
        local_issuer.mint(alg="RS256"),
        errors.AlgorithmNotAllowed,
        "algorithm_not_allowed",
    )


def test_alg_that_does_not_fit_the_key_type_is_refused(
    local_issuer: LocalIssuer, verify: Verify
) -> None:
    # kid of the RSA key, but the header claims ES256 and an EC key signed it.
    token = raw(
        local_issuer,
        header_for(local_issuer, "ES256", kid=local_issuer.key_for("RS256").kid),
        local_issuer.claims(),
        alg="ES256",
    )
    refused(verify, token, errors.AlgorithmNotAllowed, "algorithm_not_allowed")


def test_alg_must_agree_with_the_jwks_declared_alg(
    local_issuer: LocalIssuer, verify: Verify
) -> None:
    # The JWK says RS256; the same RSA key signing PS256 must not pass.
    rsa_key = local_issuer.key_for("RS256")
    token = local_issuer.sign_raw(
        json.dumps({"alg": "PS256", "kid": rsa_key.kid}).encode(),
        json.dumps(local_issuer.claims()).encode(),
        key=rsa_key,
        alg="PS256",
    )
    refused(verify, token, errors.AlgorithmNotAllowed, "algorithm_not_allowed")


def test_hmac_algorithms_cannot_be_configured() -> None:
    with pytest.raises(errors.ConfigError, match="HMAC"):
        IssuerConfig(name="x", issuer="https://x.example", audience=("a",), algorithms=("HS256",))
    with pytest.raises(errors.ConfigError):
        IssuerConfig(name="x", issuer="https://x.example", audience=("a",), algorithms=("none",))


# --- §3.10: do not trust received claims — keys never come from the token ---------------


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
def test_key_carrying_headers_are_refused_and_never_fetched(
    local_issuer_factory: Callable[..., LocalIssuer], member: str
) -> None:
    issuer = local_issuer_factory()
    attacker = local_issuer_factory()
    verifier = TokenVerifier([issuer.issuer_config()])
    values = {
        "jwk": attacker.key_for("RS256").public_jwk,
        "jku": attacker.jwks_uri,
        "x5u": attacker.jwks_uri,
        "x5c": ["MIIB"],
    }
    token = attacker.mint(iss=issuer.url, aud=issuer.audience, headers={member: values[member]})
    refused(verifier.verify, token, errors.HeaderInvalid, "header_invalid")
    assert sum(attacker.requests.values()) == 0


def test_unknown_critical_extension_is_refused(local_issuer: LocalIssuer, verify: Verify) -> None:
    for crit in (["exp"], ["b64"], ["http://example.com/ext"], []):
        token = local_issuer.mint(headers={"crit": crit, "http://example.com/ext": True})
        refused(verify, token, errors.HeaderInvalid, "header_invalid")


@pytest.mark.parametrize("member", [{"b64": False}, {"zip": "DEF"}, {"enc": "A256GCM"}])
def test_payload_altering_headers_are_refused(
    local_issuer: LocalIssuer, verify: Verify, member: dict[str, Any]
) -> None:
    with pytest.raises((errors.HeaderInvalid, errors.TokenUnsupported)):
        verify(local_issuer.mint(headers=member))


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "' OR '1'='1",
        "kid\x00nul",
        "x" * 256,
        "http://127.0.0.1:1/steal",
    ],
)
def test_unknown_kids_are_just_unknown(local_issuer: LocalIssuer, verify: Verify, kid: str) -> None:
    token = local_issuer.mint(headers={"kid": kid})
    refused(verify, token, errors.KeyNotFound, "key_not_found")


@pytest.mark.parametrize("kid", [17, ["a"], {"k": 1}, "", "x" * 257, True])
def test_kid_must_be_a_short_string(local_issuer: LocalIssuer, verify: Verify, kid: Any) -> None:
    refused(verify, local_issuer.mint(headers={"kid": kid}), errors.HeaderInvalid, "header_invalid")


def test_token_without_kid_uses_the_only_key_of_its_type(
    local_issuer: LocalIssuer, verify: Verify
) -> None:
    # One RS256 key published: a kid-less token can only mean that one.
    assert verify(local_issuer.mint(headers={"kid": None})).subject == "user-1"
    local_issuer.rotate("RS256")  # now two RSA keys: a kid-less token is ambiguous
    verifier = TokenVerifier([local_issuer.issuer_config()])
    refused(
        verifier.verify,
        local_issuer.mint(headers={"kid": None}),
        errors.HeaderInvalid,
        "header_invalid",
    )


# --- §3.8 / §3.9: issuer and audience ---------------------------------------------------


def test_issuer_must_match_exactly(local_issuer: LocalIssuer, verify: Verify) -> None:
    for iss in (
        local_issuer.url + "/",
        local_issuer.url + "/evil",
        local_issuer.url.upper(),
        local_issuer.url.replace("http://", "https://"),
        local_issuer.url[:-1],
        " " + local_issuer.url,
    ):
        with pytest.raises(errors.IssuerUntrusted) as info:
            verify(local_issuer.mint(iss=iss))
        assert iss.strip() not in str(info.value)  # attacker text never echoed


@pytest.mark.parametrize("iss", [None, 42, ["http://x"], {"a": 1}])
def test_issuer_must_be_a_string(local_issuer: LocalIssuer, verify: Verify, iss: Any) -> None:
    claims = local_issuer.claims()
    claims["iss"] = iss
    refused(
        verify,
        raw(local_issuer, header_for(local_issuer), claims),
        errors.IssuerUntrusted,
        "issuer_untrusted",
    )


def test_token_from_issuer_b_claiming_issuer_a_is_refused(
    local_issuer_factory: Callable[..., LocalIssuer],
) -> None:
    a = local_issuer_factory()
    b = local_issuer_factory()
    verifier = TokenVerifier([a.issuer_config("a"), b.issuer_config("b", audience=(a.audience,))])
    # B's key, B's kid, A's iss: the key must come from A's JWKS, where B's kid is unknown.
    refused(verifier.verify, b.mint(iss=a.url), errors.KeyNotFound, "key_not_found")
    # B's key, A's kid: found in A's set, but the signature is B's.
    forged = b.mint(iss=a.url, headers={"kid": a.key_for("RS256").kid})
    refused(verifier.verify, forged, errors.SignatureInvalid, "signature_invalid")
    assert verifier.verify(b.mint()).issuer == "b"


@pytest.mark.parametrize(
    ("aud", "ok"),
    [
        ("api://local", True),
        (["other", "api://local"], True),
        ("api://other", False),
        (["api://other"], False),
        ([], False),
        ([1, 2], False),
        ({"api://local": True}, False),
        ("api://local/", False),
    ],
)
def test_audience_rules(local_issuer: LocalIssuer, verify: Verify, aud: Any, ok: bool) -> None:
    token = local_issuer.mint(aud=aud)
    if ok:
        assert verify(token).audience
    else:
        refused(verify, token, errors.AudienceInvalid, "audience_invalid")


def test_missing_audience_is_refused(local_issuer: LocalIssuer, verify: Verify) -> None:
    refused(verify, local_issuer.mint(aud=None), errors.ClaimMissing, "claim_missing")


# --- §3.11: explicit typing --------------------------------------------------------------


def test_token_types_keep_id_tokens_out_of_access_token_endpoints(
    local_issuer: LocalIssuer,
) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config(token_types=("at+jwt",))])
    assert verifier.verify(local_issuer.mint(headers={"typ": "at+jwt"}))
    assert verifier.verify(local_issuer.mint(headers={"typ": "application/AT+JWT"}))
    for typ in ("JWT", None, "at+jwt2"):
        refused(
            verifier.verify,
            local_issuer.mint(headers={"typ": typ}),
            errors.TokenTypeInvalid,
            "token_type_invalid",
        )


def test_typ_must_be_a_string(local_issuer: LocalIssuer, verify: Verify) -> None:
    refused(verify, local_issuer.mint(headers={"typ": 1}), errors.HeaderInvalid, "header_invalid")


@pytest.mark.parametrize(
    "typ",
    [
        *sorted(OTHER_PURPOSE_TYPES),
        *("application/logout+jwt", "SecEvent+JWT", "vc+sd-jwt", "dc+sd-jwt", "example+sd-jwt"),
    ],
)
def test_tokens_typed_for_another_purpose_are_refused_without_token_types(
    local_issuer: LocalIssuer, verify: Verify, typ: str
) -> None:
    # A logout token or a security event is signed by the same keys as an access token.
    refused(
        verify,
        local_issuer.mint(headers={"typ": typ}),
        errors.TokenTypeInvalid,
        "token_type_invalid",
    )


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "application/at+jwt", "JOSE", None])
def test_access_and_id_token_types_pass_without_token_types(
    local_issuer: LocalIssuer, verify: Verify, typ: str | None
) -> None:
    assert verify(local_issuer.mint(headers={"typ": typ})).subject == "user-1"


LOGOUT_EVENT = {"http://schemas.openid.net/event/backchannel-logout": {}}


@pytest.mark.parametrize("typ", ["JWT", None])
def test_a_logout_or_security_event_token_without_its_typ_is_refused(
    local_issuer: LocalIssuer, verify: Verify, typ: str | None
) -> None:
    # typ is only a SHOULD for logout tokens and a MAY for SETs: the events claim tells.
    token = local_issuer.mint(events=LOGOUT_EVENT, sid="s-1", headers={"typ": typ})
    refused(verify, token, errors.TokenTypeInvalid, "token_type_invalid")
    assert verify(local_issuer.mint(events=["not", "a", "set"])).subject == "user-1"


def test_token_types_may_name_another_purpose_explicitly(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config(token_types=("logout+jwt",))])
    assert verifier.verify(local_issuer.mint(headers={"typ": "logout+jwt"}))
    logout = local_issuer.mint(events=LOGOUT_EVENT, headers={"typ": "logout+jwt"})
    assert verifier.verify(logout).subject == "user-1"
    refused(
        verifier.verify,
        local_issuer.mint(headers={"typ": "secevent+jwt"}),
        errors.TokenTypeInvalid,
        "token_type_invalid",
    )


# --- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_any_change_to_a_signed_token_breaks_it(
    local_issuer: LocalIssuer, verify: Verify, alg: str
) -> None:
    head, body, sig = local_issuer.mint(alg=alg, groups=["staff"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["groups"] = ["admins"]
    refused(
        verify,
        f"{head}.{b64(json.dumps(claims).encode())}.{sig}",
        errors.SignatureInvalid,
        "signature_invalid",
    )
    raw_sig = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw_sig[len(raw_sig) // 2] ^= 1
    refused(
        verify, f"{head}.{body}.{b64(bytes(raw_sig))}", errors.SignatureInvalid, "signature_invalid"
    )
    refused(
        verify,
        f"{head}.{body}.{b64(bytes(raw_sig[:-3]))}",
        errors.SignatureInvalid,
        "signature_invalid",
    )


# --- parsing: structure, encodings, JSON ------------------------------------------------


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", "token_malformed"),
        ("abc", "token_malformed"),
        ("a.b", "token_malformed"),
        ("a.b.c.d", "token_malformed"),
        ("a.b.c.d.e", "token_unsupported"),  # JWE compact
        ('{"payload":"x","signatures":[]}', "token_unsupported"),  # JWS JSON serialisation
        ("é.b.c", "token_malformed"),
    ],
)
def test_structure(verify: Verify, token: str, code: str) -> None:
    with pytest.raises(errors.TokenError) as info:
        verify(token)
    assert info.value.code == code


def test_oversized_token_is_refused_before_parsing(verify: Verify) -> None:
    # Not even a JWS: the size cap answers first.
    refused(verify, "x" * (16 * 1024 + 1), errors.TokenTooLarge, "token_too_large")


def test_per_issuer_size_cap(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config(max_token_bytes=1024)])
    assert verifier.verify(local_issuer.mint())
    refused(
        verifier.verify, local_issuer.mint(blob="x" * 1200), errors.TokenTooLarge, "token_too_large"
    )


def test_padding_is_refused_for_ordinary_issuers(local_issuer: LocalIssuer, verify: Verify) -> None:
    claims = local_issuer.claims(pad="x")  # choose a length that needs padding
    for n in range(4):
        claims["pad"] = "x" * n
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
        if body.endswith("="):
            break
    head = b64(json.dumps(header_for(local_issuer)).encode())
    signing_input = f"{head}.{body}"
    from jwt.algorithms import get_default_algorithms

    sig = get_default_algorithms()["RS256"].sign(
        signing_input.encode(), local_issuer.key_for("RS256").private_key
    )
    refused(verify, f"{signing_input}.{b64(sig)}", errors.TokenMalformed, "token_malformed")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.replace("-", "+").replace("_", "/") + "+/",  # standard alphabet
        lambda s: s[:10] + " " + s[10:],
        lambda s: s[:10] + "\n" + s[10:],
        lambda s: s + "A",  # impossible length (4n+1) or a different value
        lambda s: s[:-1] + chr(ord(s[-1]) + 1) if s[-1] not in "zZ9_-" else s[:-1] + "B",
    ],
)
def test_non_canonical_base64url_is_refused(
    local_issuer: LocalIssuer, verify: Verify, mutate: Callable[[str], str]
) -> None:
    head, body, sig = local_issuer.mint().split(".")
    with pytest.raises((errors.TokenMalformed, errors.SignatureInvalid, errors.IssuerUntrusted)):
        verify(f"{head}.{mutate(body)}.{sig}")


def test_non_zero_trailing_bits_make_a_token_malformed(
    local_issuer: LocalIssuer, verify: Verify
) -> None:
    # Find a payload whose base64url length leaves unused bits, then set them.
    for n in range(3):
        token = local_issuer.mint(pad="x" * n)
        head, body, sig = token.split(".")
        if len(body) % 4 == 2:
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            bumped = alphabet[alphabet.index(body[-1]) + 1]
            refused(
                verify,
                f"{head}.{body[:-1]}{bumped}.{sig}",
                errors.TokenMalformed,
                "token_malformed",
            )
            return
    pytest.fail("no payload length with unused bits found")


@pytest.mark.parametrize(
    "payload",
    [
        b'{"iss":"%(iss)s","iss":"https://evil.example","sub":"a","aud":"api://local","exp":%(exp)d}',
        b'{"iss":"%(iss)s","sub":"a","sub":"b","aud":"api://local","exp":%(exp)d}',
        b'{"iss":"%(iss)s","sub":"a","aud":"api://local","exp":%(exp)d,"x":{"y":1,"y":2}}',
        # Spelled with an escape: equal names once decoded, the classic bypass of parsers
        # that compare raw member names.
        b'{"iss":"%(iss)s","sub":"a","s\\u0075b":"admin","aud":"api://local","exp":%(exp)d}',
        b'{"iss":"%(iss)s","sub":"a","aud":"api://local","a\\u0075d":"x","exp":%(exp)d}',
    ],
)
def test_duplicate_member_names_are_refused(
    local_issuer: LocalIssuer, verify: Verify, payload: bytes
) -> None:
    body = payload % {b"iss": local_issuer.url.encode(), b"exp": local_issuer.claims()["exp"]}
    refused(
        verify,
        raw(local_issuer, header_for(local_issuer), body),
        errors.TokenMalformed,
        "token_malformed",
    )


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"RS256","kid":"%s","alg":"none"}',
        b'{"alg":"RS256","kid":"%s","x":{"a":1,"a":2}}',
        b'{"alg":"RS256","kid":"%s","\\u0061lg":"none"}',
    ],
)
def test_duplicate_header_members_are_refused(
    local_issuer: LocalIssuer, verify: Verify, header: bytes
) -> None:
    header %= local_issuer.key_for("RS256").kid.encode()
    refused(
        verify,
        raw(local_issuer, header, local_issuer.claims()),
        errors.TokenMalformed,
        "token_malformed",
    )


@pytest.mark.parametrize(
    "body",
    [
        "utf16",
        "bom",
        "latin1",
        "lone_surrogate",
        "nan",
        "infinity",
        "array",
        "deep",
        "huge_int",
        "trailing",
    ],
)
def test_payload_must_be_a_strict_utf8_json_object(
    local_issuer: LocalIssuer, verify: Verify, body: str
) -> None:
    claims = json.dumps(local_issuer.claims())
    payloads = {
        "utf16": claims.encode("utf-16"),
        "bom": b"\xef\xbb\xbf" + claims.encode(),
        "latin1": claims[:-1].encode() + b',"name":"\xe9"}',
        "lone_surrogate": claims[:-1].encode() + b',"name":"\\ud800"}',
        "nan": claims[:-1].encode() + b',"n":NaN}',
        "infinity": claims[:-1].encode() + b',"n":-Infinity}',
        "array": b"[" + claims.encode() + b"]",
        "deep": claims[:-1].encode() + b',"d":' + b"[" * 5000 + b"]" * 5000 + b"}",
        "huge_int": claims[:-1].encode() + b',"n":' + b"9" * 5000 + b"}",
        "trailing": claims.encode() + b" {}",
    }
    refused(
        verify,
        raw(local_issuer, header_for(local_issuer), payloads[body]),
        errors.TokenMalformed,
        "token_malformed",
    )


def test_a_deeply_nested_claim_is_read_without_recursion(
    local_issuer: LocalIssuer, verify: Verify
) -> None:
    # The parser accepts what its recursion limit allows; a handler deep in its framework
    # reading the claim must not hit that limit where the parser did not (a 500).
    depth = 700
    nested = b"[" * depth + b"]" * depth
    claims = json.dumps(local_issuer.claims())[:-1].encode() + b',"d":' + nested + b"}"
    principal = verify(raw(local_issuer, header_for(local_issuer), claims))

    def read_from_a_deep_stack(frames: int) -> Any:
        return read_from_a_deep_stack(frames - 1) if frames else principal.claims["d"]

    value = read_from_a_deep_stack(400)
    for _ in range(depth - 1):
        (value,) = value
    assert value == ()


def test_surrogate_pairs_are_fine(local_issuer: LocalIssuer, verify: Verify) -> None:
    claims = json.dumps(local_issuer.claims())[:-1].encode() + b',"name":"\\ud83d\\ude00"}'
    principal = verify(raw(local_issuer, header_for(local_issuer), claims))
    assert principal.claims["name"] == "\U0001f600"


@pytest.mark.parametrize("header", [b"[]", b'"RS256"', b"{}", b'{"alg":1}', b'{"alg":""}'])
def test_header_must_be_an_object_with_an_alg(
    local_issuer: LocalIssuer, verify: Verify, header: bytes
) -> None:
    with pytest.raises((errors.TokenMalformed, errors.HeaderInvalid)):
        verify(raw(local_issuer, header, local_issuer.claims()))


def _polyglot(token: str) -> str:
    # CVE-2022-39227's shape: JSON whose first member name is a compact JWS, for parsers
    # that split on "." where others read JSON.
    head, body, sig = token.split(".")
    return (
        f'{{"  {head}.{body}.":"", "protected":"{head}", "payload":"{body}", "signature":"{sig}"}}'
    )


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        pytest.param(lambda t: t[:20] + "\xe9" + t[21:], "token_malformed", id="non-ascii"),
        pytest.param(lambda t: t[:20] + "*" + t[21:], "token_malformed", id="junk-character"),
        pytest.param(lambda t: t[:20] + "," + t[21:], "token_malformed", id="junk-comma"),
        pytest.param(lambda t: t[:20] + " " + t[21:], "token_malformed", id="inner-space"),
        pytest.param(lambda t: t.replace(".", "..", 1), "token_malformed", id="empty-segment"),
        pytest.param(
            lambda t: json.dumps(
                {
                    "payload": t.split(".")[1],
                    "signatures": [{"protected": t.split(".")[0], "signature": t.split(".")[2]}],
                }
            ),
            "token_unsupported",
            id="json-serialisation",
        ),
        pytest.param(_polyglot, "token_unsupported", id="json-compact-polyglot"),
        pytest.param(lambda t: t + "." + t.split(".")[0], "token_malformed", id="four-segments"),
    ],
)
def test_a_fault_in_the_credential_is_401_invalid_token_through_the_middlewares(
    local_issuer: LocalIssuer,
    engine: IAMScope,
    spoil: Callable[[str], str],
    code: str,
) -> None:
    # The README promises 401 invalid_token for every token fault; these answered 400.
    credential = spoil(local_issuer.mint(sub="secret-subject"))
    raw = f"Bearer {credential}".encode("latin-1")
    response = asgi_answer(engine, [(b"authorization", raw)])
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="iamscope", error="invalid_token"'
    assert response.json()["code"] == code
    assert credential not in response.text and "secret-subject" not in response.text
    status, problem = wsgi_answer(engine, raw.decode("latin-1"))
    assert (status, problem["code"]) == ("401 Unauthorized", code)


@pytest.mark.parametrize(
    "value",
    [
        "Bearer {t}, Bearer {t}",
        "Bearer {t},Bearer {t}",
        "Bearer {t}, Basic dXNlcjpwYXNz",
    ],
)
def test_two_credentials_in_one_header_are_400_invalid_request(
    local_issuer: LocalIssuer, engine: IAMScope, value: str
) -> None:
    header = value.format(t=local_issuer.mint()).encode()
    response = asgi_answer(engine, [(b"authorization", header)])
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]
    assert response.json()["code"] == "request_invalid"
    status, problem = wsgi_answer(engine, header.decode())
    assert (status, problem["code"]) == ("400 Bad Request", "request_invalid")


def test_an_oversized_credential_is_too_large_before_it_is_malformed(engine: IAMScope) -> None:
    # Size is judged before anything is parsed, junk or not.
    for junk in ("x" * (16 * 1024 + 1), "{" + "x," * 9000 + "}", "\xe9" * (16 * 1024 + 1)):
        response = asgi_answer(engine, [(b"authorization", f"Bearer {junk}".encode("latin-1"))])
        assert (response.status_code, response.json()["code"]) == (401, "token_too_large")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"\xc0\xaf", id="overlong"),
        pytest.param(b"\xed\xa0\x80", id="encoded-surrogate"),
        pytest.param(b"\xf4\x90\x80\x80", id="beyond-u10ffff"),
    ],
)
def test_invalid_utf8_sequences_in_a_claim_are_refused(
    local_issuer: LocalIssuer, verify: Verify, text: bytes
) -> None:
    claims = json.dumps(local_issuer.claims())[:-1].encode() + b',"name":"' + text + b'"}'
    refused(
        verify,
        raw(local_issuer, header_for(local_issuer), claims),
        errors.TokenMalformed,
        "token_malformed",
    )


# --- time claims (§3.2 lifetimes; RFC 7519 §4.1.4-6) -------------------------------------


def test_expiry_boundary_and_leeway(local_issuer: LocalIssuer, clock: FakeClock) -> None:
    exp = int(clock.now) + 100
    token = local_issuer.mint(iat=exp - 200, exp=exp)
    strict = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    lenient = TokenVerifier([local_issuer.issuer_config(leeway=30)], clock=clock)
    clock.now = exp - 0.001
    assert strict.verify(token)
    clock.now = exp  # RFC 7519: valid only *before* exp
    refused(strict.verify, token, errors.TokenExpired, "token_expired")
    assert lenient.verify(token)
    clock.now = exp + 30
    refused(lenient.verify, token, errors.TokenExpired, "token_expired")


@pytest.mark.parametrize("exp", ["9999999999", True, None, [1], {"v": 1}])
def test_exp_must_be_a_number(local_issuer: LocalIssuer, verify: Verify, exp: Any) -> None:
    claims = local_issuer.claims()
    claims["exp"] = exp
    with pytest.raises(errors.ClaimInvalid) as info:
        verify(raw(local_issuer, header_for(local_issuer), claims))
    assert info.value.claim == "exp"


def test_exp_may_be_fractional(local_issuer: LocalIssuer, verify: Verify, clock: FakeClock) -> None:
    assert verify(local_issuer.mint(exp=clock.now + 10.5)).expires_at == clock.now + 10.5


def test_not_before_and_issued_at(local_issuer: LocalIssuer, clock: FakeClock) -> None:
    now = int(clock.now)
    strict = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    lenient = TokenVerifier([local_issuer.issuer_config(leeway=60)], clock=clock)
    refused(
        strict.verify,
        local_issuer.mint(nbf=now + 30),
        errors.TokenNotYetValid,
        "token_not_yet_valid",
    )
    assert lenient.verify(local_issuer.mint(nbf=now + 30))
    refused(
        strict.verify,
        local_issuer.mint(iat=now + 30),
        errors.TokenIssuedInFuture,
        "token_issued_in_future",
    )
    assert lenient.verify(local_issuer.mint(iat=now + 30))
    refused(
        lenient.verify,
        local_issuer.mint(iat=now + 61),
        errors.TokenIssuedInFuture,
        "token_issued_in_future",
    )
    refused(
        strict.verify, local_issuer.mint(nbf="soon"), errors.ClaimTypeInvalid, "claim_type_invalid"
    )


def test_leeway_is_capped_at_sixty_seconds(local_issuer: LocalIssuer) -> None:
    with pytest.raises(errors.ConfigError, match="leeway"):
        local_issuer.issuer_config(leeway=61)


def test_max_lifetime_for_short_lived_credentials(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    now = int(clock.now)
    verifier = TokenVerifier([local_issuer.issuer_config(max_lifetime=600)], clock=clock)
    assert verifier.verify(local_issuer.mint(iat=now, exp=now + 600))
    refused(
        verifier.verify,
        local_issuer.mint(iat=now, exp=now + 601),
        errors.TokenLifetimeExceeded,
        "token_lifetime_exceeded",
    )
    refused(
        verifier.verify,
        local_issuer.mint(iat=None, exp=now + 60),
        errors.ClaimMissing,
        "claim_missing",
    )
    assert verifier.verify(local_issuer.mint(iat=None, nbf=now, exp=now + 60))


def test_required_claims(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config(required_claims=("jti", "email"))])
    assert verifier.verify(local_issuer.mint(jti="j1", email="a@example.com")).token_id == "j1"
    with pytest.raises(errors.ClaimMissing) as info:
        verifier.verify(local_issuer.mint(jti="j1"))
    assert info.value.claim == "email"


def test_subject_is_required_and_a_string(local_issuer: LocalIssuer, verify: Verify) -> None:
    refused(verify, local_issuer.mint(sub=None), errors.ClaimMissing, "claim_missing")
    refused(verify, local_issuer.mint(sub=""), errors.ClaimMissing, "claim_missing")
    refused(verify, local_issuer.mint(sub=12), errors.ClaimTypeInvalid, "claim_type_invalid")
    refused(verify, local_issuer.mint(jti=5), errors.ClaimTypeInvalid, "claim_type_invalid")


# --- secrecy: errors never carry the token or its claim values ---------------------------


def test_errors_never_contain_the_token_or_claim_values(
    local_issuer: LocalIssuer, verify: Verify, clock: FakeClock
) -> None:
    secret_sub = "subject-secret-7f3a"
    tokens = [
        local_issuer.mint(sub=secret_sub, exp=int(clock.now) - 1000, iat=int(clock.now) - 2000),
        local_issuer.mint(sub=secret_sub, aud="aud-secret-91b2"),
        local_issuer.mint(sub=secret_sub, iss="https://iss-secret-4c1d.example"),
        local_issuer.mint(sub=secret_sub, groups=[1, 2], headers={"kid": "kid-secret-x"}),
    ]
    for token in tokens:
        with pytest.raises(errors.IAMScopeError) as info:
            verify(token)
        text = f"{info.value} {info.value!r} {info.value.args}"
        for part in token.split("."):
            assert part not in text
        for secret in (secret_sub, "aud-secret-91b2", "iss-secret-4c1d", "kid-secret-x"):
            assert secret not in text


def test_unsigned_header_text_never_reaches_messages(
    local_issuer: LocalIssuer, verify: Verify
) -> None:
    injected = "X-INJECTED\r\n2026-01-01 CRITICAL admin login ok"
    with pytest.raises(errors.AlgorithmNotAllowed) as info:
        verify(local_issuer.mint(headers={"alg": injected}))
    assert "INJECTED" not in str(info.value)
    assert info.value.issuer == "local"


def test_cognito_token_use_value_is_not_echoed(local_issuer: LocalIssuer) -> None:
    from iamscope.tokens import PRESETS

    cfg = local_issuer.issuer_config(preset=PRESETS["cognito"])
    verifier = TokenVerifier([cfg])
    with pytest.raises(errors.ClaimInvalid) as info:
        verifier.verify(local_issuer.mint(token_use="secret-value-1234@example.com"))
    assert "secret-value" not in str(info.value)
    assert info.value.issuer == "local"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_numeric_dates_beyond_any_float_are_claim_errors(
    local_issuer: LocalIssuer, verify: Verify, claim: str
) -> None:
    payload = json.dumps({**local_issuer.claims(), claim: 0})
    payload = payload.replace(f'"{claim}": 0', f'"{claim}": 1{"0" * 400}')
    with pytest.raises(errors.ClaimInvalid) as info:
        verify(raw(local_issuer, header_for(local_issuer), payload.encode()))
    assert info.value.claim == claim


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(MAX_NUMERIC_DATE + 1, id="year-10000"),
        pytest.param(2**53 - 1, id="max-safe-integer"),
        pytest.param(2**53 + 1, id="beyond-safe-integer"),
        pytest.param(2**64, id="uint64"),
        pytest.param(1e300, id="1e300"),
        pytest.param(MIN_NUMERIC_DATE - 1, id="before-year-1"),
        pytest.param(-(2**63), id="int64-min"),
    ],
)
def test_numeric_dates_beyond_year_9999_or_safe_integers_are_refused(
    local_issuer: LocalIssuer, verify: Verify, claim: str, value: float
) -> None:
    # Never "never expires": a far-future exp is a claim error, not a long lifetime.
    claims = {**local_issuer.claims(), claim: value}
    with pytest.raises(errors.ClaimInvalid) as info:
        verify(raw(local_issuer, header_for(local_issuer), claims))
    assert (info.value.code, info.value.claim) == ("claim_invalid", claim)


def test_the_last_second_of_year_9999_is_still_a_date(
    local_issuer: LocalIssuer, verify: Verify
) -> None:
    assert verify(local_issuer.mint(exp=MAX_NUMERIC_DATE)).expires_at == MAX_NUMERIC_DATE
    assert verify(local_issuer.mint(nbf=MIN_NUMERIC_DATE)).subject == "user-1"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"max_lifetime": float("nan")}, "max_lifetime"),
        ({"max_lifetime": float("inf")}, "max_lifetime"),
        ({"leeway": float("nan")}, "leeway"),
        ({"algorithms": ()}, "algorithms"),
        ({"jwks_uri": "http://169.254.169.254/keys"}, "https"),
    ],
)
def test_config_values_that_would_fail_open_are_refused(
    settings: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(errors.ConfigError, match=fragment):
        IssuerConfig(name="x", issuer="https://x.example", audience=("a",), **settings)


def test_token_types_are_normalised_in_config(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config(token_types=("application/AT+JWT",))])
    assert verifier.verify(local_issuer.mint(headers={"typ": "at+jwt"}))


def test_the_fast_principal_constructor_sets_every_field_the_dataclass_has() -> None:
    import dataclasses

    from iamscope.tokens import verify as core
    from iamscope.tokens.principal import Principal

    fields = [f.name for f in dataclasses.fields(Principal)]
    # Distinct values, so a field set from its neighbour's argument shows.
    values: dict[str, Any] = {name: f"value of {name}" for name in fields}
    made = core._new_principal(*values.values())
    assert type(made) is Principal
    assert {name: getattr(made, name) for name in fields} == values
    assert dataclasses.replace(made, subject="bob").subject == "bob"  # a Principal like any
    assert list(core._new_principal.__code__.co_varnames[: len(fields)]) == fields
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.subject = "someone else"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a", "b", "a"], ("a", "b", "a")),
        ([], ()),
        (["a", 1], errors.ClaimMappingError),
        (["a", ["b"]], errors.ClaimMappingError),
        (["a", None], errors.ClaimMappingError),
        (("a", 2), errors.ClaimMappingError),
        ("a b  c", ("a", "b", "c")),
        ("", ()),
        (None, ()),
        (7, errors.ClaimMappingError),
        ({"a": 1}, errors.ClaimMappingError),
    ],
)
def test_claims_read_as_strings_are_strings(value: Any, expected: Any) -> None:
    from iamscope.tokens.claims import string_values

    options: dict[str, Any] = {"claim": "c", "delimiter": None, "split_spaces": True}
    if isinstance(expected, type):
        with pytest.raises(expected, match="'c'"):
            string_values(value, **options)
    else:
        assert string_values(value, **options) == expected
