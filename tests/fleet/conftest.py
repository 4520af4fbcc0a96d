from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fleet._redis import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """Each test its own keys on the shared server."""
    return f"t{os.urandom(4).hex()}"
