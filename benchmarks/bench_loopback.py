"""Requests per second over loopback: uvicorn serving the same one-route Starlette app
bare, behind the hand-rolled Starlette auth + TTLCache, behind the least a cache hit
must do under iamscope's contract (the in-process benchmark's "floor, digest + attach"),
and behind IAMScopeMiddleware (cache hit: the defaults, hits not audited, summarised,
each audited), loaded by wrk on 127.0.0.1. Every contender gets the same token header.

wrk comes from Debian's packages (``apt-get install wrk``); the script refuses to run
without it rather than measure something else. Each contender runs in its own uvicorn
process (one worker) and is loaded in turn, alternating, so drift hits all alike.
Beside requests/s, the server process's CPU time per request (``/proc/<pid>/stat``,
Linux): on a shared machine requests/s move with the neighbours' load, while a single
worker's CPU per request does not, and on a quiet machine its requests/s follow it.

    .venv/bin/python benchmarks/bench_loopback.py [--write] [--seconds 5] [--rounds 3]

DESIGN.md budget: a cache hit with the defaults keeps ≥ 0.97 of the bare app's
requests/s, reported beside the hand-rolled Starlette auth + TTLCache.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _readme import write_section

APP = """
import os, json
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def endpoint(request):
    return JSONResponse({"ok": True})

app = Starlette(routes=[Route("/", endpoint)])
if os.environ.get("BENCH_IAMSCOPE"):
    from iamscope import IAMScope, IAMScopeMiddleware, IssuerConfig
    from iamscope.policy import PolicyStore
    issuer = IssuerConfig(name="bench", issuer=os.environ["BENCH_ISSUER"],
                          audience=("api://local",), jwks_uri=os.environ["BENCH_JWKS"])
    policy = {"version": "bench", "roles": {"r": {"permissions": ["x:read"]}},
              "bindings": [{"groups": ["g"], "roles": ["r"]}]}
    audit = os.environ.get("BENCH_AUDIT")  # unset: IAMScope's defaults
    options = {} if audit is None else {
        "audit_hits": audit if audit == "summary" else float(audit)}
    iam = IAMScope([issuer], PolicyStore(policy), hash_key=b"k" * 32, **options)
    if os.environ.get("BENCH_HANDROLLED"):
        # What a user writes by hand (the in-process benchmark's backend): Starlette's
        # AuthenticationMiddleware, a TTLCache keyed by blake2b(token), the same verifier.
        from bench_middleware import TTLBackend
        from starlette.middleware import Middleware
        from starlette.middleware.authentication import AuthenticationMiddleware

        backend = TTLBackend(iam.async_verifier.verify)
        app = Starlette(routes=[Route("/", endpoint)],
                        middleware=[Middleware(AuthenticationMiddleware, backend=backend)])
    else:
        app = IAMScopeMiddleware(app, iam)
elif os.environ.get("BENCH_FLOOR"):
    # The least a hit must do under iamscope's contract, as a bare pure-ASGI layer (the
    # in-process benchmark's floor): SHA-256 key, lookup, expiry, the Access attached.
    import hashlib, time
    from bench_middleware import AttachFloor

    key = hashlib.sha256(os.environ["BENCH_FLOOR"].encode()).digest()
    app = AttachFloor(app, {key: (time.time() + 3600, object())})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"uvicorn on port {port} did not start")


