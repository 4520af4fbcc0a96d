"""Senders that stall mid-body, on real sockets, beside live exports: the gateway under
uvicorn, workload tokens from a real local issuer, a real OTLP/HTTP receiver upstream.

Timing assertions are upper bounds with seconds of slack (when a stalled connection is
closed at the latest), never speed."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status

from iamscope import IAMScope
from iamscope.gateway.app import OTLPGateway
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer
from tests.gateway._serve import Answer, read_answer, send_part, serve
from tests.gateway.test_app import ENV, POLICY, PROTOBUF, export, resource, settings
from tests.telemetry._receiver import OTLPHTTPReceiver

STALLED = 64  # as many as the gateway's default max_inflight: every slot, before
SLACK = 5.0  # seconds on top of a deadline before a test calls a connection unclosed


@pytest.fixture
def receiver() -> Iterator[OTLPHTTPReceiver]:
    with OTLPHTTPReceiver() as r:
        yield r


@pytest.fixture
def iam(local_issuer: LocalIssuer) -> Iterator[IAMScope]:
    scope = IAMScope([local_issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=b"k")
    yield scope
    scope.close()


def live_export(client: httpx.Client, port: int, token: str) -> httpx.Response:
    return client.post(
        f"http://127.0.0.1:{port}/v1/traces",
        content=export(resource("prod", "api", 1)),
        headers={"content-type": PROTOBUF, "authorization": f"Bearer {token}"},
    )


def reason(answer: Answer) -> str:
    """The ErrorInfo reason of a raw answer's protobuf google.rpc.Status body."""
    assert answer.headers["content-type"] == PROTOBUF
    status = Status.FromString(answer.body)
    info = ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    return info.reason


def gateway(
    iam: IAMScope, receiver: OTLPHTTPReceiver, body_timeout: float, min_body_rate: float = 0
) -> OTLPGateway:
    """min_body_rate 0 (the default here): a stalled body is held for the whole deadline."""
    limits = {"body_timeout": body_timeout, "min_body_rate": min_body_rate}
    return OTLPGateway(iam, settings(receiver.endpoint, **limits), environ=ENV)


def wait_until(done: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the gateway never got there"
        time.sleep(0.01)


def test_stalled_senders_never_keep_live_exports_out_and_are_closed_in_time(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    body_timeout = 4.0
    app = gateway(iam, receiver, body_timeout)
    part = export(resource("prod", "api", 50))
    with serve(app) as port, httpx.Client() as client:
        # 64 authenticated senders, each its own identity, each stalling mid-body.
        tokens = [local_issuer.mint(sub=f"stalled-{i}", groups=["admins"]) for i in range(STALLED)]
        started = time.monotonic()
        stalled = [
            send_part(port, t, declared=len(part), body=part[: len(part) // 2]) for t in tokens
        ]
        wait_until(lambda: app._slots.reading == STALLED)  # every one is mid-body
        live = local_issuer.mint(sub="live", groups=["admins"])
        answers = [live_export(client, port, live).status_code for _ in range(10)]
        assert answers == [200] * 10
        assert app._slots.reading == STALLED  # the live exports ran beside all of them
        closed = [read_answer(sock, body_timeout + SLACK) for sock in stalled]
    assert receiver.wait_for(10)
    assert {(a.status, a.closed) for a in closed} == {(408, True)}
    assert {reason(a) for a in closed} == {"BODY_TOO_SLOW"}
    assert all(a.headers["connection"] == "close" for a in closed)
    assert max(a.at for a in closed) - started <= body_timeout + SLACK


def test_one_sender_stalling_many_bodies_holds_only_its_share(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    body_timeout = 4.0
    app = gateway(iam, receiver, body_timeout)
    share = app.settings.sender_slots
    assert share == 16  # a quarter of the default 64 slots
    greedy = local_issuer.mint(sub="greedy", groups=["admins"])
    part = export(resource("prod", "api", 50))
    with serve(app) as port, httpx.Client() as client:
        socks = [
            send_part(port, greedy, declared=len(part), body=part[:100]) for _ in range(STALLED)
        ]
        # Beyond its share, a sender is told at once to retry later, and let go.
        started = time.monotonic()
        answers = [read_answer(sock, body_timeout + SLACK) for sock in socks]
        refused = [a for a in answers if a.status == 429]
        timed_out = [a for a in answers if a.status == 408]
        assert len(refused) == STALLED - share and len(timed_out) == share
        assert all(a.closed and a.headers["retry-after"] == "1" for a in refused)
        assert {reason(a) for a in refused} == {"SENDER_AT_CAPACITY"}
        assert all(a.closed for a in timed_out)
        assert max(a.at for a in timed_out) - started <= body_timeout + SLACK
        # Once its stalled bodies are closed, the same sender exports again.
        assert live_export(client, port, greedy).status_code == 200


def test_the_same_sender_is_refused_while_its_share_is_stalled_others_are_not(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver, 4)
    greedy = local_issuer.mint(sub="greedy", groups=["admins"])
    part = export(resource("prod", "api", 50))
    with serve(app) as port, httpx.Client() as client:
        socks = [
            send_part(port, greedy, declared=len(part), body=part[:100])
            for _ in range(app.settings.sender_slots)
        ]
        wait_until(lambda: app._slots.reading == len(socks))
        same = live_export(client, port, greedy)
        other = live_export(client, port, local_issuer.mint(sub="other", groups=["admins"]))
        for sock in socks:
            read_answer(sock, 4 + SLACK)
    assert same.status_code == 429 and same.headers["retry-after"] == "1"
    assert other.status_code == 200


def test_a_trickling_sender_is_closed_by_the_minimum_rate_long_before_the_deadline(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    # A 30 s deadline, and 1024 bytes/s on average after the first second: 64 bytes/s
    # (16 bytes every 0.25 s) keeps the connection busy but falls behind in about 1 s.
    app = gateway(iam, receiver, 30, min_body_rate=1024)
    token = local_issuer.mint(groups=["admins"])
    with serve(app) as port:
        sock = send_part(port, token, declared=65_536)
        started = time.monotonic()
        while time.monotonic() - started < 30:
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                break
            try:
                sock.sendall(b"\0" * 16)
            except OSError:
                break  # closed under us: the answer is already there to read
        answer = read_answer(sock, 10)
    assert answer.status == 408 and answer.closed and reason(answer) == "BODY_TOO_SLOW"
    assert answer.at - started <= 1 + SLACK  # the rate, not the 30 s deadline, closed it
    assert receiver.received == []


def test_a_slow_body_above_the_minimum_rate_is_received(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver, 30, min_body_rate=1024)
    body = export(resource("prod", "api", 400))
    assert len(body) > 8 * 1024
    chunk = len(body) // 8 + 1
    with serve(app) as port:
        sock = send_part(port, local_issuer.mint(groups=["admins"]), declared=len(body))
        for start in range(0, len(body), chunk):  # ~2 s for the body: slow, not stalled
            sock.sendall(body[start : start + chunk])
            time.sleep(0.25)
        answer = read_answer(sock, 30)
    assert answer.status == 200 and not answer.closed  # kept alive for the next export
    assert receiver.wait_for(400)
