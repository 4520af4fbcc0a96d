"""A throwaway redis-server for the tests: found or installed (Debian's package),
started on 127.0.0.1 at a free port in a temp dir with persistence off, stopped by pid.

Like tests/_postgres.py: ``make test`` must pass on a fresh machine, so the suite
installs what it needs (``apt-get install redis-server`` as root) and skips with the
reason only where it cannot.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests._postgres import apt_install

__all__ = ["RedisServer", "TLSFiles", "redis_server"]


def _binary() -> str | None:
    found = shutil.which("redis-server")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install("redis-server")
        found = shutil.which("redis-server")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS-only redis-server: its certificate and key, and the CA that
    signed them (what a client must trust)."""

    cert: str
    key: str
    ca: str


@dataclass
class RedisServer:
    binary: str
    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None
    tls: TLSFiles | None = None  # TLS only: the plain port is closed

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    def _ports(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            self.tls.cert,
            "--tls-key-file",
            self.tls.key,
            "--tls-ca-cert-file",
            self.tls.ca,
            "--tls-auth-clients",
            "no",
        ]

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
            s = raw
            if self.tls is not None:
                s = ssl.create_default_context(cafile=self.tls.ca).wrap_socket(
                    raw, server_hostname="127.0.0.1"
                )
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                *self._ports(),
                "--dir",
                self.directory,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._pong():
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL)  # an outage, as abrupt as a real one
        process.wait(timeout=10)


@contextmanager
def redis_server(tls: TLSFiles | None = None) -> Iterator[RedisServer]:
    binary = _binary()
    if binary is None:
        pytest.skip("redis-server is missing and cannot be installed here (not root)")
    with tempfile.TemporaryDirectory(prefix="iamscope-redis-") as directory:
        server = RedisServer(binary, _free_port(), directory, tls=tls)
        server.start()
        try:
            yield server
        finally:
            server.stop()