def start(
    app_dir: str, env: dict[str, str], app: str = "bench_app:app"
) -> tuple[subprocess.Popen[bytes], int]:
    """uvicorn serving ``app`` (from ``app_dir``) on a free loopback port, one worker."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=app_dir,
        env={**os.environ, **env},
    )
    wait_for(port)
    return process, port


def one_request(port: int, header: str) -> None:
    """One GET carrying ``header``; its answer must be a 200 (the token is cached)."""
    name, value = header.split(": ", 1)
    answer = httpx.get(f"http://127.0.0.1:{port}/", headers={name: value}, timeout=10)
    if answer.status_code != 200:
        raise SystemExit(f"warming port {port}: {answer.status_code}")


def wrk(port: int, seconds: int, header: str | None) -> float:
    return load(port, seconds, header)[0]


def load(port: int, seconds: int, header: str | None) -> tuple[float, int]:
    """(requests/s, requests) of one wrk run."""
    command = ["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    if header:
        command[1:1] = ["-H", header]
    return run_wrk(command)


def requests_per_second(command: list[str], env: dict[str, str] | None = None) -> float:
    return run_wrk(command, env)[0]


def run_wrk(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run wrk: (requests/s, requests), refusing a run that saw errors rather than
    measuring them."""
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if match is None or total is None or "Non-2xx or 3xx responses" in out:
        raise SystemExit(f"wrk run failed or saw errors:\n{out}")
    return float(match.group(1)), int(total.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="loopback requests/s, bare vs iamscope hit")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warm", type=int, default=1, help="seconds of load before measuring (0: one request)"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    from iamscope.testing import LocalIssuer

    with LocalIssuer() as issuer, tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_app.py").write_text(APP)
        token = issuer.mint(groups=["g"], exp=int(time.time()) + 3600)
        header = f"Authorization: Bearer {token}"
        env = {
            "BENCH_ISSUER": issuer.url,
            "BENCH_JWKS": issuer.jwks_uri,
            "PYTHONPATH": os.pathsep.join(
                [tmp, str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]
            ),
        }
        # Every contender gets the same request, token header included, so header
        # parsing costs the same; only the middleware differs.
        servers = {
            name: start(tmp, {**env, **extra})
            for name, extra in [
                ("bare", {}),
                ("floor, digest + attach", {"BENCH_FLOOR": f"Bearer {token}"}),
                ("starlette-auth + TTLCache", {"BENCH_IAMSCOPE": "1", "BENCH_HANDROLLED": "1"}),
                ("iamscope hit, defaults", {"BENCH_IAMSCOPE": "1"}),
                ("iamscope hit, hits not audited", {"BENCH_IAMSCOPE": "1", "BENCH_AUDIT": "0"}),
                ("iamscope hit, summary", {"BENCH_IAMSCOPE": "1", "BENCH_AUDIT": "summary"}),
                ("iamscope hit, every hit audited", {"BENCH_IAMSCOPE": "1", "BENCH_AUDIT": "1"}),
            ]
        }
        try:
            for _, port in servers.values():  # the first request verifies and caches
                if args.warm:
                    wrk(port, args.warm, header)
                else:
                    one_request(port, header)
            results: dict[str, list[float]] = {name: [] for name in servers}
            cpu: dict[str, list[float]] = {name: [] for name in servers}  # µs per request
            for r in range(args.rounds):
                for name in list(servers) if r % 2 == 0 else reversed(servers):
                    process, port = servers[name]
                    before = cpu_seconds(process.pid)
                    rps, requests = load(port, args.seconds, header)
                    results[name].append(rps)
                    cpu[name].append((cpu_seconds(process.pid) - before) / requests * 1e6)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=10)
    bare = statistics.median(results["bare"])
    ratio = statistics.median(results["iamscope hit, defaults"]) / bare
    handrolled = statistics.median(results["starlette-auth + TTLCache"]) / bare
    floor = statistics.median(results["floor, digest + attach"]) / bare
    bare_cpu = statistics.median(cpu["bare"])
    kept_cpu = bare_cpu / statistics.median(cpu["iamscope hit, defaults"])
    block = "\n".join(
        [
            "| contender | requests/s (median) | min-max | of bare "
            "| server CPU µs/request (median) | bare's CPU / this |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        + [
            f"| {name} | {statistics.median(v):,.0f} | {min(v):,.0f}-{max(v):,.0f} "
            f"| {statistics.median(v) / bare:.2f} | {statistics.median(cpu[name]):.1f} "
            f"| {bare_cpu / statistics.median(cpu[name]):.2f} |"
            for name, v in results.items()
        ]
        + [
            "",
            f"A cache hit with the defaults keeps {ratio:.2f} of bare's requests/s (budget "
            f"≥ 0.97: {'met' if ratio >= 0.97 else 'NOT met'}); hand-rolled Starlette auth + "
            f"TTLCache keeps {handrolled:.2f}; the least a hit must do (SHA-256 key, lookup, "
            f"expiry, the Access attached; no audit, no ids) keeps {floor:.2f}; "
            f"wrk -t1 -c16, {args.seconds} s "
            f"x {args.rounds} rounds, uvicorn 1 worker each; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. By the server's CPU per "
            f"request, what a quiet machine would show: the defaults keep {kept_cpu:.2f} of "
            f"bare's requests/s.",
        ]
    )
    print(block)
    if args.write:
        intro = (__doc__ or "").split("\n\n", 1)[0]
        write_section("loopback", "Loopback (`bench_loopback.py`)", intro, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
