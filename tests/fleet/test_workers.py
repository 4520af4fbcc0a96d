"""A fleet of real processes: uvicorn with four workers sharing revocations through a
real redis-server, and a fleet surviving fork (gunicorn --preload forks after import)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iamscope.fleet import Fleet, SharedSettings
from iamscope.testing import LocalIssuer
from iamscope.tokens.principal import Principal
from tests.fleet._app import fleet_config, serve
from tests.fleet._redis import RedisServer

WORKERS = 4


@pytest.fixture
def served(tmp_path: Path, redis: RedisServer, namespace: str) -> Iterator[tuple[str, LocalIssuer]]:
    with (
        LocalIssuer() as issuer,
        serve(tmp_path, fleet_config(issuer, namespace), redis.url, WORKERS) as url,
    ):
        yield url, issuer


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
