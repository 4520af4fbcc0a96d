"""Audit events (contract 7): one JSON object per decision, never blocking the request.

The request thread only captures what it must (the decision, method, path, time and the
current trace/span ids) into an :class:`AuditRecord`; building the event, hashing the
subject and serialising happen in the sink's background thread. Events never contain
the token or claim values: the subject appears only as a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from opentelemetry.trace import get_current_span

if TYPE_CHECKING:
    from iamscope.enforce import Decision

__all__ = [
    "AuditRecord",
    "AuditSink",
    "HitSummary",
    "ListSink",
    "LoggerSink",
    "SubjectHasher",
    "audit_event",
    "to_event",
]

HASH_KEY_ENV = "IAMSCOPE_HASH_KEY"
log = logging.getLogger("iamscope")
audit_log = logging.getLogger("iamscope.audit")


class SubjectHasher:
    """Keyed HMAC-SHA256 of issuer + subject: stable across processes that share the key,
    useless to anyone without it."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            env = os.environ.get(HASH_KEY_ENV)
            if env:
                key = env.encode()
            else:
                key = os.urandom(32)
                log.warning(
                    "iamscope: %s is not set; subject hashes in audit events are random per "
                    "process and cannot be correlated across processes",
                    HASH_KEY_ENV,
                )
        self._key = key

    def __call__(self, issuer: str, subject: str) -> str:
        message = issuer.encode() + b"\0" + subject.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]


class AuditRecord(NamedTuple):
    decision: Decision
    method: str
    path: str
    time: float
    trace: tuple[int, int] | None  # (trace_id, span_id) of the span current at decision
    hasher: SubjectHasher
    hits: int = 1  # > 1: a summary of identical allowed cache hits (see HitSummary)


def _trace_ids() -> tuple[int, int] | None:
    # Raw ints on the request thread; hex formatting happens in the sink's thread.
    context = get_current_span().get_span_context()
    return (context.trace_id, context.span_id) if context.is_valid else None


def audit_event(
    decision: Decision, method: str, path: str, hasher: SubjectHasher, now: float
) -> AuditRecord:
    """What the request thread records: cheap, no formatting."""
    return AuditRecord(decision, method, path, now, _trace_ids(), hasher)


def to_event(record: AuditRecord) -> dict[str, Any]:
    """The contract-7 event for a record (runs in the sink's thread)."""
    d = record.decision
    access, principal = d.access, d.principal
    return {
        "time": record.time,
        "decision_id": d.decision_id,
        "decision": "allow" if d.allowed else "deny",
        "code": d.error.code if d.error is not None else None,
        "issuer": principal.issuer if principal is not None else None,
        "subject_hash": (
            record.hasher(principal.issuer, principal.subject) if principal is not None else None
        ),
        "roles": sorted(access.roles) if access is not None else [],
        "method": record.method,
        "path": record.path,
        "trace_id": f"{record.trace[0]:032x}" if record.trace else None,
        "span_id": f"{record.trace[1]:016x}" if record.trace else None,
        "policy_version": access.policy_version if access is not None else None,
        "cache": d.cache,
        "count": record.hits,
    }


class AuditSink(Protocol):
    def emit(self, record: AuditRecord) -> None: ...

    def close(self) -> None: ...


class LoggerSink:
    """JSON lines on the ``iamscope.audit`` logger, written by a background thread.

    The queue is bounded: if the logger cannot keep up, events are dropped and counted
    (``dropped``) rather than slowing requests down.
    """

    def __init__(
        self,
        logger: logging.Logger = audit_log,
        *,
        max_queue: int = 100_000,
        serialise: Callable[[AuditRecord], dict[str, Any]] = to_event,
    ) -> None:
        self._logger = logger
        self._serialise = serialise
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(max_queue)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="iamscope-audit", daemon=True)
        self._thread.start()

    def emit(self, record: AuditRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is None:
                    return
                line = json.dumps(self._serialise(record), separators=(",", ":"))
                self._logger.info(line)
            except Exception:  # an audit fault must never take the thread down
                log.exception("iamscope: could not write an audit event")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued events are written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)


class ListSink:
    """Collects events in memory, synchronously (tests and examples)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, record: AuditRecord) -> None:
        self.events.append(to_event(record))

    def close(self) -> None:
        pass


class HitSummary:
    """Counts allowed cache hits per (identity, method, path) and hands the sink one
    record per group every ``interval`` seconds: the per-request cost is a dict update,
    not a JSON event. Denials never go through here; they are always recorded one by one.
    """

    def __init__(
        self,
        sink: AuditSink,
        hasher: SubjectHasher,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink, self._hasher, self._clock = sink, hasher, clock
        self._counts: dict[tuple[int, str, str], list[Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="iamscope-audit-summary", daemon=True
        )
        self._thread.start()

    def add(self, decision: Decision, method: str, path: str) -> None:
        key = (id(decision.principal), method, path)
        with self._lock:
            found = self._counts.get(key)
            if found is None:
                self._counts[key] = [decision, 1]
            else:
                found[1] += 1

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
        now = self._clock()
        for (_, method, path), (decision, count) in counts.items():
            self._sink.emit(AuditRecord(decision, method, path, now, None, self._hasher, count))

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
