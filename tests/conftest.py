"""Shared test helpers. Fixtures for the local issuer come from iamscope's pytest plugin."""

from __future__ import annotations

import time

import pytest

from tests._postgres import postgres_dsn  # noqa: F401 - session fixture, registered by import


class FakeClock:
    """A settable clock for injection (``Verifier(clock=...)``), never monkeypatching time."""

    def __init__(self, now: float | None = None) -> None:
        # A little ahead of real time: tokens minted later in the test carry a real `iat`
        # that must not look issued in the future to this clock.
        self.now = time.time() + 2 if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
