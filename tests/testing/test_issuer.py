"""LocalIssuer (testing/_issuer.py) on a port of the caller's choosing."""

from __future__ import annotations

import socket

import httpx
import pytest

from iamscope.testing import LocalIssuer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_chosen_port_is_the_one_served() -> None:
    port = free_port()
    with LocalIssuer(("RS256",), port=port) as issuer:
        assert issuer.port == port and issuer.url.startswith(f"http://127.0.0.1:{port}")
        document = httpx.get(issuer.base_url + "/.well-known/openid-configuration").json()
        assert document["jwks_uri"] == issuer.jwks_uri


def test_a_busy_port_fails_to_start(local_issuer: LocalIssuer) -> None:
    with pytest.raises(OSError):
        LocalIssuer(("RS256",), port=local_issuer.port).start()
