"""The gateway on a real socket: uvicorn in a thread on 127.0.0.1, and raw HTTP/1.1
clients that send what an exporter would not (a body that stops half-way).

    with serve(app) as port:
        sock = send_part(port, token, declared=10_000, sent=100)
        answer = read_answer(sock, timeout=10)   # status, headers, body, closed
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from tests.telemetry._rotel import free_port


@contextmanager
def serve(app: Any) -> Iterator[int]:
    """``app`` under uvicorn (h11, as ``iamscope gateway`` runs it) until the block ends."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def send_part(
    port: int,
    token: str,
    *,
    declared: int,
    body: bytes = b"",
    content_type: str = "application/x-protobuf",
) -> socket.socket:
    """A POST /v1/traces that says ``declared`` body bytes and sends only ``body``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        "POST /v1/traces HTTP/1.1\r\n"
        "host: gateway\r\n"
        f"content-type: {content_type}\r\n"
        f"authorization: Bearer {token}\r\n"
        f"content-length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the gateway closed the connection after answering
    at: float  # time.monotonic() when the answer (and the close, if any) was seen


def read_answer(sock: socket.socket, timeout: float) -> Answer:
    """The HTTP answer on ``sock`` and whether the server then closed the connection
    (waits up to ``timeout`` in all; an answer without a close waits out a short
    grace)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            raise AssertionError(f"closed without an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        rest += chunk
    closed = False
    with contextlib.suppress(TimeoutError):  # a timeout: still open
        closed = _recv(sock, min(deadline, time.monotonic() + 1.0)) == b""
    sock.close()
    return Answer(int(status_line.split()[1]), headers, rest[:length], closed, time.monotonic())


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""
