"""The app a fleet of workers serves in the tests and in benchmarks/bench_fleet.py: one
route behind IAMScopeMiddleware built from IAMSCOPE_CONFIG, and an outer layer naming
the worker (its pid) on every answer, refusals included. :func:`serve` runs it under
uvicorn's workers; :func:`serve_preloaded` runs its WSGI twin under ``gunicorn
--preload``, which builds the app (and joins the fleet) in the master, then forks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
import os

from iamscope import IAMScope, IAMScopeMiddleware


async def endpoint(request):
    return JSONResponse({"ok": True})


async def fleet(request):  # when this worker's view of the revocations last moved
    return JSONResponse({"changed_at": iam.fleet.revocations.changed_at})


iam = IAMScope.from_config(public_paths=["/fleet"])
routes = [Route("/", endpoint), Route("/fleet", fleet)]
inner = IAMScopeMiddleware(Starlette(routes=routes), iam)
PID = str(os.getpid()).encode()


async def app(scope, receive, send):
    async def tagged(message):  # which worker answered, refusals included
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-worker", PID)]
        await send(message)

    if scope["type"] == "lifespan":
        return await inner(scope, receive, send)
    await inner(scope, receive, tagged)
"""


WSGI_APP = """
import os

from iamscope import IAMScope, IAMScopeWSGIMiddleware

LOADED_IN = str(os.getpid())  # under --preload: the master's pid, not the worker's
iam = IAMScope.from_config()


def endpoint(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


inner = IAMScopeWSGIMiddleware(endpoint, iam)


def app(environ, start_response):
    def tagged(status, headers, exc_info=None):  # which worker answered, and who loaded it
        extra = [("x-worker", str(os.getpid())), ("x-loaded-in", LOADED_IN)]
        return start_response(status, [*headers, *extra], exc_info)

    return inner(environ, tagged)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fleet_config(issuer: Any, namespace: str) -> dict[str, Any]:
    return {
        "issuers": [
            {
                "name": "corp",
                "issuer": issuer.url,
                "audience": issuer.audience,
                "jwks_uri": issuer.jwks_uri,
            }
        ],
        "policy": {
            "version": "v1",
            "roles": {"reader": {"permissions": ["x:read"]}},
            "bindings": [{"groups": ["g"], "roles": ["reader"]}],
        },
        "shared": {"redis_url_env": "TEST_FLEET_REDIS", "namespace": namespace},
    }


@contextmanager
def serve(directory: Path, config: dict[str, Any], redis_url: str, workers: int) -> Iterator[str]:
    """uvicorn with ``workers`` workers on a free loopback port; its URL."""
    (directory / "fleet_app.py").write_text(APP)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "fleet_app:app", "--port", str(port)]
    command += ["--host", "127.0.0.1", "--workers", str(workers), "--log-level", "warning"]
    with _launch(directory, config, redis_url, command, port) as url:
        yield url


@contextmanager
def serve_preloaded(
    directory: Path, config: dict[str, Any], redis_url: str, workers: int
) -> Iterator[str]:
    """``gunicorn --preload`` with ``workers`` sync workers on a free loopback port; its
    URL. The master imports the app, so the engine and its fleet start before the fork."""
    (directory / "fleet_wsgi.py").write_text(WSGI_APP)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", str(workers)]
    command += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning", "fleet_wsgi:app"]
    with _launch(directory, config, redis_url, command, port) as url:
        yield url


@contextmanager
def _launch(
    directory: Path, config: dict[str, Any], redis_url: str, command: list[str], port: int
) -> Iterator[str]:
    """Runs ``command`` (a server listening on ``port``) with the fleet's configuration
    until it answers; stops it afterwards."""
    (directory / "fleet.yaml").write_text(yaml.safe_dump(config))
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "IAMSCOPE_CONFIG": str(directory / "fleet.yaml"),
        "TEST_FLEET_REDIS": redis_url,
        "IAMSCOPE_HASH_KEY": "k" * 32,
        "PYTHONPATH": os.pathsep.join([str(directory), str(root)]),
    }
    server = subprocess.Popen(command, cwd=directory, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{command[2]} did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)
