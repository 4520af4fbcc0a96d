"""The engine most web tests run against: the shared test policy, a local issuer, a list
audit sink, a public path and prefix, in-memory revocations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iamscope import IAMScope
from iamscope.engine.cache import InMemoryRevocations
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from tests.web._engine import engine


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def iam(local_issuer: LocalIssuer, sink: ListSink) -> Iterator[IAMScope]:
    scope = engine(
        local_issuer,
        sink,
        public_paths=("/health",),
        public_prefixes=("/static/",),
        revocations=InMemoryRevocations(),
    )
    yield scope
    scope.close()
