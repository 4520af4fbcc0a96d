"""A fleet of real processes: uvicorn with four workers sharing revocations through a
real redis-server, and a fleet surviving fork (gunicorn --preload forks after import)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from iamscope.fleet import Fleet, SharedSettings
from iamscope.testing import LocalIssuer
from iamscope.tokens.principal import Principal
from tests.fleet._redis import RedisServer

WORKERS = 4

APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
import os

from iamscope import IAMScope, IAMScopeMiddleware


async def endpoint(request):
    return JSONResponse({"ok": True})


iam = IAMScope.from_config()
inner = IAMScopeMiddleware(Starlette(routes=[Route("/", endpoint)]), iam)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, redis: RedisServer, namespace: str) -> Iterator[tuple[str, LocalIssuer]]:
    with LocalIssuer() as issuer:
        config = {
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
        (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(config))
        (tmp_path / "fleet_app.py").write_text(APP)
        port = free_port()
        root = Path(__file__).resolve().parents[2]
        env = {
            **os.environ,
            "IAMSCOPE_CONFIG": str(tmp_path / "fleet.yaml"),
            "TEST_FLEET_REDIS": redis.url,
            "IAMSCOPE_HASH_KEY": "k" * 32,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)]),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "fleet_app:app", "--port", str(port)]
            + ["--host", "127.0.0.1", "--workers", str(WORKERS), "--log-level", "warning"],
            cwd=tmp_path,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        pytest.fail("uvicorn did not start")
                    time.sleep(0.1)
            yield url, issuer
        finally:
            server.terminate()
            server.wait(timeout=15)


def answers_by_worker(url: str, token: str, want: int) -> dict[str, set[int]]:
    """Statuses per worker pid, a fresh connection each time so every worker answers."""
    seen: dict[str, set[int]] = {}
    for _ in range(400):
        response = httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=5)
        seen.setdefault(response.headers["x-worker"], set()).add(response.status_code)
        if len(seen) >= want and sum(1 for s in seen.values() if s) >= want:
            break
    return seen


def test_a_revocation_reaches_every_worker_within_a_second(
    served: tuple[str, LocalIssuer], redis: RedisServer, namespace: str
) -> None:
    url, issuer = served
    token = issuer.mint({"sub": "alice", "groups": ["g"]})
    before = answers_by_worker(url, token, WORKERS)
    assert len(before) == WORKERS, f"only {len(before)} workers answered"
    assert all(statuses == {200} for statuses in before.values())  # each has it cached
    operator = Fleet(SharedSettings(namespace=namespace), url=redis.url)
    try:
        operator.revoke("sub", "corp", "alice")
        revoked_at = time.monotonic()
    finally:
        operator.close()
    time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
    after = answers_by_worker(url, token, WORKERS)
    assert len(after) == WORKERS
    assert all(statuses == {401} for statuses in after.values()), after


def test_a_fleet_follows_on_after_fork(redis: RedisServer, namespace: str) -> None:
    fleet = Fleet(SharedSettings(namespace=namespace), url=redis.url)
    operator = Fleet(SharedSettings(namespace=namespace), url=redis.url)
    try:
        assert fleet.start()
        pid = os.fork()
        if pid == 0:  # the child: its own listener, its own connections
            code = 1
            try:
                alice = Principal("corp", "https://idp", "alice", "user", time.time() + 60)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    if not fleet.revocations.stale and fleet.revocations.is_revoked(alice):
                        code = 0
                        break
                    time.sleep(0.01)
            finally:
                os._exit(code)
        time.sleep(0.3)  # let the child's listener start before revoking
        operator.revoke("sub", "corp", "alice")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        fleet.close()
        operator.close()
