"""The fleet (shared revocations on Redis): what it costs a cache hit, and how fast a
revocation reaches every worker.

* **cache hit, shared store off / on**: the in-process middleware benchmark's app
  (``bench_middleware.py``), one ``IAMScope`` with the in-memory revocation store and
  one following a real redis-server through ``Fleet``, interleaved rounds. The hit path
  reads only local memory either way, so the budget is the ratio on/off.
* **revocation to every worker**: uvicorn with 4 workers (the tests' fleet app), each
  with the token cached; one revocation from another process; then each worker says
  when its view of the revocations moved (wall clock, one machine). The figure is the
  time from the revocation call until the last of the 4 workers had applied it, per
  round; a request to a worker after that is refused (checked).

redis-server comes from Debian's packages (the tests install it the same way).

    .venv/bin/python benchmarks/bench_fleet.py [--write] [--rounds 15] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _readme import intro_of, write_section  # noqa: E402
from bench_middleware import POLICY, call, per_request, starlette_app  # noqa: E402

from iamscope import IAMScope, IAMScopeMiddleware  # noqa: E402
from iamscope.fleet import Fleet, SharedSettings  # noqa: E402
from iamscope.policy import PolicyStore  # noqa: E402
from iamscope.testing import LocalIssuer  # noqa: E402
from tests.fleet._app import fleet_config, serve  # noqa: E402
from tests.fleet._redis import redis_server  # noqa: E402

WORKERS = 4


async def hit_costs(redis_url: str, rounds: int, n: int) -> dict[str, list[float]]:
    with LocalIssuer() as issuer:
        token = issuer.mint(groups=["sales-east"], exp=int(time.time()) + 3600)
        headers = [(b"host", b"test"), (b"authorization", f"Bearer {token}".encode())]

        def engine(**kw: Any) -> IAMScope:
            return IAMScope(
                [issuer.issuer_config()],
                PolicyStore(POLICY),
                hash_key=b"k" * 32,
                audit_hits=0.0,  # the same audit either way: only the store differs
                **kw,
            )

        off = engine()
        on = engine(fleet=Fleet(SharedSettings(namespace="bench"), url=redis_url))
        apps = {
            "bare": starlette_app(),
            "shared store off": IAMScopeMiddleware(starlette_app(), off),
            "shared store on": IAMScopeMiddleware(starlette_app(), on),
        }
        for name, app in apps.items():
            assert await call(app, headers) == 200, name
        results: dict[str, list[float]] = {name: [] for name in apps}
        for r in range(rounds):
            for name in list(apps) if r % 2 == 0 else list(reversed(apps)):
                results[name].append(await per_request(apps[name], headers, n))
        off.close()
        on.close()
    return results


def statuses(url: str, token: str) -> tuple[str, int]:
    answer = httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=5)
    return answer.headers["x-worker"], answer.status_code


def revocation_times(redis_url: str, rounds: int) -> list[float]:
    times = []
    with LocalIssuer() as issuer, tempfile.TemporaryDirectory() as tmp:
        config = fleet_config(issuer, "bench-workers")
        with serve(Path(tmp), config, redis_url, WORKERS) as url:
            operator = Fleet(SharedSettings(namespace="bench-workers"), url=redis_url)
            for r in range(rounds):
                token = issuer.mint({"sub": f"user-{r}", "groups": ["g"]})
                warm: set[str] = set()
                for _ in range(400):  # every worker caches the token
                    worker, status = statuses(url, token)
                    assert status == 200
                    warm.add(worker)
                    if len(warm) == WORKERS:
                        break
                revoked_at = time.time()
                operator.revoke("sub", "corp", f"user-{r}")
                time.sleep(1.5)  # then ask each worker when its view moved
                applied: dict[str, float] = {}
                for _ in range(400):
                    answer = httpx.get(url + "fleet", timeout=5)
                    applied[answer.headers["x-worker"]] = answer.json()["changed_at"]
                    if len(applied) == WORKERS:
                        break
                if len(applied) < WORKERS:
                    raise SystemExit(f"round {r}: only {len(applied)} workers answered")
                times.append(max(applied.values()) - revoked_at)
                _, status = statuses(url, token)
                assert status == 401, status
            operator.close()
    return times


def render(hits: dict[str, list[float]], revocations: list[float]) -> str:
    def ratio(name: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(hits[name], hits[base], strict=True))

    rows = ["| contender | median µs/request | min-max | vs bare |", "|---|---:|---:|---:|"]
    for name, times in hits.items():
        rows.append(
            f"| {name} | {statistics.median(times):.1f} | {min(times):.1f}-{max(times):.1f} "
            f"| {ratio(name, 'bare'):.2f}x |"
        )
    cost = ratio("shared store on", "shared store off")
    worst = max(revocations)
    rows += [
        "",
        f"Shared store on: cache hit {cost:.3f}x of off (budget ≤ 1.05x: "
        f"{'met' if cost <= 1.05 else 'NOT met'}).",
        f"Revocation to {WORKERS} workers: median {statistics.median(revocations) * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms over {len(revocations)} rounds (budget ≤ 1 s: "
        f"{'met' if worst <= 1.0 else 'NOT met'}). "
        f"Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fleet: hit cost and revocation latency")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--revocations", type=int, default=10)
    args = parser.parse_args(argv)
    os.environ.setdefault("IAMSCOPE_HASH_KEY", "k" * 32)
    with redis_server() as redis:
        hits = asyncio.run(hit_costs(redis.url, args.rounds, args.requests))
        revocations = revocation_times(redis.url, args.revocations)
    block = render(hits, revocations)
    print(block)
    if args.write:
        write_section("fleet", "Fleet (`bench_fleet.py`)", intro_of(__doc__), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
