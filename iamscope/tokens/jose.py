"""Strict parsing of compact JWS (RFC 7515) — no keys, no I/O, no claims policy.

Owns what every token must satisfy before its issuer is even known: size, segment
shape, canonical base64url, strict UTF-8 JSON objects without duplicate members, and
the header members no issuer may use (RFC 8725 §2, §3.10). Parsing happens once per
token; everything downstream works on the returned :class:`ParsedToken`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from iamscope.errors import HeaderInvalid, TokenMalformed, TokenTooLarge, TokenUnsupported

__all__ = ["DEFAULT_MAX_TOKEN_BYTES", "ParsedToken", "b64url_decode", "loads_object", "parse"]

DEFAULT_MAX_TOKEN_BYTES = 16 * 1024
MAX_KID_LENGTH = 256

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# Canonical encodings only: the unused low bits of the last character must be zero, so a
# segment has one spelling. (ECDSA signatures are still malleable: (r, s) and (r, n - s)
# both verify. Anything keyed on a token's bytes, such as a cache or a revocation list,
# must not assume one token has one string.)
_LAST_CHAR_OK = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
# Members that carry or point at a key, or change how the payload is read. A verifier
# that honoured any of them would let the token choose its own key (RFC 8725 §3.10).
_FORBIDDEN_HEADER = ("jwk", "jku", "x5u", "x5c", "b64", "zip")
_LONE_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")


class ParsedToken(NamedTuple):
    """A token split and decoded, not yet trusted. (A NamedTuple: built once per token,
    on the hot path, where a frozen dataclass's __init__ costs a microsecond more.)"""

    header: Mapping[str, Any]  # shared between tokens with the same header: read-only
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes
    padded: bool  # base64 padding was present (tolerated only for AWS ALB issuers)


def b64url_decode(segment: str, *, allow_padding: bool = False) -> bytes:
    """Decode one base64url segment, refusing anything but the canonical unpadded form."""
    padded = segment.endswith("=")
    if padded:
        if not allow_padding:
            raise TokenMalformed("base64url segment carries '=' padding")
        stripped = segment.rstrip("=")
        if len(segment) % 4 or len(segment) - len(stripped) > 2:
            raise TokenMalformed("base64url segment has wrong padding")
        segment = stripped
    if not _B64URL.fullmatch(segment):
        raise TokenMalformed("segment is not base64url")
    rem = len(segment) % 4
    if rem == 1:
        raise TokenMalformed("base64url segment has an impossible length")
    if rem and segment[-1] not in _LAST_CHAR_OK[rem]:
        raise TokenMalformed("base64url segment is not canonically encoded")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - excluded by the checks above
        raise TokenMalformed("segment is not base64url") from exc


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateMember
    return obj


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteNumber(name)


class _DuplicateMember(ValueError):
    pass


class _NonFiniteNumber(ValueError):
    pass


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant
)


# Set by JSONDecoder.__init__ (the C scanner when available); not in typeshed.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def loads_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse strict UTF-8 JSON that must be an object; duplicate members are refused.

    ``what`` names the document in error messages ("header", "JWKS"...). Errors are
    :class:`TokenMalformed`; callers outside token parsing translate them.
    """
    try:
        text = data.decode("utf-8")
        # Tokens are compact JSON starting with "{": the C scanner directly, without the
        # Python wrapper (~1 µs a document); anything else goes the standard way.
        value, end = _SCAN(text, 0) if text[:1] == "{" else (None, -1)
        if end != len(text):
            value = _DECODER.decode(text)
    except StopIteration as exc:  # the scanner's "no value here", from a nested value
        raise TokenMalformed(f"{what} is not valid JSON") from exc
    except UnicodeDecodeError as exc:
        raise TokenMalformed(f"{what} is not UTF-8") from exc
    except _DuplicateMember as exc:
        raise TokenMalformed(f"{what} has duplicate member names") from exc
    except _NonFiniteNumber as exc:
        raise TokenMalformed(f"{what} has a non-finite number") from exc
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and int-string-length limits.
        raise TokenMalformed(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise TokenMalformed(f"{what} is not a JSON object")
    # ("in" first: a scan in C, where the regex costs a call.)
    if "\\u" in text and _LONE_SURROGATE_HINT.search(text) and not _encodable(value):
        raise TokenMalformed(f"{what} has an unpaired surrogate escape")
    return value


def _encodable(value: Any) -> bool:
    """True when every string in the document survives UTF-8 encoding (rare path)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


