"""Hot reload: the policy in force, swapped atomically; a bad new policy never lands, nor
a half-written one.

``PolicyStore.current`` is one attribute read (no lock on the request path). A reload
loads and compiles the new policy off to the side and swaps it in only when it is
valid; otherwise the last good policy keeps serving and the errors are reported. The
``generation`` number grows with every swap, so caches keyed on it drop stale entries
on lookup without a scan.

A file rewritten in place passes through prefixes, and a prefix is often a valid policy
granting more than either version (a rule cut before its second condition). So
:meth:`PolicyStore.poll` takes a changed file only once its content has stayed the same
(modification time, size and SHA-256) for ``settle`` seconds, and then compiles exactly
the bytes it watched settle, never a second read. A writer pausing longer than
``settle`` mid-write can still be caught; writing a temporary file and renaming it over
the policy (atomic on POSIX) cannot, and is the recommended way to change it.
:meth:`PolicyStore.reload` is "reload now": it takes the file as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iamscope._yaml import decode
from iamscope.errors import ConfigError
from iamscope.policy.loader import load_policy, policy_from_text
from iamscope.policy.model import Policy
from iamscope.policy.resolve import CompiledPolicy
from iamscope.tokens.issuer import IssuerConfig

__all__ = ["PolicyStore", "ReloadResult"]

log = logging.getLogger("iamscope.policy")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    version: str
    generation: int
    error: ConfigError | None = None


#: What a poll compares: (modification time in ns, size, SHA-256 of the bytes read).
Fingerprint = tuple[int, int, bytes]


def _read(path: Path) -> tuple[Fingerprint, bytes]:
    """The file's bytes and their fingerprint. The time and size come from the same open
    file the bytes were read from, after reading, so a rename mid-poll cannot pair one
    file's bytes with another's time."""
    try:
        with path.open("rb") as handle:
            data = handle.read()
            stat = os.fstat(handle.fileno())
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    return (stat.st_mtime_ns, stat.st_size, hashlib.sha256(data).digest()), data


class PolicyStore:
    """Holds the compiled policy in force; reloads from a file or a mapping.

    ``settle``: seconds a changed file's content must stay the same before :meth:`poll`
    takes it (0 takes it at the first poll that sees it). ``clock``: a monotonic clock,
    injectable for tests.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        *,
        issuers: Iterable[IssuerConfig] | None = None,
        on_reload: Callable[[ReloadResult], None] | None = None,
        settle: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settle >= 0:
            raise ValueError("settle must be a number of seconds ≥ 0")
        self._source = source
        self._issuers = tuple(issuers) if issuers is not None else None
        self._on_reload = on_reload
        self._settle = settle
        self._clock = clock
        #: Called with every reload's result, after ``on_reload`` (metrics).
        self.observers: list[Callable[[ReloadResult], None]] = []
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        #: The fingerprint of the file content last taken (in force, or refused), and of a
        #: change waiting to settle with when it was first seen.
        self._loaded: Fingerprint | None = None
        self._pending: tuple[Fingerprint, float] | None = None
        policy, self._loaded = self._load(source)  # errors here are fatal: no last good
        self.current = CompiledPolicy(policy)
        self.generation = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        read: tuple[Fingerprint, bytes] | None = None,
    ) -> tuple[Policy, Fingerprint | None]:
        """The policy at ``source`` and the fingerprint of the bytes it came from (given in
        ``read`` when a poll already has them)."""
        if isinstance(source, Mapping):
            return load_policy(source, issuers=self._issuers), None
        path = Path(source)
        fingerprint, data = read if read is not None else _read(path)
        text = decode(data, str(path))
        return policy_from_text(text, str(path), issuers=self._issuers), fingerprint

    def reload(
        self, source: str | os.PathLike[str] | Mapping[str, Any] | None = None
    ) -> ReloadResult:
        """Load ``source`` (default: the current one) now, and swap it in if valid.

        Never raises: a policy that cannot be loaded, for whatever reason, is refused and
        the last good one keeps serving. ``source`` is remembered only once it loaded.
        """
        return self._reload(self._source if source is None else source, None)

    def _reload(
        self,
        candidate: str | os.PathLike[str] | Mapping[str, Any],
        read: tuple[Fingerprint, bytes] | None,
    ) -> ReloadResult:
        with self._lock:
            try:
                policy, fingerprint = self._load(candidate, read)
                compiled = CompiledPolicy(policy)
            except Exception as exc:  # anything at all: the last good policy must stay
                where = None if isinstance(candidate, Mapping) else str(candidate)
                error = (
                    exc
                    if isinstance(exc, ConfigError)
                    else ConfigError(
                        f"policy could not be loaded: {type(exc).__name__}", source=where
                    )
                )
                log.error(
                    "iamscope: policy reload refused, keeping version %s: %s",
                    self.current.version,
                    error,
                )
                result = ReloadResult(False, self.current.version, self.generation, error)
            else:
                self._source = candidate
                self._loaded = fingerprint
                self._pending = None
                self.current = compiled
                self.generation += 1
                result = ReloadResult(True, compiled.version, self.generation)
                log.info(
                    "iamscope: policy version %s in force (generation %d)",
                    compiled.version,
                    self.generation,
                )
        for callback in (self._on_reload, *self.observers):
            if callback is None:
                continue
            try:
                callback(result)
            except Exception:
                log.exception("iamscope: a policy reload callback failed")
        return result

    def poll(self) -> ReloadResult | None:
        """Reload when the file's content changed and has since stayed the same for
        ``settle`` seconds; None while unchanged, settling, or unreadable (the last good
        policy keeps serving; a file that stays unreadable is not a new policy)."""
        source = self._source
        if isinstance(source, Mapping):
            return None
        with self._poll_lock:  # the watcher and a caller's poll() must not interleave
            try:
                read = _read(Path(source))
            except ConfigError:
                return None
            if not self._settled(read[0]):
                return None
            # Taken, valid or not: a refused file is reported once, not at every poll.
            self._loaded, self._pending = read[0], None
            return self._reload(source, read)

    def _settled(self, fingerprint: Fingerprint) -> bool:
        """Whether a file now reading as ``fingerprint`` is a change to take."""
        if self._loaded is not None and fingerprint[1:] == self._loaded[1:]:
            # The same bytes (touched, or changed and changed back): nothing to take, and
            # no reload to empty the caches for nothing.
            self._pending = None
            return False
        now = self._clock()
        if self._pending is None or self._pending[0] != fingerprint:
            self._pending = (fingerprint, now)  # a new state: its settle time starts now
            return self._settle == 0
        return now - self._pending[1] >= self._settle

    def watch(self, interval: float = 2.0) -> None:
        """Poll in a daemon thread (no inotify needed) until :meth:`close`. While a change
        settles, polls come every ``settle`` seconds (at most ``interval``), so a change
        lands within about ``interval + settle``."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self._next_wait(interval)):
                try:
                    self.poll()
                except Exception:  # the watcher must outlive any single bad poll
                    log.exception("iamscope: policy watch failed; still watching")

        self._thread = threading.Thread(target=loop, name="iamscope-policy-watch", daemon=True)
        self._thread.start()

    def _next_wait(self, interval: float) -> float:
        if self._pending is not None and 0 < self._settle < interval:
            return self._settle
        return interval

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
