"""Per-request cost of the middleware against the token cache's hit ratio, in-process.

The harness of ``bench_middleware.py`` (one Starlette route called as raw ASGI, no HTTP
client in the loop; its helpers are imported, not copied) with ``IAMScopeMiddleware``
configured to measure the middleware alone (hits not audited, misses to a sink that
drops them; the audit's own cost is in ``bench_middleware.py``'s rows). A block of
requests mixes cached and fresh tokens: at hit ratio *h*, a
fraction 1 - *h* of the requests, spread evenly through the block, carry a token never
seen before (RS256, pre-minted, one per such request: full verification + policy
resolution + caching), the others one token that is already cached. The fresh tokens
are of the same identity, so resolution finds the interned Access (what a new token of
a known user costs; a brand-new identity adds the cold resolve of
``bench_resolve.py``). Every block is timed as a whole and reported per request,
against the bare app measured in the same rounds (interleaved, order alternating).

    .venv/bin/python benchmarks/bench_hit_ratio.py [--write] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _readme import intro_of, write_section
from bench_middleware import POLICY, NullSink, call, starlette_app

from iamscope import IAMScope, IAMScopeMiddleware
from iamscope.engine.cache import CacheSettings
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer

RATIOS = (0.0, 0.5, 0.9, 0.99, 1.0)

Headers = list[tuple[bytes, bytes]]


def label(ratio: float) -> str:
    return f"hit ratio {ratio:g}"


def block_size(ratio: float, misses: int, hits_only: int) -> int:
    """Requests in one block: ``misses`` fresh tokens at this ratio (``hits_only``
    requests when nothing misses)."""
    return hits_only if ratio >= 1.0 else max(misses, round(misses / (1.0 - ratio)))


def plan(ratio: float, n: int, hit: Headers, fresh: list[Headers]) -> list[Headers]:
    """``n`` requests, ``round(n * (1 - ratio))`` of them fresh, spread evenly."""
    misses = round(n * (1.0 - ratio))
    out, used = [], 0
    for i in range(n):
        if used < misses and (i + 1) * misses // n > used:
            out.append(fresh[used])
            used += 1
        else:
            out.append(hit)
    if used != misses:
        raise AssertionError(f"planned {used} fresh tokens, wanted {misses}")
    return out


async def timed(app: Any, requests: list[Headers]) -> float:
    start = time.perf_counter()
    for headers in requests:
        await call(app, headers)
    return (time.perf_counter() - start) / len(requests) * 1e6


async def measure(rounds: int, misses: int, hits_only: int) -> dict[str, Any]:
    with LocalIssuer(("RS256",)) as issuer:
        exp = int(time.time()) + 3600

        def headers(token: str) -> Headers:
            return [(b"host", b"test"), (b"authorization", f"Bearer {token}".encode())]

        hit = headers(issuer.mint(groups=["sales-east"], exp=exp))
        sizes = {ratio: block_size(ratio, misses, hits_only) for ratio in RATIOS}
        blocks: dict[str, list[list[Headers]]] = {label(r): [] for r in RATIOS}
        fresh_total = 0
        for ratio in RATIOS:  # every fresh token is used once: mint them all up front
            for _ in range(rounds):
                count = round(sizes[ratio] * (1.0 - ratio))
                fresh = [
                    headers(issuer.mint(groups=["sales-east"], exp=exp, jti=f"{fresh_total + i}"))
                    for i in range(count)
                ]
                fresh_total += count
                blocks[label(ratio)].append(plan(ratio, sizes[ratio], hit, fresh))
        iam = IAMScope(
            [issuer.issuer_config(algorithms=("RS256",))],
            PolicyStore(POLICY),
            hash_key=b"k" * 32,
            audit=NullSink(),
            audit_hits=0.0,
            cache=CacheSettings(max_entries=fresh_total + 100),  # no eviction mid-run
        )
        apps: dict[str, Any] = {"bare": starlette_app()}
        apps.update({label(r): IAMScopeMiddleware(starlette_app(), iam) for r in RATIOS})
        for name, app in apps.items():  # fetches the keys and caches the hit token
            assert await call(app, hit) == 200, name
        probe = plan(0.0, 1, hit, [headers(issuer.mint(groups=["sales-east"], exp=exp))])
        assert await call(apps[label(0.0)], probe[0]) == 200
    # The issuer is stopped: from here on nothing can touch the network.
    cached = len(iam.cache)
    results: dict[str, list[float]] = {name: [] for name in apps}
    bare = [hit] * hits_only
    for r in range(rounds):
        for name in list(apps) if r % 2 == 0 else reversed(apps):
            requests = bare if name == "bare" else blocks[name][r]
            results[name].append(await timed(apps[name], requests))
    if len(iam.cache) != cached + fresh_total:  # every fresh token must have missed
        raise SystemExit(f"expected {fresh_total} misses, the cache grew by {len(iam.cache)}")
    iam.close()
    return {"samples": results, "sizes": sizes, "fresh": fresh_total}


def render(measured: dict[str, Any], rounds: int) -> str:
    results: dict[str, list[float]] = measured["samples"]
    bare = results["bare"]
    rows = [
        "| contender | requests per block | median µs/request | min-max | vs bare |",
        "|---|---:|---:|---:|---:|",
    ]
    sizes = {label(r): n for r, n in measured["sizes"].items()}
    sizes["bare"] = sizes[label(1.0)]
    for name, times in results.items():
        ratio = statistics.median(t / b for t, b in zip(times, bare, strict=True))
        rows.append(
            f"| {name} | {sizes[name]:,} | {statistics.median(times):.1f} | "
            f"{min(times):.1f}-{max(times):.1f} | {ratio:.2f}x |"
        )
    rows += [
        "",
        f"{rounds} interleaved rounds; {measured['fresh']:,} fresh RS256 tokens, each used "
        f"once; Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    return "\n".join(rows)


def dump_json(path: Path, measured: dict[str, Any], rounds: int) -> None:
    """Per-round µs per request by hit ratio (what ``benchmarks/run`` plots)."""
    samples = measured["samples"]
    path.write_text(
        json.dumps(
            {
                "unit": "µs per request",
                "rounds": rounds,
                "bare": {"median": statistics.median(samples["bare"]), "samples": samples["bare"]},
                "ratios": {
                    f"{r:g}": {
                        "requests": measured["sizes"][r],
                        "median": statistics.median(samples[label(r)]),
                        "min": min(samples[label(r)]),
                        "max": max(samples[label(r)]),
                        "samples": samples[label(r)],
                    }
                    for r in RATIOS
                },
            },
            indent=1,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="middleware cost vs cache hit ratio")
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (15)")
    parser.add_argument(
        "--misses", type=int, default=100, help="fresh tokens per block below ratio 1 (100)"
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per block at ratio 1 and bare (2000)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also dump the figures here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.misses < 1 or args.requests < 1:
        parser.error("--rounds, --misses and --requests must be positive")
    measured = asyncio.run(measure(args.rounds, args.misses, args.requests))
    block = render(measured, args.rounds)
    print(block)
    if args.json is not None:
        dump_json(args.json, measured, args.rounds)
    if args.write:
        write_section(
            "hit_ratio", "Cache hit ratio (`bench_hit_ratio.py`)", intro_of(__doc__), block
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
