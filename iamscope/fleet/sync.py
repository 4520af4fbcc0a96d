"""The fleet's shared state on Redis: revocations and invalidations for every worker
and replica (contract 10). The only module that talks to Redis.

What Redis holds (``<ns>`` is ``shared.namespace``):

- ``<ns>:revoked``: a sorted set, one member per revocation, scored by the time it
  lapses (a revocation outliving every token it could match is dropped on write);
- ``<ns>:events``: a stream of changes (``revoke``, ``policy``, ``keys``, ``drop``),
  capped; every process reads it with a blocking ``XREAD`` and acts on each entry
  within milliseconds. Unlike pub/sub a stream is not lost while a process reconnects,
  and every reconnect reloads the whole sorted set anyway;
- ``<ns>:process:<id>``: each live process's report (policy version, key set age,
  last sync), expiring after three heartbeats, for ``iamscope fleet status``.

One daemon thread per process runs :meth:`Fleet._run`: resync, then follow the
stream; on any Redis error, back off (0.1 s doubling to 2 s) and resync on reconnect.
Requests never wait on it: they read :class:`~iamscope.fleet.state.SharedRevocations`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iamscope._fork import after_fork
from iamscope.errors import ConfigError, RevocationsUnavailable
from iamscope.fleet.settings import SharedSettings
from iamscope.fleet.state import KINDS, Kind, Revocation, SharedRevocations

__all__ = ["EVENT_TYPES", "Fleet", "ProcessReport"]

log = logging.getLogger("iamscope.fleet")

EVENT_TYPES = ("revoke", "policy", "keys", "drop")
_STREAM_CAP = 100_000  # entries kept; a process that falls further behind resyncs anyway
_BLOCK_MS = 250  # one blocking read; also how often the loop looks at the clock
_MAX_BACKOFF = 2.0
_WRITE_TIMEOUT = 2.0  # operators' writes: revoke, broadcast, status

Handler = Callable[[Mapping[str, str]], object]


@dataclass(frozen=True, slots=True)
class ProcessReport:
    """One live process, as it last reported itself."""

    id: str
    host: str
    pid: int
    policy_version: str
    key_set_age: float | None  # seconds since its oldest issuer's keys were fetched
    last_sync: float | None  # epoch seconds of its last contact with Redis
    seen: float  # epoch seconds of this report


def _redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - the extra is part of the dev install
        raise ConfigError(
            "shared: needs the redis package: pip install 'iamscope[fleet]'", key="shared"
        ) from None
    return redis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Fleet:
    """Shared revocations and invalidations for one process of the fleet."""

    def __init__(
        self,
        settings: SharedSettings | None = None,
        *,
        url: str | None = None,
        clock: Callable[[], float] = time.time,
        report: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.settings = settings or SharedSettings()
        self._url = url if url is not None else self.settings.redis_url()
        self.clock = clock
        self.revocations = SharedRevocations(stale_after=self.settings.stale_after, clock=clock)
        #: What this process says of itself in ``fleet status`` (set by the engine).
        self.report = report
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        ns = self.settings.namespace
        self._revoked, self._events, self._process = f"{ns}:revoked", f"{ns}:events", ns
        self._handlers: dict[str, list[Handler]] = {kind: [] for kind in EVENT_TYPES}
        self._handlers["revoke"].append(self._on_revoke)
        self._last_id = "0-0"
        self._need_sync = True
        self._beat_due = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: Any = None
        self._writer: Any = None
        self._down_since: float | None = None
        #: Announcements waiting for the listener thread to send them (never the caller's
        #: thread: a key refresh may run on a request's).
        self._outbox: deque[dict[str, str]] = deque(maxlen=1000)
        redis = _redis()
        #: What a Redis fault looks like: anything else is a bug and propagates.
        self._faults: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        after_fork(self, Fleet._forked)

    def _forked(self) -> None:
        """In a forked child (gunicorn --preload): the listener thread is gone and the
        parent's connections must not be shared; this process follows on its own."""
        was_running = self._thread is not None
        self._thread = None
        self._reader = self._writer = None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._need_sync = True
        self._outbox.clear()  # the parent sends its own
        if was_running:
            self.start(wait=0)

    # --- connections -------------------------------------------------------------------

    def _client(self, timeout: float) -> Any:
        return _redis().Redis.from_url(
            self._url,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 1.0),
            decode_responses=False,
        )

    @property
    def writer(self) -> Any:
        if self._writer is None:
            self._writer = self._client(_WRITE_TIMEOUT)
        return self._writer

    # --- the listener ------------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> None:
        """Call ``handler(fields)`` for every ``event`` the fleet broadcasts (this
        process's own included). A handler that raises is logged, never fatal."""
        if event not in self._handlers:
            raise ValueError(f"unknown fleet event {event!r}; one of {EVENT_TYPES}")
        self._handlers[event].append(handler)

    def start(self, wait: float = 1.0) -> bool:
        """Start following the fleet; wait up to ``wait`` seconds for the first sync.
        True when synced (else requests answer 503 until the first sync succeeds)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="iamscope-fleet", daemon=True)
            self._thread.start()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.revocations.stale:
            time.sleep(0.01)
        return not self.revocations.stale

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=(_BLOCK_MS / 1000) + 2.0)
        for client in (self._reader, self._writer):
            if client is not None:
                client.close()
        self._reader = self._writer = None

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self._reader is None:
                    self._reader = self._client(_BLOCK_MS / 1000 + 1.0)
                if self._need_sync:
                    self._resync()
                self._follow()
                self._send_outbox()
                self._heartbeat()
                backoff = 0.1
            except self._faults as exc:
                self._lost(exc)
                self._stop.wait(min(backoff, max(self.revocations.check_stale(), 0.05)))
                backoff = min(backoff * 2, _MAX_BACKOFF)
            self.revocations.check_stale()

    def _lost(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = self.clock()
            log.warning("iamscope fleet: Redis unreachable (%s); resyncing on reconnect", exc)
        self._need_sync = True
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(*self._faults):
                reader.close()

    def _resync(self) -> None:
        """The whole list from Redis, and the stream position it corresponds to. An
        event landing between the two reads is read again later: applying twice is
        harmless."""
        client = self._reader
        latest = client.xrevrange(self._events, count=1)
        now = self.clock()
        members = client.zrangebyscore(self._revoked, now, "+inf", withscores=True)
        found = []
        for member, score in members:
            try:
                found.append(Revocation.from_member(member, float(score)))
            except ValueError:
                log.warning("iamscope fleet: ignoring a malformed revocation in Redis")
        self.revocations.replace(found)
        self._last_id = _text(latest[0][0]) if latest else "0-0"
        self._need_sync = False
        if self._down_since is not None:
            log.warning("iamscope fleet: Redis reachable again; %d revocations", len(found))
            self._down_since = None
            # Whatever was broadcast while away (a policy or key change) was missed:
            # act as if it had been, so no process keeps stale state.
            self._dispatch({"type": "policy"})
            self._dispatch({"type": "keys", "issuer": ""})

    def _follow(self) -> None:
        answer = self._reader.xread({self._events: self._last_id}, count=500, block=_BLOCK_MS)
        self.revocations.contact()
        for _stream, entries in answer or ():
            for entry_id, raw in entries:
                self._last_id = _text(entry_id)
                self._dispatch({_text(k): _text(v) for k, v in raw.items()})

    def _dispatch(self, fields: Mapping[str, str]) -> None:
        if fields.get("origin") == self.id:
            return  # this process's own announcement: it has acted already
        for handler in self._handlers.get(fields.get("type", ""), ()):
            try:
                handler(fields)
            except Exception:
                log.exception("iamscope fleet: a %s handler failed", fields.get("type"))

    def _on_revoke(self, fields: Mapping[str, str]) -> None:
        try:
            self.revocations.add(Revocation.from_member(fields["r"], float(fields["until"])))
        except (KeyError, ValueError):
            log.warning("iamscope fleet: ignoring a malformed revoke event")

    def _heartbeat(self) -> None:
        now = self.clock()
        if now < self._beat_due:
            return
        self._beat_due = now + self.settings.heartbeat
        mine = dict(self.report()) if self.report is not None else {}
        body = {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "policy_version": str(mine.get("policy_version", "")),
            "key_set_age": mine.get("key_set_age"),
            "last_sync": self.revocations.last_contact,
            "seen": now,
        }
        ttl = max(1, round(self.settings.heartbeat * 3))
        self._reader.set(f"{self._process}:process:{self.id}", json.dumps(body), ex=ttl)

    # --- operators' writes (CLI, admin endpoints); never on the request path -----------

    def revoke(self, kind: Kind, issuer: str, value: str, until: float | None = None) -> Revocation:
        """Revoke for the whole fleet; raises RevocationsUnavailable when Redis cannot
        take it (the caller must know: a revocation that did not land is not one)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        now = self.clock()
        lapses = until if until is not None else now + self.settings.revocation_ttl
        if lapses <= now:
            raise ValueError("until must be in the future")
        revocation = Revocation(kind, issuer, value, lapses)
        self._write(
            lambda pipe: (
                pipe.zadd(self._revoked, {revocation.member: lapses}),
                pipe.zremrangebyscore(self._revoked, "-inf", now),
                self._xadd(pipe, {"type": "revoke", "r": revocation.member, "until": lapses}),
            )
        )
        return revocation

    def broadcast(self, event: str, **fields: str) -> None:
        """``policy`` (reload now), ``keys`` (refresh ``issuer``'s keys, or every
        issuer's when empty), ``drop`` (forget cached decisions of ``issuer`` +
        ``subject``) for every process."""
        if event not in EVENT_TYPES or event == "revoke":
            raise ValueError("broadcast policy, keys or drop; revoke with revoke()")
        self._write(lambda pipe: self._xadd(pipe, {"type": event, **fields}))

    def listed(self) -> list[Revocation]:
        """Every revocation in force, read from Redis."""
        now = self.clock()
        rows = self._call(lambda c: c.zrangebyscore(self._revoked, now, "+inf", withscores=True))
        return sorted(
            (Revocation.from_member(member, float(score)) for member, score in rows),
            key=lambda r: (r.kind, r.issuer, r.value),
        )

    def processes(self) -> list[ProcessReport]:
        """Every process that reported itself in the last three heartbeats."""

        def read(client: Any) -> list[Any]:
            keys = list(client.scan_iter(match=f"{self._process}:process:*", count=500))
            return list(client.mget(keys)) if keys else []

        reports = []
        for raw in self._call(read):
            if raw is None:
                continue  # expired between the scan and the read
            body = json.loads(raw)
            reports.append(ProcessReport(**body))
        return sorted(reports, key=lambda r: (r.host, r.pid))

    def announce(self, event: str, **fields: str) -> None:
        """Tell the other processes what this one noticed (its keys or policy changed),
        without waiting: the listener thread sends it, and this process's own listener
        skips it. Dropped, with a log line, if Redis stays unreachable."""
        if event not in ("policy", "keys"):
            raise ValueError("announce policy or keys")
        self._outbox.append({"type": event, "origin": self.id, **fields})

    def _send_outbox(self) -> None:
        while self._outbox:
            fields = self._outbox[0]
            pipe = self._reader.pipeline(transaction=False)
            self._xadd(pipe, fields)
            pipe.execute()
            self._outbox.popleft()  # only once sent: a fault keeps it for the reconnect

    def _xadd(self, pipe: Any, fields: Mapping[str, Any]) -> Any:
        return pipe.xadd(self._events, dict(fields), maxlen=_STREAM_CAP, approximate=True)

    def _write(self, build: Callable[[Any], Any]) -> None:
        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=True)
            build(pipe)
            pipe.execute()

        self._call(run)

    def _call(self, action: Callable[[Any], Any]) -> Any:
        try:
            return action(self.writer)
        except self._faults as exc:
            raise RevocationsUnavailable(
                f"the fleet's Redis cannot be reached ({type(exc).__name__})"
            ) from None
