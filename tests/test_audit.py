"""The audit sinks: JSON lines off the request thread, bounded, and a keyed subject hash."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from iamscope import IAMScope
from iamscope.audit import LoggerSink, SubjectHasher
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer
from tests.test_asgi import POLICY


class Collect(logging.Handler):
    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.gate = gate

    def emit(self, record: logging.LogRecord) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.lines.append(record.getMessage())


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("iamscope.audit.test")
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log
    log.handlers.clear()


def test_events_are_json_lines_written_by_the_background_thread(
    local_issuer: LocalIssuer, logger: logging.Logger
) -> None:
    handler = Collect()
    logger.addHandler(handler)
    sink = LoggerSink(logger, interval=3600)  # only flush() wakes the writer
    iam = IAMScope(
        [local_issuer.issuer_config("corp")], PolicyStore(POLICY), audit=sink, hash_key=b"k" * 32
    )
    token = local_issuer.mint(sub="alice", groups=["sales-east"])
    headers = [(b"authorization", f"Bearer {token}".encode())]
    decisions = [iam.decide(headers, "GET", "/sales") for _ in range(3)]
    assert handler.lines == []  # nothing written on the request thread
    assert sink.flush()
    events = [json.loads(line) for line in handler.lines]
    assert [e["decision_id"] for e in events] == [d.decision_id for d in decisions]
    assert [e["cache"] for e in events] == ["miss", "hit", "hit"]
    assert token not in "".join(handler.lines) and "alice" not in "".join(handler.lines)
    iam.close()


def test_a_stuck_logger_drops_and_counts_rather_than_blocking(
    local_issuer: LocalIssuer, logger: logging.Logger
) -> None:
    gate = threading.Event()
    handler = Collect(gate)
    logger.addHandler(handler)
    sink = LoggerSink(logger, max_queue=3, interval=0.001)
    iam = IAMScope(
        [local_issuer.issuer_config("corp")], PolicyStore(POLICY), audit=sink, hash_key=b"k" * 32
    )
    for _ in range(20):  # each a token_missing denial, audited one by one
        assert not iam.decide([]).allowed
    assert sink.dropped >= 20 - 3 - 1  # at most one in the writer's hands, three queued
    gate.set()
    assert sink.flush()
    assert len(handler.lines) == 20 - sink.dropped
    assert all(json.loads(line)["code"] == "token_missing" for line in handler.lines)
    iam.close()


def test_close_writes_what_is_pending(local_issuer: LocalIssuer, logger: logging.Logger) -> None:
    handler = Collect()
    logger.addHandler(handler)
    sink = LoggerSink(logger, interval=3600)
    iam = IAMScope(
        [local_issuer.issuer_config("corp")], PolicyStore(POLICY), audit=sink, hash_key=b"k" * 32
    )
    iam.decide([])
    iam.close()
    assert len(handler.lines) == 1


def test_subject_hash_is_a_keyed_hmac_remembered_within_bounds() -> None:
    hasher = SubjectHasher(b"key")
    expected = hmac.new(b"key", b"corp\0alice", hashlib.sha256).hexdigest()[:32]
    assert hasher("corp", "alice") == hasher("corp", "alice") == expected
    assert (
        hasher("corp", "bob") != expected and SubjectHasher(b"other")("corp", "alice") != expected
    )
    hasher.MEMO_SIZE = 10
    for i in range(25):
        hasher("corp", f"user-{i}")
    assert len(hasher._memo) <= 10
    assert hasher("corp", "alice") == expected
