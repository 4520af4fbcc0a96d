"""Hot reload: the policy in force, swapped atomically; a bad new policy never lands.

``PolicyStore.current`` is one attribute read (no lock on the request path). A reload
loads and compiles the new policy off to the side and swaps it in only when it is
valid; otherwise the last good policy keeps serving and the errors are reported. The
``generation`` number grows with every swap, so caches keyed on it drop stale entries
on lookup without a scan.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iamscope.errors import ConfigError
from iamscope.policy.loader import load_policy
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


class PolicyStore:
    """Holds the compiled policy in force; reloads from a file or a mapping."""

    def __init__(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        *,
        issuers: Iterable[IssuerConfig] | None = None,
        on_reload: Callable[[ReloadResult], None] | None = None,
    ) -> None:
        self._source = source
        self._issuers = tuple(issuers) if issuers is not None else None
        self._on_reload = on_reload
        #: Called with every reload's result, after ``on_reload`` (metrics).
        self.observers: list[Callable[[ReloadResult], None]] = []
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self.current = CompiledPolicy(self._load(source))  # errors here are fatal: no last good
        self.generation = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> Any:
        if isinstance(source, Mapping):
            return load_policy(source, issuers=self._issuers)
        return load_policy(Path(source), issuers=self._issuers)

    def _stat(self) -> float | None:
        if isinstance(self._source, Mapping):
            return None
        try:
            return os.stat(self._source).st_mtime_ns / 1e9
        except OSError:
            return None

    def reload(
        self, source: str | os.PathLike[str] | Mapping[str, Any] | None = None
    ) -> ReloadResult:
        """Load ``source`` (default: the current one) and swap it in if valid.

        Never raises: a policy that cannot be loaded, for whatever reason, is refused and
        the last good one keeps serving. ``source`` is remembered only once it loaded.
        """
        with self._lock:
            candidate = self._source if source is None else source
            try:
                compiled = CompiledPolicy(self._load(candidate))
            except Exception as exc:  # anything at all: the last good policy must stay
                error = (
                    exc
                    if isinstance(exc, ConfigError)
                    else ConfigError(f"policy could not be loaded: {type(exc).__name__}")
                )
                log.error(
                    "iamscope: policy reload refused, keeping version %s: %s",
                    self.current.version,
                    error,
                )
                result = ReloadResult(False, self.current.version, self.generation, error)
            else:
                self._source = candidate
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
        """Reload when the file's modification time changed; None when unchanged."""
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return None
        self._mtime = mtime
        return self.reload()

    def watch(self, interval: float = 2.0) -> None:
        """Poll in a daemon thread (no inotify needed) until :meth:`close`."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:  # the watcher must outlive any single bad poll
                    log.exception("iamscope: policy watch failed; still watching")

        self._thread = threading.Thread(target=loop, name="iamscope-policy-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
