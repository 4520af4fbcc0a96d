"""Finding the token in a request: bearer header, cookie, or a proxy's assertion header.

Works on the raw header list an ASGI server hands over (``[(b"name", b"value"), ...]``)
or on a WSGI environ, so both middlewares share one set of rules. Query-string tokens
(RFC 6750 §2.3) are never read: they end up in access logs and browser history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from iamscope.errors import RequestInvalid, TokenMalformed, TokenMissing, TokenTooLarge

__all__ = ["Source", "extract_from_environ", "extract_from_headers"]

SourceKind = Literal["bearer", "cookie", "header"]

# What splits one request's credentials from another's. A WSGI server joins a repeated
# header with "," (gunicorn, wsgiref, werkzeug) or ", ", so after a comma a second bearer
# credential starts with an auth-scheme, whitespace and a token68 or auth-param character
# (RFC 9110 §11.4); a second proxy assertion is another compact JWS. Anything else after
# a comma (JSON, a junk character) is a fault inside the one credential: 401, not 400.
_SECOND_CREDENTIAL = re.compile(
    r"[ \t]*[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*[ \t]+[A-Za-z0-9._~+/=-]"
)
_COMPACT_JWS = re.compile(r"[ \t]*[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*\.[A-Za-z0-9_=-]*[ \t]*")


@dataclass(frozen=True, slots=True)
class Source:
    """Where one issuer's tokens arrive. ``name`` is a header or cookie name."""

    kind: SourceKind = "bearer"
    name: str = "authorization"

    @classmethod
    def bearer(cls) -> Source:
        return cls("bearer", "authorization")

    @classmethod
    def cookie(cls, name: str) -> Source:
        return cls("cookie", name)

    @classmethod
    def header(cls, name: str) -> Source:
        return cls("header", name.lower())

    @property
    def header_name(self) -> str:
        return "cookie" if self.kind == "cookie" else self.name.lower()


BEARER = Source.bearer()


def _parse_bearer(value: str) -> str:
    scheme, sep, token = value.partition(" ")
    if not sep or scheme.lower() != "bearer":
        # Another scheme (Basic, DPoP...) is not a bearer token for us: no credentials.
        raise TokenMissing("no bearer token in the Authorization header")
    token = token.strip(" ")
    if not token:
        raise TokenMalformed("the bearer token is empty")
    # The characters are the parser's to judge (jose.parse): a bad one is a fault in the
    # credential, answered 401 invalid_token like every other (RFC 6750 §3.1).
    return token


def _two_credentials(value: str, source: Source) -> bool:
    """True when a header value holds more than one credential (module comment above)."""
    if "," not in value:
        return False
    parts = value.split(",")
    if source.kind == "bearer":
        return any(_SECOND_CREDENTIAL.match(part) for part in parts[1:])
    return all(_COMPACT_JWS.fullmatch(part) for part in parts)


def _cookie_values(value: str, name: str) -> list[str]:
    # Every occurrence, not the last one a dict would keep: a repeated cookie is ambiguous.
    found = []
    for pair in value.split(";"):
        key, sep, val = pair.strip().partition("=")
        if sep and key == name:
            found.append(val.strip().strip('"'))
    return found


def _from_values(values: Sequence[str], source: Source, max_bytes: int) -> str:
    if source.kind == "cookie":
        found = [t for v in values for t in _cookie_values(v, source.name)]
        if len(found) > 1:
            raise RequestInvalid(f"cookie '{source.name}' is sent more than once")
        if not found or not found[0]:
            raise TokenMissing(f"no '{source.name}' cookie")
        token = found[0]
    else:
        if len(values) > 1:
            raise RequestInvalid(f"the {source.name} header is sent more than once")
        if not values:
            raise TokenMissing(f"no {source.name} header")
        if len(values[0]) > max_bytes + 16:
            raise TokenTooLarge(f"the {source.name} header exceeds {max_bytes} bytes")
        if _two_credentials(values[0], source):
            raise RequestInvalid(f"the {source.name} header is sent more than once")
        if source.kind == "bearer":
            token = _parse_bearer(values[0])
        else:
            token = values[0].strip()
            if not token:
                raise TokenMissing(f"the {source.name} header is empty")
    if len(token) > max_bytes:
        raise TokenTooLarge(f"token exceeds {max_bytes} bytes")
    return token


def extract_from_headers(
    headers: Iterable[tuple[bytes, bytes]],
    source: Source = BEARER,
    *,
    max_bytes: int = 16 * 1024,
) -> str:
    """The credential from an ASGI header list, as sent: judging its characters is the
    parser's job. Raises TokenMissing, TokenTooLarge, TokenMalformed (an empty bearer) or
    RequestInvalid (the credential sent twice)."""
    wanted = source.header_name.encode("latin-1")
    values = [v.decode("latin-1") for k, v in headers if k.lower() == wanted]
    return _from_values(values, source, max_bytes)


def extract_from_environ(
    environ: Mapping[str, object],
    source: Source = BEARER,
    *,
    max_bytes: int = 16 * 1024,
) -> str:
    """The credential from a WSGI environ; the same rules as :func:`extract_from_headers`."""
    key = "HTTP_" + source.header_name.upper().replace("-", "_")
    value = environ.get(key)
    # WSGI servers join repeated headers into one value; _from_values detects the join.
    values = [value] if isinstance(value, str) else []
    return _from_values(values, source, max_bytes)
