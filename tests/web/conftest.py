"""The engine most web tests run against: the shared test policy, a local issuer, a list
audit sink, a public path and prefix, in-memory revocations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iamscope import IAMScope
from iamscope.engine.cache import InMemoryRevocations
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from tests._policy import POLICY


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def iam(local_issuer: LocalIssuer, sink: ListSink) -> Iterator[IAMScope]:
    scope = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=sink,
        hash_key=b"k" * 32,
        public_paths=("/health",),
        public_prefixes=("/static/",),
        revocations=InMemoryRevocations(),
    )
    yield scope
    scope.close()
