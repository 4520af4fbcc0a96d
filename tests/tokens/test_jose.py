"""The compact-JWS parser's fast path against its reference, the slow path.

``jose.parse`` decodes well-formed tokens with the standard base64 decoder in strict
mode and defers everything else to ``_parse_slow``, which owns the precise errors. The
two must agree on every input: same result, or the same error.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iamscope import errors
from iamscope.tokens import jose


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = b64(b'{"alg":"RS256","kid":"k1","typ":"JWT"}')
PAYLOAD = b64(b'{"iss":"https://issuer.example","sub":"alice","exp":1}')
SIGNATURE = b64(bytes(range(1, 33)))


def outcome(parse: Any, token: str) -> tuple[str, Any]:
    try:
        parsed = parse(token)
    except errors.IAMScopeError as exc:
        return type(exc).__name__, str(exc)
    return "ok", (dict(parsed.header), parsed.payload, parsed.signing_input, parsed.signature)


def agree(token: str) -> None:
    jose._HEADERS.clear()  # a cached header must not hide what the slow path would say
    assert outcome(jose.parse, token) == outcome(jose._parse_slow, token)
    assert outcome(jose.parse, token) == outcome(jose._parse_slow, token)  # header cached


@pytest.mark.parametrize(
    "token",
    [
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}.",  # unsigned
        f".{PAYLOAD}.{SIGNATURE}",
        f"{HEADER}..{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}.x.y",  # JWE's shape
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}=",
        f"{HEADER}.{PAYLOAD}=.{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}+",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}/",
        f"{HEADER}.{PAYLOAD}.+/{SIGNATURE[2:]}",  # the standard alphabet's own characters
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:4]}    {SIGNATURE[8:]}",  # a quad of blanks
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:4]}===={SIGNATURE[8:]}",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:4]}\n\n\n\n{SIGNATURE[8:]}",
        f"{HEADER}.{PAYLOAD[:5]} {PAYLOAD[5:]}.{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}\n.{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}A.{SIGNATURE}",  # impossible length
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}é",
        f"{b64(b'[1]')}.{PAYLOAD}.{SIGNATURE}",
        f"{b64(b'{}')}.{PAYLOAD}.{SIGNATURE}",
        f"{b64(json.dumps({'alg': 'RS256', 'jku': 'https://x'}).encode())}.{PAYLOAD}.{SIGNATURE}",
        f"{HEADER}.{b64(b'{}x')}.{SIGNATURE}",
        "{}",
        "",
    ],
)
def test_fast_and_slow_paths_agree_on_hand_made_tokens(token: str) -> None:
    agree(token)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"sub":1,"sub":2}',  # duplicate member
        b'{"a":{"b":1,"b":2}}',  # nested duplicate
        b'{"exp":NaN}',
        b'{"exp":-Infinity}',
        b'{"sub":"\\ud800"}',  # lone surrogate
        b'{"sub":"\\ud83d\\ude00"}',  # a pair: fine
        b'{"sub":"\xff"}',  # not UTF-8
        b'{"sub":"a"} ',  # trailing blank: the reference accepts it
        b' {"sub":"a"}',  # leading blank: likewise
        b'{"sub":"a"}x',
        b'{"sub":"a"}{}',
        b"[1]",
        b'"sub"',
        b"",
        b"{",
        b'{"n":' + b"1" * 5000 + b"}",  # beyond int's string-length limit
        b'{"s":' + b"[" * 5000 + b"]" * 5000 + b"}",  # deeper than the stack
    ],
)
def test_fast_and_slow_paths_agree_on_payload_json(payload: bytes) -> None:
    agree(f"{HEADER}.{b64(payload)}.{SIGNATURE}")


def test_non_zero_trailing_bits_defer_to_the_slow_path() -> None:
    bumped = SIGNATURE[:-1] + chr(ord(SIGNATURE[-1]) + 1)
    agree(f"{HEADER}.{PAYLOAD}.{bumped}")
    with pytest.raises(errors.TokenMalformed, match="canonically"):
        jose.parse(f"{HEADER}.{PAYLOAD}.{bumped}")


_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= .\n")


@settings(max_examples=300, deadline=None)
@given(
    mutations=st.lists(
        st.tuples(st.integers(min_value=0, max_value=200), _CHARS, st.booleans()), max_size=3
    )
)
def test_fast_and_slow_paths_agree_on_mutated_tokens(
    mutations: list[tuple[int, str, bool]],
) -> None:
    token = f"{HEADER}.{PAYLOAD}.{SIGNATURE}"
    for at, char, insert in mutations:
        at %= len(token) + 1
        token = token[:at] + char + token[at + (0 if insert else 1) :]
    agree(token)


def test_the_header_cache_is_bounded() -> None:
    jose._HEADERS.clear()
    for n in range(3 * jose._MAX_HEADERS):
        header = b64(json.dumps({"alg": "RS256", "kid": f"k{n}"}).encode())
        assert jose.parse(f"{header}.{PAYLOAD}.{SIGNATURE}").header["kid"] == f"k{n}"
        assert len(jose._HEADERS) <= jose._MAX_HEADERS


def test_a_cached_header_is_the_same_header() -> None:
    jose._HEADERS.clear()
    first = jose.parse(f"{HEADER}.{PAYLOAD}.{SIGNATURE}")
    other = b64(b'{"iss":"https://issuer.example","sub":"mallory","exp":2}')
    second = jose.parse(f"{HEADER}.{other}.{SIGNATURE}")
    assert first.header == second.header == {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    assert second.payload["sub"] == "mallory"  # only the header is shared
    assert second.signing_input == f"{HEADER}.{other}".encode()


def test_a_refused_header_is_never_cached() -> None:
    jose._HEADERS.clear()
    header = b64(b'{"alg":"none"}')
    for _ in range(2):
        with pytest.raises(errors.TokenUnsupported):
            jose.parse(f"{header}.{PAYLOAD}.{SIGNATURE}")
    assert not jose._HEADERS


@pytest.mark.parametrize("size", range(8))
def test_well_formed_tokens_never_take_the_slow_path(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    def slow(token: str) -> jose.ParsedToken:
        raise AssertionError("a well-formed token took the slow path")

    monkeypatch.setattr(jose, "_parse_slow", slow)
    # Every length class of every segment: no padding, "==" and "=" once decoded.
    header = b64(json.dumps({"alg": "ES256", "kid": "k" * (1 + size)}).encode())
    payload = b64(json.dumps({"sub": "s" * size}).encode())
    signature = b64(bytes(64 + size))
    parsed = jose.parse(f"{header}.{payload}.{signature}")
    assert parsed.payload == {"sub": "s" * size} and parsed.signature == bytes(64 + size)
