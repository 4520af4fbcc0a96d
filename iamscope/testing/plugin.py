"""pytest plugin (entry point ``iamscope``): fixtures around :class:`LocalIssuer`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from iamscope.testing._issuer import LocalIssuer


@pytest.fixture
def local_issuer() -> Iterator[LocalIssuer]:
    """A started local issuer with RS256, ES256 and EdDSA keys; stopped after the test."""
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def local_issuer_factory() -> Iterator[Callable[..., LocalIssuer]]:
    """Make more issuers (``factory(algorithms=("ES256",), path="/tenant")``)."""
    made: list[LocalIssuer] = []

    def factory(*args: object, **kwargs: object) -> LocalIssuer:
        issuer = LocalIssuer(*args, **kwargs).start()  # type: ignore[arg-type]
        made.append(issuer)
        return issuer

    yield factory
    for issuer in made:
        issuer.stop()