# The fast path decodes base64url with the standard decoder in strict mode: translating
# "-_" to "+/" and every "+", "/" and "=" of the input to "!" (outside both alphabets)
# makes anything but canonical-alphabet base64url fail there, padding included. Any
# failure defers to _parse_slow, which is the reference: the fast path either returns
# what it would, or lets it find the precise error.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
_PAD = (b"", b"", b"==", b"=")
_LAST_BYTE_OK = {2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}
_a2b = binascii.a2b_base64

# Parsed and checked headers by their encoded segment. An issuer's tokens share a handful
# of headers (one per key), so most tokens skip decoding and checking theirs; the values
# are shared, hence read-only (ParsedToken.header is a Mapping). Bounded: a flood of
# distinct headers empties it, and costs only the decoding it would have cost anyway.
_HEADERS: dict[bytes, Mapping[str, Any]] = {}
_MAX_HEADERS = 64


class _Deferred(Exception):
    """The fast path cannot decide: the slow path finds the precise error."""


def _fast_decode(segment: bytes) -> bytes:
    rem = len(segment) % 4
    if rem == 1 or not segment or (rem and segment[-1] not in _LAST_BYTE_OK[rem]):
        raise _Deferred
    try:
        return _a2b(segment.translate(_TO_STANDARD) + _PAD[rem], strict_mode=True)
    except binascii.Error:
        raise _Deferred from None


def _header(h64: bytes) -> Mapping[str, Any]:
    """A header not cached yet: parsed, checked, then remembered."""
    header = loads_object(_fast_decode(h64), "header")
    _check_header(header)
    if len(_HEADERS) >= _MAX_HEADERS:
        _HEADERS.clear()
    _HEADERS[h64] = header
    return header


def parse(token: str, *, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> ParsedToken:
    """Split and decode a compact JWS. Raises a :class:`TokenError` subclass on any fault."""
    if len(token) > max_bytes:
        raise TokenTooLarge(f"token exceeds {max_bytes} bytes")
    try:
        raw = token.encode("ascii")
        h64, p64, s64 = raw.split(b".")
        # In the slow path's order: the header is judged before the payload is read.
        header = _HEADERS.get(h64) or _header(h64)
        text = _fast_decode(p64).decode("utf-8")
        signature = _fast_decode(s64)
        # loads_object's work without its call and its own try (~0.5 µs a token): any
        # fault, as any shape but one whole object, is left to the slow path's.
        payload, end = _SCAN(text, 0)
    except (ValueError, _Deferred, StopIteration, RecursionError):
        # ValueError covers the decoding errors and every JSON fault but the two above.
        return _parse_slow(token)
    if (
        end != len(text)
        or type(payload) is not dict
        or ("\\u" in text and _LONE_SURROGATE_HINT.search(text) and not _encodable(payload))
    ):
        return _parse_slow(token)
    # tuple.__new__ skips the NamedTuple's Python-level __new__ (a call per token).
    return _new_parsed(
        ParsedToken, (header, payload, raw[: len(h64) + len(p64) + 1], signature, False)
    )


_new_parsed = tuple.__new__


def _parse_slow(token: str) -> ParsedToken:
    if not token.isascii():
        raise TokenMalformed("token has non-ASCII characters")
    if token[:1] == "{":
        raise TokenUnsupported("JWS JSON serialisation is not accepted")
    parts = token.split(".")
    if len(parts) == 5:
        raise TokenUnsupported("encrypted tokens (JWE) are not accepted")
    if len(parts) != 3:
        raise TokenMalformed("token is not a compact JWS (three segments)")
    h64, p64, s64 = parts
    header = loads_object(b64url_decode(h64, allow_padding=True), "header")
    _check_header(header)
    if not s64:
        raise TokenUnsupported("unsigned tokens are not accepted")
    payload = loads_object(b64url_decode(p64, allow_padding=True), "payload")
    signature = b64url_decode(s64, allow_padding=True)
    padded = token.find("=") != -1
    return ParsedToken(header, payload, f"{h64}.{p64}".encode("ascii"), signature, padded)


def _check_header(header: Mapping[str, Any]) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise HeaderInvalid("header has no 'alg'")
    if alg.lower() == "none":
        raise TokenUnsupported("unsecured tokens (alg 'none') are not accepted")
    if "enc" in header:
        raise TokenUnsupported("encrypted tokens (JWE) are not accepted")
    if "crit" in header:
        # We implement no extension; RFC 7515 §4.1.11 says refuse what we do not understand.
        raise HeaderInvalid("header lists critical extensions ('crit') that are not supported")
    for name in _FORBIDDEN_HEADER:
        if name in header:
            raise HeaderInvalid(f"header member '{name}' is not accepted")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH):
        raise HeaderInvalid("header 'kid' must be a non-empty string of at most 256 characters")
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise HeaderInvalid("header 'typ' must be a string")
