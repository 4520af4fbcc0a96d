"""What identity on spans costs, side by side with OpenTelemetry alone.

A real SDK ``TracerProvider`` whose only other processor hands spans to an exporter that
drops them (so export costs nothing and both sides pay the same span machinery):

* **server span**: start and end a SERVER span (OpenTelemetry alone), against the same
  plus what the middleware adds on a cache hit: finding the recording span
  (``telemetry.context.recording_span()``, the middleware's own lookup: the span under
  the API's ContextVar, and ``is_recording()``), tagging it with the cached identity
  and the decision (contract 5) and claiming the trace's owner;
* **child span**: start and end a span inside a request, on a provider without and with
  the :class:`~iamscope.telemetry.OwnershipSpanProcessor` (which stamps the identity
  read from the request's ContextVar).

The cost is the median of per-round differences of interleaved rounds (the budget
line); the isolated rows time the same work alone on a live span, which shows how much
of the in-situ difference is the machine rather than the work. The "public API" rows
time it with the SDK fast path off (``spans.use_fast_path(False)``): what an SDK outside
the tested range pays. Times are the process's CPU time (``time.process_time``) by
default, as in ``bench_middleware.py``: every span here is exported on the timing
thread, and on a shared machine wall time mostly measures the neighbours; ``--clock
wall`` measures wall time instead. DESIGN.md budget:
≤ 2 µs per request on the server span, ≤ 3 µs per child span.

    .venv/bin/python benchmarks/bench_telemetry.py [--write] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence

from _readme import intro_of, write_section
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from iamscope import IAMScope
from iamscope.engine.decision import request_decision
from iamscope.policy import PolicyStore
from iamscope.telemetry import OwnershipSpanProcessor, spans
from iamscope.telemetry.context import recording_span
from iamscope.telemetry.spans import tag
from iamscope.testing import LocalIssuer

PUBLIC_TAG = "isolated: tag() on a live span, public API"
PUBLIC_ON_START = "isolated: ownership on_start, public API"
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}

POLICY = {
    "version": "bench",
    "roles": {"analyst": {"permissions": ["sales:read"]}},
    "bindings": [{"groups": ["sales-east"], "roles": ["analyst"], "owner": "sales"}],
}


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider(ownership: bool) -> TracerProvider:
    tracer_provider = TracerProvider()
    if ownership:
        tracer_provider.add_span_processor(OwnershipSpanProcessor())
    tracer_provider.add_span_processor(SimpleSpanProcessor(Drop()))
    return tracer_provider


def measure(rounds: int, number: int, clock: str = "cpu") -> dict[str, list[float]]:
    with LocalIssuer() as issuer:
        iam = IAMScope([issuer.issuer_config()], PolicyStore(POLICY), hash_key=b"k" * 32)
        headers = [(b"authorization", f"Bearer {issuer.mint(groups=['sales-east'])}".encode())]
        iam.decide(headers)
        decision = iam.hit(headers)
        assert decision is not None and decision.attributes
    plain = provider(False).get_tracer("bench")
    owned = provider(True).get_tracer("bench")
    server = trace.SpanKind.SERVER

    def server_alone() -> None:
        with plain.start_as_current_span("GET /", kind=server):
            pass

    def server_tagged() -> None:  # as IAMScopeMiddleware does it
        with plain.start_as_current_span("GET /", kind=server):
            span = recording_span()
            if span is not None:
                tag(span, decision)

    def child_alone() -> None:
        plain.start_span("query").end()

    def child_owned() -> None:
        owned.start_span("query").end()

    live = plain.start_span("live")
    processor = OwnershipSpanProcessor()

    def tag_only() -> None:
        tag(live, decision)

    def on_start_only() -> None:
        processor.on_start(live)

    contenders: dict[str, Callable[[], None]] = {
        "server span, OTel alone": server_alone,
        "server span, tagged": server_tagged,
        "child span, OTel alone": child_alone,
        "child span, ownership processor": child_owned,
        "isolated: tag() on a live span": tag_only,
        "isolated: ownership on_start": on_start_only,
        PUBLIC_TAG: tag_only,
        PUBLIC_ON_START: on_start_only,
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    with plain.start_as_current_span("check", kind=server) as check:
        tag(check, decision)
        owned.start_span("child").end()
    if check.attributes.get("iamscope.owner.team") != "sales":  # type: ignore[union-attr]
        raise SystemExit("tagging did not happen: the figures would measure nothing")
    token = request_decision.set(decision)  # inside a request, as the middleware leaves it
    try:
        for r in range(rounds):
            for name in list(contenders) if r % 2 == 0 else reversed(contenders):
                public = name in (PUBLIC_TAG, PUBLIC_ON_START)
                if not spans.use_fast_path(not public) and not public:
                    raise SystemExit("this SDK takes no fast path: nothing to compare")
                seconds = timeit.Timer(contenders[name], timer=CLOCKS[clock]).timeit(number)
                results[name].append(seconds / number * 1e6)
    finally:
        spans.use_fast_path()
        request_decision.reset(token)
    iam.close()
    return results


def render(results: dict[str, list[float]], clock: str = "cpu") -> str:
    def cost(with_: str, alone: str) -> tuple[float, float, float]:
        diffs = [a - b for a, b in zip(results[with_], results[alone], strict=True)]
        return statistics.median(diffs), min(diffs), max(diffs)

    rows = ["| contender | median µs | min-max |", "|---|---:|---:|"]
    rows += [
        f"| {name} | {statistics.median(t):.2f} | {min(t):.2f}-{max(t):.2f} |"
        for name, t in results.items()
    ]
    server = cost("server span, tagged", "server span, OTel alone")
    child = cost("child span, ownership processor", "child span, OTel alone")
    rows += [
        "",
        "| iamscope adds | median µs (min-max of per-round differences) | budget |",
        "|---|---:|---|",
        f"| per request, server span | {server[0]:.2f} ({server[1]:.2f}-{server[2]:.2f}) | "
        f"≤ 2 µs: {'met' if server[0] <= 2 else 'NOT met'} |",
        f"| per child span | {child[0]:.2f} ({child[1]:.2f}-{child[2]:.2f}) | "
        f"≤ 3 µs: {'met' if child[0] <= 3 else 'NOT met'} |",
        "",
        f"{'CPU' if clock == 'cpu' else 'Wall'} time; Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cost of identity on spans vs OTel alone")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args(argv)
    block = render(measure(args.rounds, args.number, args.clock), args.clock)
    print(block)
    if args.write:
        write_section("telemetry", "Telemetry (`bench_telemetry.py`)", intro_of(__doc__), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
