"""Metrics through the OpenTelemetry metrics API: a no-op unless the application
configured a MeterProvider (or passed one).

Allowed cache hits are counted with a plain integer and reported by an observable
counter at collection time: a synchronous ``Counter.add`` costs more than the whole
hit path. Every other decision is rare enough to count under a lock.

Names and attributes follow OpenTelemetry's naming guide: singular namespaces, and a
failure's reason in ``error.type`` (absent on success) — the problem ``code`` a denial
or a verification answered with, ``keys_unavailable`` for a failed key refresh,
``config_invalid`` for a refused policy, the exception's type for an exporter that
raised.

    iamscope.decisions        by iamscope.decision, iamscope.cache, error.type (denials)
    iamscope.verify.duration  seconds to verify a token on a cache miss (histogram)
    iamscope.key.fetches      key refreshes by iamscope.issuer, iamscope.key.outcome (ok,
                              not_modified) or error.type (keys_unavailable, over_limit)
    iamscope.policy.reloads   policy reloads, error.type (refused)
    iamscope.export.failures  spans a routed exporter failed to deliver, by owner team
                              and error.type
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["Metrics"]

#: The semantic conventions' attribute for why an operation failed.
ERROR_TYPE = "error.type"


class Metrics:
    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("iamscope")
        #: Allowed cache hits; incremented without a lock on the hot path (exact under
        #: asyncio; with threads a rare increment can be lost).
        self.allowed_hits = 0
        self._counts: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            "iamscope.decisions",
            callbacks=[self._observe_decisions],
            unit="{decision}",
            description="Access decisions by outcome, code and cache",
        )
        self.verify_duration = meter.create_histogram(
            "iamscope.verify.duration", unit="s", description="Token verification on a miss"
        )
        self.key_fetches = meter.create_counter(
            "iamscope.key.fetches", unit="{refresh}", description="Key refreshes by issuer"
        )
        self.policy_reloads = meter.create_counter(
            "iamscope.policy.reloads", unit="{reload}", description="Policy reloads"
        )
        self.export_failures = meter.create_counter(
            "iamscope.export.failures", unit="{span}", description="Spans not delivered"
        )

    def decision(self, allowed: bool, code: str | None, cache: str) -> None:
        key = ("allow" if allowed else "deny", code or "", cache)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _observe_decisions(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = dict(self._counts)
        counts[("allow", "", "hit")] = counts.get(("allow", "", "hit"), 0) + self.allowed_hits
        for (decision, code, cache), value in counts.items():
            attributes = {"iamscope.decision": decision, "iamscope.cache": cache}
            if code:
                attributes[ERROR_TYPE] = code
            yield Observation(value, attributes)

    def verified(self, seconds: float, code: str | None) -> None:
        """One verification on a cache miss; ``code`` is the problem code if it failed."""
        self.verify_duration.record(seconds, {ERROR_TYPE: code} if code else {})

    def key_fetch(self, issuer: str, outcome: str) -> None:
        """``outcome``: ok, not_modified, failed, over_limit (a cap refused the keys)."""
        attributes = {"iamscope.issuer": issuer}
        if outcome in ("ok", "not_modified"):
            attributes["iamscope.key.outcome"] = outcome
        else:
            attributes[ERROR_TYPE] = "over_limit" if outcome == "over_limit" else "keys_unavailable"
        self.key_fetches.add(1, attributes)

    def policy_reload(self, ok: bool) -> None:
        self.policy_reloads.add(1, {} if ok else {ERROR_TYPE: "config_invalid"})
