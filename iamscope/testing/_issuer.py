"""A real, local OpenID issuer for tests and demos: real keys, real HTTP on loopback.

``LocalIssuer`` serves discovery, a JWKS and per-kid PEM keys (the AWS ALB layout) from
a background thread on 127.0.0.1, mints tokens with any claims and headers, signs raw
bytes for attack tests, rotates, retires and replaces keys (several under one ``kid``
too), answers conditional requests (``ETag``, 304) with an optional ``Cache-Control``,
simulates outages and hangs, and counts the requests it received so tests can prove
single-flight, flood and refresh limits.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from iamscope.tokens.issuer import IssuerConfig

__all__ = ["LocalIssuer", "SigningKey"]

_ALGS = get_default_algorithms()
_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    private_key: Any
    public_jwk: dict[str, Any]

    @property
    def public_pem(self) -> bytes:
        key = self.private_key.public_key()
        return bytes(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


_POOL_SIZE = 16
_pool_counter: Counter[str] = Counter()
_pool_lock = threading.Lock()


def _next_slot(alg: str) -> int:
    # Round-robin over a pool: keys made one after another always differ (two issuers in
    # one test never share key material), yet a long test run generates at most
    # _POOL_SIZE keys per algorithm.
    with _pool_lock:
        slot = _pool_counter[alg] % _POOL_SIZE
        _pool_counter[alg] += 1
    return slot


@functools.lru_cache(maxsize=256)
def _private_key(alg: str, slot: int, bits: int) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if alg in _CURVES:
        return ec.generate_private_key(_CURVES[alg])
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"LocalIssuer cannot make keys for {alg!r}")


def make_key(alg: str, *, kid: str | None = None, bits: int = 2048) -> SigningKey:
    """A signing key from the process-wide pool, with a fresh random ``kid``."""
    private = _private_key(alg, _next_slot(f"{alg}/{bits}"), bits)
    jwk = json.loads(_ALGS[alg].to_jwk(private.public_key()))
    kid = kid or secrets.token_hex(8)
    jwk.update({"kid": kid, "use": "sig", "alg": alg})
    return SigningKey(kid, alg, private, jwk)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class LocalIssuer:
    """An OpenID provider on ``http://127.0.0.1:<port>``. Use as a context manager."""

    def __init__(
        self,
        algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA"),
        *,
        audience: str = "api://local",
        path: str = "",
        port: int = 0,
    ) -> None:
        """``port``: where to listen on 127.0.0.1; 0 (the default, for tests) picks a free
        one. :attr:`port` is the port actually bound once started."""
        self.audience = audience
        self._listen_port = port
        self._path = path.rstrip("/")
        self._lock = threading.Lock()
        self.keys: dict[str, SigningKey] = {}  # kid → the newest key made under it
        self._published: list[SigningKey] = []
        for alg in algorithms:
            self.add_key(alg)
        self.requests: Counter[str] = Counter()
        #: Requests that carried If-None-Match, and those answered 304, by path.
        self.conditional: Counter[str] = Counter()
        self.not_modified: Counter[str] = Counter()
        self.failure: int | None = None  # answer every request with this status
        self.delay = 0.0  # seconds to wait before answering (slow-issuer tests)
        self.etags = True  # send an ETag with the JWKS and answer If-None-Match with 304
        self.cache_control: str | None = None  # sent with the JWKS when set
        self._open = threading.Event()  # cleared by hang(): requests wait until release()
        self._open.set()
        self.discovery_overrides: dict[str, Any] = {}
        self.redirects: dict[str, str] = {}  # path → Location (redirect-following tests)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> LocalIssuer:
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", self._listen_port), _handler(self))
            self._server.daemon_threads = True
            # A short poll interval: shutdown() waits for the loop to notice, once per test.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name="iamscope-local-issuer",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._open.set()  # let hanging requests finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalIssuer is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The issuer identifier (``iss``)."""
        return self.base_url + self._path

    @property
    def jwks_uri(self) -> str:
        return self.base_url + "/jwks.json"

    @property
    def pem_url(self) -> str:
        """Per-kid PEM endpoint in the AWS ALB layout, with ``{kid}`` to fill."""
        return self.base_url + "/pem/{kid}"

    # --- keys ------------------------------------------------------------------------

    def add_key(
        self, alg: str, *, publish: bool = True, bits: int = 2048, kid: str | None = None
    ) -> SigningKey:
        """A new key; ``kid`` may repeat a published one (duplicate-kid tests)."""
        with self._lock:
            key = make_key(alg, bits=bits, kid=kid)
            self.keys[key.kid] = key
            if publish:
                self._published.append(key)
        return key

    def publish(self, key: SigningKey) -> None:
        """Put a key (made with ``publish=False``, or retired) in the JWKS."""
        with self._lock:
            if key not in self._published:
                self._published.append(key)

    def rotate(self, alg: str = "RS256", *, retire_old: bool = False) -> SigningKey:
        """Publish a new key for ``alg``; optionally drop the older ones from the JWKS."""
        old = [k.kid for k in self._published if k.alg == alg]
        key = self.add_key(alg)
        if retire_old:
            for kid in old:
                self.retire(kid)
        return key

    def replace(self, kid: str) -> SigningKey:
        """New key material under the same ``kid`` (some IdPs rotate this way)."""
        old = self.keys[kid]
        with self._lock:
            key = make_key(old.alg, kid=kid)
            self.keys[kid] = key
            self._published = [key if k.kid == kid else k for k in self._published]
        return key

    def retire(self, kid: str) -> None:
        """Drop every key under ``kid`` from the JWKS."""
        with self._lock:
            self._published = [k for k in self._published if k.kid != kid]

    def key_for(self, alg: str) -> SigningKey:
        """The newest published key for ``alg``."""
        for key in reversed(self._published):
            if key.alg == alg:
                return key
        raise KeyError(f"no published {alg} key")

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.public_jwk for key in self._published]}

    def hang(self) -> None:
        """From now on every request waits (the connection open, no answer) until
        :meth:`release` or :meth:`stop`: an issuer that hangs."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    # --- tokens ----------------------------------------------------------------------

    def claims(self, **claims: Any) -> dict[str, Any]:
        """Default claims (iss, aud, sub, iat, exp) updated with ``claims``."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
        }
        base.update(claims)
        return {k: v for k, v in base.items() if v is not None}

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        alg: str = "RS256",
        key: SigningKey | None = None,
        headers: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        """A signed token: default claims, then ``claims``, then keyword claims.

        A claim set to ``None`` is removed. ``headers`` are added to (or, with ``None``
        values, removed from) the protected header.
        """
        payload = self.claims(**{**(claims or {}), **extra})
        key = key or self.key_for(alg)
        header: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": key.kid}
        header.update(headers or {})
        header = {k: v for k, v in header.items() if v is not None}
        return self.sign_raw(
            json.dumps(header).encode(), json.dumps(payload).encode(), key=key, alg=alg
        )

    def sign_raw(
        self,
        header: bytes,
        payload: bytes,
        *,
        key: SigningKey | None = None,
        alg: str | None = None,
    ) -> str:
        """Sign exact header and payload bytes (for malformed-token and attack tests)."""
        key = key or self.key_for(alg or "RS256")
        signing_input = f"{b64url(header)}.{b64url(payload)}"
        signature = _ALGS[alg or key.alg].sign(signing_input.encode(), key.private_key)
        return f"{signing_input}.{b64url(signature)}"

    def issuer_config(self, name: str = "local", **settings: Any) -> IssuerConfig:
        """An :class:`IssuerConfig` trusting this issuer (discovery unless overridden)."""
        settings.setdefault("audience", (self.audience,))
        return IssuerConfig(name=name, issuer=self.url, **settings)

    # --- HTTP ------------------------------------------------------------------------

    def _answer(
        self, path: str, headers: Mapping[str, str]
    ) -> tuple[int, str, bytes, dict[str, str]]:
        with self._lock:
            self.requests[path] += 1
            if "if-none-match" in headers:
                self.conditional[path] += 1
        self._open.wait(timeout=60)
        if self.delay:
            time.sleep(self.delay)
        status, ctype, body = self._document(path)
        extra: dict[str, str] = {}
        if path == "/jwks.json" and status == 200:
            if self.cache_control is not None:
                extra["cache-control"] = self.cache_control
            if self.etags:
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                extra["etag"] = etag
                if headers.get("if-none-match") == etag:
                    with self._lock:
                        self.not_modified[path] += 1
                    return 304, ctype, b"", extra
        return status, ctype, body, extra

    def _document(self, path: str) -> tuple[int, str, bytes]:
        if self.failure is not None:
            return self.failure, "text/plain", b"unavailable"
        if path in self.redirects:
            return 302, self.redirects[path], b""
        if path == self._path + "/.well-known/openid-configuration":
            doc = {
                "issuer": self.url,
                "jwks_uri": self.jwks_uri,
                "id_token_signing_alg_values_supported": sorted(
                    {k.alg for k in self.keys.values()}
                ),
            }
            doc.update(self.discovery_overrides)
            return 200, "application/json", json.dumps(doc).encode()
        if path == "/jwks.json":
            return 200, "application/json", json.dumps(self.jwks()).encode()
        if path.startswith("/pem/"):
            key = self.keys.get(path[len("/pem/") :])
            if key is not None and key in self._published:
                return 200, "application/x-pem-file", key.public_pem
        return 404, "text/plain", b"not found"


def _handler(issuer: LocalIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, ctype, body, extra = issuer._answer(self.path.split("?", 1)[0], headers)
            self.send_response(status)
            if status == 302:
                self.send_header("location", ctype)
            else:
                self.send_header("content-type", ctype)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler
