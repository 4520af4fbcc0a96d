from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iamscope.fleet import Fleet, SharedSettings
from tests.fleet._redis import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """Each test its own keys on the shared server."""
    return f"t{os.urandom(4).hex()}"


@pytest.fixture
def fleets(request: pytest.FixtureRequest, namespace: str) -> Iterator[Callable[..., Fleet]]:
    """Makes Fleet objects (each standing for one process) on the test's namespace, at
    ``url`` or the session's redis-server; closes them after the test."""
    made: list[Fleet] = []

    def make(url: str | None = None, **settings: Any) -> Fleet:
        if url is None:
            url = request.getfixturevalue("redis").url
        fleet = Fleet(SharedSettings(namespace=namespace, **settings), url=url)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()
