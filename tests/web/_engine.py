"""The engine the web tests build: the corp issuer of a local issuer, the shared test
policy, a fixed hash key, and whatever options a test adds."""

from __future__ import annotations

from typing import Any

from iamscope import IAMScope, IssuerConfig
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from tests._policy import POLICY


def engine(
    local_issuer: LocalIssuer,
    sink: ListSink | None = None,
    *,
    issuer: IssuerConfig | None = None,
    **kw: Any,
) -> IAMScope:
    """``issuer``: an IssuerConfig of the test's own, instead of the corp defaults."""
    config = issuer if issuer is not None else local_issuer.issuer_config("corp")
    audit = sink if sink is not None else ListSink()
    return IAMScope([config], PolicyStore(POLICY), audit=audit, hash_key=b"k" * 32, **kw)
