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
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests._postgres import apt_install

__all__ = ["RedisServer", "redis_server"]


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


@dataclass
class RedisServer:
    binary: str
    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
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
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
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
def redis_server() -> Iterator[RedisServer]:
    binary = _binary()
    if binary is None:
        pytest.skip("redis-server is missing and cannot be installed here (not root)")
    with tempfile.TemporaryDirectory(prefix="iamscope-redis-") as directory:
        server = RedisServer(binary, _free_port(), directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()
