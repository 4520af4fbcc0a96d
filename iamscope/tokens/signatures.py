"""Signature checks straight on ``cryptography`` key objects, one function per JWS alg.

PyJWT's ``Algorithm.verify`` does the same work but, per call, builds hash and padding
objects and converts ECDSA signatures through a hex round trip; measured on this
project's benchmark that costs ~5 µs per ES256 token (see benchmarks/README.md). Keys
are still built by PyJWT (``PyJWK``) once, when a JWKS is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

__all__ = ["SIGNATURE_CHECKS", "der_signature", "verify_signature"]

_HASHES: Mapping[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_PKCS1 = padding.PKCS1v15()
# RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash output.
_PSS = {
    bits: padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size) for bits, h in _HASHES.items()
}
# The message is hashed by hashlib and the digest handed over as Prehashed: the same
# check (same hash, same DigestInfo or ECDSA input), without cryptography building a
# hash context through Python on every call (~0.2 µs RS256, ~0.5 µs ES256, measured).
_HASHLIB = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
_PRE = {bits: Prehashed(h) for bits, h in _HASHES.items()}
_ECDSA = {bits: ec.ECDSA(p) for bits, p in _PRE.items()}
_EC_COORDINATE = {"256": 32, "384": 48, "512": 66}  # ES512 uses P-521: 66-byte coordinates

#: (key, message, signature) -> whether it verifies. Each catches InvalidSignature itself:
#: the verifier calls these straight, one call and no wrapper per token.
Check = Callable[[Any, bytes, bytes], bool]


def _rsa(bits: str, scheme: padding.AsymmetricPadding) -> Check:
    """RSxxx (PKCS#1 v1.5) or PSxxx (PSS), by ``scheme``."""
    digest, h = _PRE[bits], _HASHLIB[bits]

    def check(key: Any, message: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, h(message).digest(), scheme, digest)
        except InvalidSignature:
            return False
        return True

    return check


def _der_prefixes(size: int) -> tuple[tuple[bytes, ...], tuple[bytes, bytes]]:
    """DER around two ``size``-byte unsigned integers whose first byte is not zero.

    An INTEGER is two's complement, so a first byte of 0x80 or more needs a 0x00 in front;
    the four heads are indexed by (r's high bit, s's high bit), the two middles by s's.
    Short-form lengths only (so ``size`` ≤ 60: P-256 and P-384).
    """
    heads = tuple(
        bytes((0x30, 4 + 2 * size + hr + hs, 0x02, size + hr)) + b"\x00" * hr
        for hr in (0, 1)
        for hs in (0, 1)
    )
    return heads, (bytes((0x02, size)), bytes((0x02, size + 1, 0x00)))


_DER = {size: _der_prefixes(size) for size in (32, 48)}  # P-256, P-384


def der_signature(signature: bytes, size: int) -> bytes:
    """JWS R || S (RFC 7518 §3.4, ``2 * size`` bytes, checked by the caller) as DER.

    Built from the bytes when neither half starts with a zero byte (all but ~1 in 128
    signatures): ~0.3 µs where ``encode_dss_signature`` over two ints takes ~1 µs. Any
    other case (a leading zero, r or s zero, P-521's long-form lengths) takes the
    reference conversion; r or s out of [1, n - 1] is refused by OpenSSL either way.
    """
    r0, s0 = signature[0], signature[size]
    prefixes = _DER.get(size)
    if prefixes is not None and r0 and s0:
        heads, middles = prefixes
        hs = s0 >> 7
        return b"".join(
            (heads[(r0 >> 7) * 2 + hs], signature[:size], middles[hs], signature[size:])
        )
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    return encode_dss_signature(r, s)


def _ecdsa(bits: str) -> Check:
    size, ecdsa, h = _EC_COORDINATE[bits], _ECDSA[bits], _HASHLIB[bits]

    def check(key: Any, message: bytes, signature: bytes) -> bool:
        # JWS carries R || S of fixed width (RFC 7518 §3.4); any other length is forged.
        if len(signature) != 2 * size:
            return False
        try:
            key.verify(der_signature(signature, size), h(message).digest(), ecdsa)
        except InvalidSignature:
            return False
        return True

    return check


def _eddsa(key: Any, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


SIGNATURE_CHECKS: Mapping[str, Check] = {
    **{f"RS{b}": _rsa(b, _PKCS1) for b in _HASHES},
    **{f"PS{b}": _rsa(b, _PSS[b]) for b in _HASHES},
    **{f"ES{b}": _ecdsa(b) for b in _HASHES},
    "EdDSA": _eddsa,
}


def verify_signature(alg: str, key: Any, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``key``'s signature of ``message`` under ``alg``."""
    return SIGNATURE_CHECKS[alg](key, message, signature)
