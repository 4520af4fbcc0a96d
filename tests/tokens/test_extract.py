"""Token sources: bearer header, cookies, proxy assertion headers; never the query string."""

from __future__ import annotations

import pytest

from iamscope import errors
from iamscope.tokens import Source, extract_from_environ, extract_from_headers

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert extract_from_headers(h(("authorization", f"{scheme} {TOKEN}"))) == TOKEN
    assert extract_from_environ({"HTTP_AUTHORIZATION": f"{scheme} {TOKEN}"}) == TOKEN


def test_header_name_is_case_insensitive() -> None:
    assert extract_from_headers(h(("Authorization", f"Bearer {TOKEN}"))) == TOKEN


def test_no_authorization_header_is_token_missing() -> None:
    with pytest.raises(errors.TokenMissing) as info:
        extract_from_headers(h(("accept", "*/*")))
    assert info.value.status == 401
    assert info.value.error == ""  # RFC 6750 §3.1: no error code without credentials


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "DPoP abc", "Token abc"])
def test_other_schemes_are_token_missing(value: str) -> None:
    with pytest.raises(errors.TokenMissing):
        extract_from_headers(h(("authorization", value)))


def test_two_authorization_headers_are_invalid_request() -> None:
    with pytest.raises(errors.RequestInvalid) as info:
        extract_from_headers(h(("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer x")))
    assert (info.value.status, info.value.error, info.value.code) == (
        400,
        "invalid_request",
        "request_invalid",
    )


def test_joined_authorization_headers_in_wsgi_are_invalid_request() -> None:
    with pytest.raises(errors.RequestInvalid):
        extract_from_environ({"HTTP_AUTHORIZATION": f"Bearer {TOKEN}, Bearer other"})


JSON_SERIALISATION = '{"payload":"e30","signatures":[{"protected":"e30","signature":"c2ln"}]}'
# The JSON/compact polyglot of CVE-2022-39227: a JSON document whose first member name is
# a compact JWS, for parsers that split on "." where others read JSON.
POLYGLOT = '{"  ' + TOKEN + '":"", "protected":"e30", "payload":"e30", "signature":"c2ln"}'


@pytest.mark.parametrize(
    "token",
    [
        "a b",
        "a\tb",
        "tok\u00e9n",
        "a;b",
        '"quoted"',
        "eyJh,bGci.eyJ.c2ln",  # a junk comma inside a segment is not a second credential
        "eyJhbGci*.eyJ.c2ln",
        JSON_SERIALISATION,
        POLYGLOT,
    ],
)
def test_a_fault_inside_the_credential_is_left_to_the_parser(token: str) -> None:
    # Judging the credential's characters is jose.parse's job, answered 401 invalid_token
    # like every other fault in a token; extraction only finds the one credential.
    raw = f"Bearer {token}".encode()
    assert extract_from_headers([(b"authorization", raw)]) == raw.decode("latin-1")[7:]
    assert (
        extract_from_environ({"HTTP_AUTHORIZATION": raw.decode("latin-1")})
        == raw.decode("latin-1")[7:]
    )


def test_a_raw_non_ascii_byte_is_passed_on_as_latin_1() -> None:
    # ASGI servers hand over bytes; decoding them must not fail before the parser refuses.
    token = extract_from_headers([(b"authorization", b"Bearer eyJ\xff.eyJ.c2ln")])
    assert token == "eyJ\xff.eyJ.c2ln"


def test_an_empty_bearer_credential_is_a_token_fault() -> None:
    with pytest.raises(errors.TokenMalformed) as info:
        extract_from_headers(h(("authorization", "Bearer ")))
    assert (info.value.status, info.value.error) == (401, "invalid_token")


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}, Bearer other",
        f"Bearer {TOKEN},Bearer other",  # gunicorn, wsgiref and werkzeug join with ","
        f"Bearer {TOKEN}, Basic dXNlcjpwYXNz",
        f"Basic dXNlcjpwYXNz, Bearer {TOKEN}",
        f"Bearer {TOKEN}, DPoP {TOKEN}",
        f"Bearer {TOKEN}, Digest username=a",
    ],
)
def test_two_credentials_in_one_header_are_invalid_request(value: str) -> None:
    for extract in (
        lambda: extract_from_headers(h(("authorization", value))),
        lambda: extract_from_environ({"HTTP_AUTHORIZATION": value}),
    ):
        with pytest.raises(errors.RequestInvalid) as info:
            extract()
        assert (info.value.status, info.value.error) == (400, "invalid_request")


def test_query_string_tokens_are_ignored() -> None:
    environ = {"QUERY_STRING": f"access_token={TOKEN}", "REQUEST_METHOD": "GET"}
    with pytest.raises(errors.TokenMissing):
        extract_from_environ(environ)


def test_oversized_header_is_refused_before_anything_else() -> None:
    with pytest.raises(errors.TokenTooLarge):
        extract_from_headers(h(("authorization", "Bearer " + "a" * 20000)))


def test_cookie_source() -> None:
    source = Source.cookie("session")
    headers = h(("cookie", f"theme=dark; session={TOKEN}; other=1"))
    assert extract_from_headers(headers, source) == TOKEN
    assert extract_from_environ({"HTTP_COOKIE": f"session={TOKEN}"}, source) == TOKEN
    with pytest.raises(errors.TokenMissing):
        extract_from_headers(h(("cookie", "theme=dark")), source)
    with pytest.raises(errors.TokenMissing):
        extract_from_headers(h(("cookie", "session=")), source)


def test_repeated_cookie_is_ambiguous() -> None:
    source = Source.cookie("session")
    with pytest.raises(errors.RequestInvalid):
        extract_from_headers(h(("cookie", f"session={TOKEN}; session=other")), source)
    with pytest.raises(errors.RequestInvalid):
        extract_from_headers(h(("cookie", f"session={TOKEN}"), ("cookie", "session=x")), source)


@pytest.mark.parametrize(
    "name",
    [
        "x-goog-iap-jwt-assertion",
        "x-amzn-oidc-data",
        "cf-access-jwt-assertion",
        "x-pomerium-jwt-assertion",
    ],
)
def test_proxy_assertion_headers(name: str) -> None:
    source = Source.header(name)
    assert extract_from_headers(h((name.upper(), TOKEN)), source) == TOKEN
    environ_key = "HTTP_" + name.upper().replace("-", "_")
    assert extract_from_environ({environ_key: TOKEN}, source) == TOKEN
    with pytest.raises(errors.RequestInvalid):
        extract_from_headers(h((name, TOKEN), (name, TOKEN)), source)
    for joined in (f"{TOKEN},{TOKEN}", f"{TOKEN}, {TOKEN}=="):  # a WSGI server's join
        with pytest.raises(errors.RequestInvalid):
            extract_from_environ({environ_key: joined}, source)
    # Commas in one malformed assertion are the parser's business, not a second header.
    assert extract_from_headers(h((name, JSON_SERIALISATION)), source) == JSON_SERIALISATION
    assert extract_from_environ({environ_key: POLYGLOT}, source) == POLYGLOT
    with pytest.raises(errors.TokenMissing):
        extract_from_headers(h(("authorization", f"Bearer {TOKEN}")), source)
