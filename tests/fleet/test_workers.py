"""A fleet of real processes: uvicorn with four workers sharing revocations through a
real redis-server, ``gunicorn --preload`` (the engine and its fleet built in the master,
then forked into the workers), and a fleet surviving a bare ``os.fork``."""

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
from tests.fleet._app import fleet_config, serve, serve_preloaded
from tests.fleet._redis import RedisServer

WORKERS = 4


@pytest.fixture
def served(tmp_path: Path, redis: RedisServer, namespace: str) -> Iterator[tuple[str, LocalIssuer]]:
    with (
        LocalIssuer() as issuer,
        serve(tmp_path, fleet_config(issuer, namespace), redis.url, WORKERS) as url,
    ):
        yield url, issuer


def answers_by_worker(
    url: str, token: str, want: int, loaded_in: set[str] | None = None
) -> dict[str, set[int]]:
    """Statuses per worker pid, a fresh connection each time so every worker answers;
    ``loaded_in`` collects the pids that imported the app (gunicorn's answers say)."""
    seen: dict[str, set[int]] = {}
    for _ in range(400):
        response = httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=5)
        seen.setdefault(response.headers["x-worker"], set()).add(response.status_code)
        if loaded_in is not None:
            loaded_in.add(response.headers["x-loaded-in"])
        if len(seen) >= want and sum(1 for s in seen.values() if s) >= want:
            break
    return seen


def assert_revoked_everywhere_within_a_second(
    url: str, token: str, workers: int, redis: RedisServer, namespace: str
) -> None:
    """Another process revokes alice; one second later every worker refuses her."""
    operator = Fleet(SharedSettings(namespace=namespace), url=redis.url)
    try:
        operator.revoke("sub", "corp", "alice")
        revoked_at = time.monotonic()
    finally:
        operator.close()
    time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
    after = answers_by_worker(url, token, workers)
    assert len(after) == workers
    assert all(statuses == {401} for statuses in after.values()), after


def test_a_revocation_reaches_every_worker_within_a_second(
    served: tuple[str, LocalIssuer], redis: RedisServer, namespace: str
) -> None:
    url, issuer = served
    token = issuer.mint({"sub": "alice", "groups": ["g"]})
    before = answers_by_worker(url, token, WORKERS)
    assert len(before) == WORKERS, f"only {len(before)} workers answered"
    assert all(statuses == {200} for statuses in before.values())  # each has it cached
    assert_revoked_everywhere_within_a_second(url, token, WORKERS, redis, namespace)


def test_a_revocation_reaches_every_preloaded_gunicorn_worker(
    tmp_path: Path, redis: RedisServer, namespace: str
) -> None:
    """Under ``gunicorn --preload`` the master builds the engine, which joins the fleet
    (its listener thread, its Redis connections), then forks: no thread survives a fork,
    so each worker must start its own listener or it would never hear a revocation."""
    workers = 3
    with (
        LocalIssuer() as issuer,
        serve_preloaded(tmp_path, fleet_config(issuer, namespace), redis.url, workers) as url,
    ):
        token = issuer.mint({"sub": "alice", "groups": ["g"]})
        loaded_in: set[str] = set()
        before = answers_by_worker(url, token, workers, loaded_in)
        assert len(before) == workers, f"only {len(before)} workers answered"
        assert all(statuses == {200} for statuses in before.values())
        # Every worker runs the app one process imported before forking: the master.
        assert len(loaded_in) == 1 and not loaded_in & set(before), (loaded_in, before)
        assert_revoked_everywhere_within_a_second(url, token, workers, redis, namespace)


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
