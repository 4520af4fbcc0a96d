"""Every supported JWS algorithm, signed by PyJWT (LocalIssuer) and checked by ours."""

from __future__ import annotations

import pytest

from iamscope import errors
from iamscope.testing import LocalIssuer, make_key
from iamscope.tokens import TokenVerifier
from iamscope.tokens.signatures import verify_signature

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
