"""The fleet over TLS (``rediss://``), as managed Redis services require: a real
redis-server listening on a TLS port only, with a certificate from a CA made here.

The CA's file reaches redis-py through the URL (``?ssl_ca_certs=``), which is how a
deployment names its CA without code. A server the client cannot trust, or a plain
``redis://`` URL aimed at the TLS port, must fail closed (503, never a pass), in bounded
time, and never print the URL's password.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iamscope.errors import RevocationsUnavailable
from iamscope.fleet import Fleet
from tests.fleet._redis import RedisServer, TLSFiles, redis_server
from tests.fleet.test_sync import principal, wait_until


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA; its certificate is written to ``<name>.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_tls_files(directory: Path) -> TLSFiles:
    """A CA, and a certificate it signs for 127.0.0.1 (what the client checks)."""
    ca_key, ca_cert = make_ca(directory, "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("redis"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "redis.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / "redis.key")
    return TLSFiles(
        cert=str(directory / "redis.pem"),
        key=str(directory / "redis.key"),
        ca=str(directory / "ca.pem"),
    )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(make_tls_files(tmp_path_factory.mktemp("tls"))) as server:
        yield server


def test_revocations_travel_over_tls(tls_redis: RedisServer, fleets: Callable[..., Fleet]) -> None:
    assert tls_redis.url.startswith("rediss://")
    worker, operator = fleets(tls_redis.url), fleets(tls_redis.url)
    assert worker.start() and operator.start()
    alice = principal()
    assert not worker.revocations.is_revoked(alice)
    operator.revoke("sub", "corp", "alice")
    assert wait_until(lambda: worker.revocations.is_revoked(alice), 1.0) <= 1.0


def test_an_untrusted_server_certificate_fails_closed(
    tls_redis: RedisServer,
    fleets: Callable[..., Fleet],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client trusts another CA: the handshake fails, nothing is synced, every check
    refuses; the warning names the fault, never the password in the URL."""
    make_ca(tmp_path, "other")
    url = f"rediss://:s3cr3t-pw@127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={tmp_path}/other.pem"
    fleet = fleets(url)
    with caplog.at_level(logging.WARNING, logger="iamscope"):
        started = time.monotonic()
        assert not fleet.start(wait=1.0)
        assert time.monotonic() - started < 3.0
        time.sleep(0.3)  # the listener has tried, and logged, by now
    with pytest.raises(RevocationsUnavailable):
        fleet.revocations.is_revoked(principal())
    assert "certificate" in caplog.text.lower()
    assert "s3cr3t-pw" not in caplog.text


def test_a_plain_url_to_the_tls_port_fails_closed(
    tls_redis: RedisServer, fleets: Callable[..., Fleet]
) -> None:
    """``redis://`` where the server speaks only TLS: refused, not hung, never synced."""
    fleet = fleets(f"redis://127.0.0.1:{tls_redis.port}/0")
    started = time.monotonic()
    assert not fleet.start(wait=1.0)
    assert time.monotonic() - started < 3.0
    with pytest.raises(RevocationsUnavailable):
        fleet.revocations.is_revoked(principal())
