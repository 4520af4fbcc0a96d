"""Signature checks straight on ``cryptography`` key objects, one function per JWS alg.

PyJWT's ``Algorithm.verify`` does the same work but, per call, builds hash and padding
objects and converts ECDSA signatures through a hex round trip; measured on this
project's benchmark that costs ~5 µs per ES256 token (see benchmarks/README.md). Keys
are still built by PyJWT (``PyJWK``) once, when a JWKS is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["verify_signature"]

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
_ECDSA = {bits: ec.ECDSA(h) for bits, h in _HASHES.items()}
_EC_COORDINATE = {"256": 32, "384": 48, "512": 66}  # ES512 uses P-521: 66-byte coordinates

Check = Callable[[Any, bytes, bytes], None]  # raises InvalidSignature


def _rsa(bits: str) -> Check:
    digest = _HASHES[bits]

    def check(key: Any, message: bytes, signature: bytes) -> None:
        key.verify(signature, message, _PKCS1, digest)

    return check


def _pss(bits: str) -> Check:
    digest, pss = _HASHES[bits], _PSS[bits]

    def check(key: Any, message: bytes, signature: bytes) -> None:
        key.verify(signature, message, pss, digest)

    return check


def _ecdsa(bits: str) -> Check:
    size, ecdsa = _EC_COORDINATE[bits], _ECDSA[bits]

    def check(key: Any, message: bytes, signature: bytes) -> None:
        # JWS carries R || S of fixed width (RFC 7518 §3.4); any other length is forged.
        if len(signature) != 2 * size:
            raise InvalidSignature
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), message, ecdsa)

    return check


def _eddsa(key: Any, message: bytes, signature: bytes) -> None:
    key.verify(signature, message)


_CHECKS: Mapping[str, Check] = {
    **{f"RS{b}": _rsa(b) for b in _HASHES},
    **{f"PS{b}": _pss(b) for b in _HASHES},
    **{f"ES{b}": _ecdsa(b) for b in _HASHES},
    "EdDSA": _eddsa,
}


def verify_signature(alg: str, key: Any, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``key``'s signature of ``message`` under ``alg``."""
    try:
        _CHECKS[alg](key, message, signature)
    except InvalidSignature:
        return False
    return True
