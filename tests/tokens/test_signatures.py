"""Every supported JWS algorithm, signed by PyJWT (LocalIssuer) and checked by ours."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from iamscope import errors
from iamscope.testing import LocalIssuer, make_key
from iamscope.tokens import TokenVerifier
from iamscope.tokens.signatures import der_signature, verify_signature

ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


@pytest.mark.parametrize("alg", ALGS)
def test_each_algorithm_verifies_end_to_end(alg: str) -> None:
    with LocalIssuer((alg,)) as issuer:
        verifier = TokenVerifier([issuer.issuer_config()])
        token = issuer.mint(alg=alg)
        assert verifier.verify(token).subject == "user-1"
        head, body, sig = token.split(".")
        flipped = sig[:5] + ("A" if sig[5] != "A" else "B") + sig[6:]
        with pytest.raises(errors.SignatureInvalid):
            verifier.verify(f"{head}.{body}.{flipped}")


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_ecdsa_signature_of_the_wrong_width_is_refused(alg: str) -> None:
    key = make_key(alg)
    public = key.private_key.public_key()
    from jwt.algorithms import get_default_algorithms

    signature = get_default_algorithms()[alg].sign(b"m", key.private_key)
    assert verify_signature(alg, public, b"m", signature)
    assert not verify_signature(alg, public, b"m", signature[:-1])
    assert not verify_signature(alg, public, b"m", b"\x00" + signature)
    assert not verify_signature(alg, public, b"m", b"\x00" * len(signature))  # r = s = 0


@settings(max_examples=500, deadline=None)
@given(
    size=st.sampled_from([32, 48, 66]),
    data=st.data(),
)
def test_der_from_bytes_matches_the_reference_conversion(size: int, data: st.DataObject) -> None:
    # Leading zero bytes and high bits are where hand-made DER goes wrong: draw them often.
    first = st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])
    r = bytes([data.draw(first)]) + data.draw(st.binary(min_size=size - 1, max_size=size - 1))
    s = bytes([data.draw(first)]) + data.draw(st.binary(min_size=size - 1, max_size=size - 1))
    expected = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert der_signature(r + s, size) == expected


_HASH = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}
_CURVES = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_ecdsa_r_or_s_out_of_range_is_refused_and_high_s_accepted(alg: str) -> None:
    key = make_key(alg)
    public = key.private_key.public_key()
    size = {"ES256": 32, "ES384": 48, "ES512": 66}[alg]
    n = _CURVES[alg].group_order
    r, s = decode_dss_signature(key.private_key.sign(b"m", ec.ECDSA(_HASH[alg])))

    def raw(r: int, s: int) -> bytes:
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    assert verify_signature(alg, public, b"m", raw(r, s))
    # JWS does not require low S (RFC 7518 §3.4): (r, n - s) is the same signature.
    assert verify_signature(alg, public, b"m", raw(r, n - s))
    for bad_r, bad_s in ((0, s), (r, 0), (r + n, s), (r, s + n), (n, s), (r, n)):
        if max(bad_r, bad_s) < 256**size:  # wider than the field: the length check refuses
            assert not verify_signature(alg, public, b"m", raw(bad_r, bad_s))
