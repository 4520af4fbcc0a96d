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
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink, LoggerSink, SubjectHasher
from iamscope.testing import LocalIssuer
from tests._policy import POLICY


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
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=sink,
        hash_key=b"k" * 32,
        audit_hits=1.0,  # every hit its own event (the default summarises them)
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


FORK = """
import json, logging, os, sys
from iamscope import IAMScope
from iamscope.telemetry.audit import LoggerSink
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
log = logging.getLogger("fork-test")
log.setLevel(logging.INFO)
log.addHandler(Keep())
policy = {"version": "v", "roles": {"r": {"permissions": ["x"]}},
          "bindings": [{"groups": ["g"], "roles": ["r"]}]}
with LocalIssuer() as issuer:
    iam = IAMScope([issuer.issuer_config("corp")], PolicyStore(policy), hash_key=b"k",
                   audit=LoggerSink(log, interval=3600))
    parent_id = iam.decide([]).decision_id
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own ids, a working writer
        child_id = iam.decide([]).decision_id
        ok = iam.audit.flush(timeout=5)
        os.write(write, json.dumps([child_id, ok, lines]).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id, flushed, child_lines = json.loads(os.read(read, 100000))
    assert child_id != parent_id and child_id[:12] != parent_id[:12], (child_id, parent_id)
    assert flushed, "the child's audit writer did not run"
    assert [json.loads(l)["decision_id"] for l in child_lines] == [child_id], child_lines
    print("ok")
"""


def test_a_forked_worker_has_its_own_ids_and_a_working_audit_writer() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_summarised_hits_are_counted_exactly_across_threads(local_issuer: LocalIssuer) -> None:
    sink = ListSink()
    iam = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=sink,
        hash_key=b"k" * 32,
        summary_interval=0.01,  # swaps while the threads count
    )
    headers = [(b"authorization", f"Bearer {local_issuer.mint(groups=['sales-east'])}".encode())]
    assert iam.decide(headers).cache == "miss"

    def hits() -> None:
        for _ in range(2000):
            assert iam.hit(headers, "GET", "/sales") is not None

    threads = [threading.Thread(target=hits) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    iam.close()
    summaries = [e for e in sink.events if e["cache"] == "hit"]
    assert sum(e["count"] for e in summaries) == 8000
    assert {(e["decision"], e["path"]) for e in summaries} == {("allow", "/sales")}
