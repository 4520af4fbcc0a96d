"""Audit events (contract 7): one JSON object per decision, never blocking the request.

The request thread only captures what it must (the decision, method, path, time and the
current trace/span ids) into an :class:`AuditRecord`; building the event, hashing the
subject and serialising happen in the sink's background thread. Events never contain
the token or claim values: the subject appears only as a keyed hash.
"""

from __future__ import annotations

import collections
import hmac
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from opentelemetry.trace import get_current_span

from iamscope._fork import after_fork

if TYPE_CHECKING:
    from iamscope.engine.decision import Decision

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
# Built once: json.dumps(..., separators=...) builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
audit_log = logging.getLogger("iamscope.audit")


class SubjectHasher:
    """Keyed HMAC-SHA256 of issuer + subject: stable across processes that share the key,
    useless to anyone without it."""

    #: Hashes remembered (a subject makes many requests); the memo is dropped when full.
    MEMO_SIZE = 10_000

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
        self._memo: dict[tuple[str, str], str] = {}

    def __call__(self, issuer: str, subject: str) -> str:
        found = self._memo.get((issuer, subject))
        if found is None:
            message = issuer.encode() + b"\0" + subject.encode("utf-8", "surrogatepass")
            found = hmac.digest(self._key, message, "sha256").hex()[:32]
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            self._memo[issuer, subject] = found
        return found


class AuditRecord(NamedTuple):
    decision: Decision
    method: str
    path: str
    time: float
    trace: tuple[int, int] | None  # (trace_id, span_id) of the span current at decision
    hasher: SubjectHasher | None  # None: subject hashing is off
    hits: int = 1  # > 1: a summary of identical allowed cache hits (see HitSummary)
    details: str | None = None  # what an export decision did (the OTLP gateway)


def _trace_ids() -> tuple[int, int] | None:
    # Raw ints on the request thread; hex formatting happens in the sink's thread.
    context = get_current_span().get_span_context()
    return (context.trace_id, context.span_id) if context.is_valid else None


def audit_event(
    decision: Decision, method: str, path: str, hasher: SubjectHasher | None, now: float
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
            record.hasher(principal.issuer, principal.subject)
            if principal is not None and record.hasher is not None
            else None
        ),
        "roles": sorted(access.roles) if access is not None else [],
        "method": record.method,
        "path": record.path,
        "trace_id": f"{record.trace[0]:032x}" if record.trace else None,
        "span_id": f"{record.trace[1]:016x}" if record.trace else None,
        "policy_version": access.policy_version if access is not None else None,
        "cache": d.cache,
        "count": record.hits,
        **({"details": record.details} if record.details is not None else {}),
    }


class AuditSink(Protocol):
    def emit(self, record: AuditRecord) -> None: ...

    def close(self) -> None: ...


class LoggerSink:
    """JSON lines on the ``iamscope.audit`` logger, written by a background thread.

    The request thread appends to a deque (no lock, no wake-up); the writer drains it in
    batches every ``interval`` seconds. Waking the writer for each event cost more than
    the event itself (measured: ~50 µs of thread hand-off per request). The backlog is
    bounded: if the logger cannot keep up, events are dropped and counted (``dropped``)
    rather than slowing requests down.
    """

    def __init__(
        self,
        logger: logging.Logger = audit_log,
        *,
        max_queue: int = 100_000,
        interval: float = 0.05,
        serialise: Callable[[AuditRecord], dict[str, Any]] = to_event,
    ) -> None:
        self._logger = logger
        self._serialise = serialise
        self._max = max_queue
        self._interval = interval
        self._pending: collections.deque[AuditRecord] = collections.deque()
        self._busy = False  # the writer holds a record taken off the deque
        self._closing = threading.Event()
        self._wake = threading.Event()
        self.dropped = 0
        self._thread = self._start()
        after_fork(self, LoggerSink._forked)

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="iamscope-audit", daemon=True)
        thread.start()
        return thread

    def _forked(self) -> None:
        # A forked child has no writer thread; what was pending is the parent's to write.
        self._pending.clear()
        self._busy = False
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._thread = self._start()

    def emit(self, record: AuditRecord) -> None:
        if len(self._pending) >= self._max or self._closing.is_set():  # closed: never written
            self.dropped += 1
            return
        self._pending.append(record)

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        pending = self._pending
        self._busy = True
        while pending:
            record = pending.popleft()
            try:
                self._logger.info(_ENCODER.encode(self._serialise(record)))
            except Exception:  # an audit fault must never take the thread down
                log.exception("iamscope: could not write an audit event")
        self._busy = False

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the events emitted so far are written (tests, shutdown); False on
        timeout."""
        deadline = time.monotonic() + timeout
        while self._pending or self._busy:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.0005)
        return True

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=5)


class ListSink:
    """Collects events in memory, synchronously (tests and examples)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, record: AuditRecord) -> None:
        self.events.append(to_event(record))

    def close(self) -> None:
        pass


#: A group of summarised hits: its first decision and its counter.
_Group = tuple["Decision", "itertools.count[int]"]


class HitSummary:
    """Counts allowed cache hits per (identity, method, path) and hands the sink one
    record per group every ``interval`` seconds: the per-request cost is a dict read and
    a counter step, not a JSON event. Denials never go through here; they are always
    recorded one by one.

    No lock on the request's path: each group has an ``itertools.count`` (its step is
    one C call, atomic under the GIL), created under the lock only for a group's first
    hit. At the end of an interval the groups are swapped out, then reported ``grace``
    seconds later, so that a request which read a group just before the swap has long
    since counted in it.
    """

    def __init__(
        self,
        sink: AuditSink,
        hasher: SubjectHasher | None,
        *,
        interval: float = 60.0,
        grace: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink, self._hasher, self._clock = sink, hasher, clock
        self._counts: dict[tuple[object, str, str], _Group] = {}
        self._lock = threading.Lock()
        self._interval = interval
        self._grace = min(grace, interval)
        self._stop = threading.Event()
        self._worker = self._start()
        after_fork(self, HitSummary._forked)

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="iamscope-audit-summary", daemon=True)
        thread.start()
        return thread

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._counts = {}  # the parent reports what it counted
        self._stop = threading.Event()
        self._worker = self._start()

    def add(self, decision: Decision, method: str, path: str) -> None:
        # The principal, not its id(): a cached principal is one object per token, and
        # holding it keeps the key from naming another principal later.
        key = (decision.principal, method, path)
        group = self._counts.get(key)
        if group is None:
            with self._lock:
                group = self._counts.setdefault(key, (decision, itertools.count()))
        next(group[1])

    def _swap(self) -> dict[tuple[object, str, str], _Group]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def _report(self, counts: dict[tuple[object, str, str], _Group]) -> None:
        now = self._clock()
        for (_, method, path), (decision, counter) in counts.items():
            hits = next(counter)  # the steps taken so far
            if hits:
                self._sink.emit(AuditRecord(decision, method, path, now, None, self._hasher, hits))

    def flush(self) -> None:
        """Report what was counted so far, now (shutdown, tests)."""
        self._report(self._swap())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            counts = self._swap()
            self._stop.wait(self._grace)
            self._report(counts)

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5)
        self.flush()
