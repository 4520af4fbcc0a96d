"""IAMScope's metrics, read back through a real OpenTelemetry SDK MeterProvider passed as
``meter_provider=`` (the global provider is never touched), with tokens from a real local
issuer and a real policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    NumberDataPoint,
)

from iamscope import IAMScope
from iamscope.errors import RoleRequired
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from iamscope.tokens.keys import KeyPolicy
from tests._policy import POLICY
from tests.conftest import FakeClock

Points = dict[tuple[str, frozenset[tuple[str, Any]]], float]

DECISIONS = "iamscope.decisions"
VERIFY = "iamscope.verify.duration"
FETCHES = "iamscope.key.fetches"
RELOADS = "iamscope.policy.reloads"


def points(data: MetricsData | None) -> Points:
    """{(metric name, attributes): value}; a histogram's value is its count."""
    found: Points = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    assert key not in found, f"two points for {key}"
                    if isinstance(point, HistogramDataPoint):
                        found[key] = point.count
                    else:
                        assert isinstance(point, NumberDataPoint)
                        found[key] = point.value
    return found


def of(found: Points, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    """The points of one metric, keyed by attributes; zero-valued points left out."""
    return {attrs: value for (metric, attrs), value in found.items() if metric == name and value}


def attrs(**values: str) -> frozenset[tuple[str, Any]]:
    """iamscope.* attributes by their short name; ``error`` is ``error.type``."""
    return frozenset(
        ("error.type" if k == "error" else f"iamscope.{k}", v) for k, v in values.items()
    )


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider
    provider.shutdown()


@pytest.fixture
def iam(local_issuer: LocalIssuer, provider: MeterProvider, clock: FakeClock) -> Iterator[IAMScope]:
    scope = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=ListSink(),
        hash_key=b"k" * 32,
        clock=clock,
        meter_provider=provider,
    )
    yield scope
    scope.close()


def test_decisions_are_counted_by_outcome_cache_and_code(
    iam: IAMScope, reader: InMemoryMetricReader, local_issuer: LocalIssuer
) -> None:
    good = bearer(local_issuer.mint(sub="alice", groups=["sales-east"]))
    assert iam.decide(good).cache == "miss"
    assert iam.decide(good).cache == "hit"
    assert iam.decide(good).cache == "hit"
    assert iam.decide([]).error is not None
    bad = iam.decide(bearer(local_issuer.mint(sub="bob", aud="api://other")))
    assert bad.error is not None and bad.error.code == "audience_invalid"

    assert of(points(reader.get_metrics_data()), DECISIONS) == {
        attrs(decision="allow", cache="miss"): 1,
        attrs(decision="allow", cache="hit"): 2,
        attrs(decision="deny", cache="none", error="token_missing"): 1,
        attrs(decision="deny", cache="miss", error="audience_invalid"): 1,
    }


def test_decision_counts_are_cumulative_across_collections(
    iam: IAMScope, reader: InMemoryMetricReader, local_issuer: LocalIssuer
) -> None:
    good = bearer(local_issuer.mint(groups=["admins"]))
    iam.decide(good)
    iam.decide(good)
    first = of(points(reader.get_metrics_data()), DECISIONS)
    assert first[attrs(decision="allow", cache="hit")] == 1
    iam.decide(good)
    assert iam.hit(good) is not None  # the fast path counts too
    second = of(points(reader.get_metrics_data()), DECISIONS)
    assert second[attrs(decision="allow", cache="hit")] == 3
    assert second[attrs(decision="allow", cache="miss")] == 1


def test_a_refusal_after_admission_is_counted_with_its_code(
    iam: IAMScope, reader: InMemoryMetricReader, local_issuer: LocalIssuer
) -> None:
    decision = iam.decide(bearer(local_issuer.mint(groups=["sales-east"])))
    assert decision.allowed
    iam.audit_denial(decision, RoleRequired("admin only"), "GET", "/admin")
    assert of(points(reader.get_metrics_data()), DECISIONS) == {
        attrs(decision="allow", cache="miss"): 1,
        attrs(decision="deny", cache="miss", error="role_required"): 1,
    }


def test_verify_duration_records_each_verification_with_its_outcome(
    iam: IAMScope, reader: InMemoryMetricReader, local_issuer: LocalIssuer
) -> None:
    good = bearer(local_issuer.mint(groups=["sales-east"]))
    bad = bearer(local_issuer.mint(aud="api://other"))
    iam.decide(good)
    iam.decide(good)  # a hit: no verification
    iam.decide([])  # no token: no verification
    iam.decide(bad)
    iam.decide(bad)  # a cached rejection: no verification

    data = reader.get_metrics_data()
    assert of(points(data), VERIFY) == {
        attrs(): 1,
        attrs(error="audience_invalid"): 1,
    }
    assert data is not None
    (histogram,) = [
        m
        for r in data.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
        if m.name == VERIFY
    ]
    assert histogram.unit == "s"
    for point in histogram.data.data_points:
        assert isinstance(point, HistogramDataPoint)
        assert 0 < point.sum < 5


def test_key_fetches_count_a_successful_and_a_failed_refresh(
    iam: IAMScope, reader: InMemoryMetricReader, local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    assert iam.decide(bearer(local_issuer.mint(groups=["admins"]))).allowed
    fetched = attrs(issuer="corp", **{"key.outcome": "ok"})
    assert of(points(reader.get_metrics_data()), FETCHES) == {fetched: 1}

    local_issuer.failure = 503
    new_key = local_issuer.rotate()  # a kid the verifier has never seen
    clock.advance(KeyPolicy().min_refetch)  # the unknown kid may cause a fetch
    jwks_before = local_issuer.requests["/jwks.json"]
    refused = iam.decide(bearer(local_issuer.mint(key=new_key, groups=["admins"])))
    assert local_issuer.requests["/jwks.json"] == jwks_before + 1
    assert refused.error is not None and refused.error.code == "keys_unavailable"

    found = points(reader.get_metrics_data())
    assert of(found, FETCHES) == {
        fetched: 1,
        attrs(issuer="corp", error="keys_unavailable"): 1,
    }
    assert of(found, VERIFY)[attrs(error="keys_unavailable")] == 1


def test_a_key_set_over_its_cap_is_counted_as_over_limit(
    iam: IAMScope, reader: InMemoryMetricReader, local_issuer: LocalIssuer
) -> None:
    for _ in range(KeyPolicy().max_keys + 1):
        local_issuer.add_key("ES256")
    refused = iam.decide(bearer(local_issuer.mint(groups=["admins"])))
    assert refused.error is not None and refused.error.code == "keys_unavailable"
    assert of(points(reader.get_metrics_data()), FETCHES) == {
        attrs(issuer="corp", error="over_limit"): 1
    }


def test_policy_reloads_count_accepted_and_refused(
    iam: IAMScope, reader: InMemoryMetricReader
) -> None:
    assert of(points(reader.get_metrics_data()), RELOADS) == {}

    good = iam.policy.reload({**POLICY, "version": "v2"})
    assert good.changed and iam.policy.current.version == "v2"
    assert of(points(reader.get_metrics_data()), RELOADS) == {attrs(): 1}

    bad = iam.policy.reload({**POLICY, "version": "v3", "rolez": {}})
    assert not bad.changed and iam.policy.current.version == "v2"
    assert of(points(reader.get_metrics_data()), RELOADS) == {
        attrs(): 1,
        attrs(error="config_invalid"): 1,
    }


def test_metrics_go_only_to_the_provider_given(
    local_issuer: LocalIssuer, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    other = InMemoryMetricReader()
    other_provider = MeterProvider(metric_readers=[other], shutdown_on_exit=False)
    first = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=ListSink(),
        hash_key=b"k" * 32,
        meter_provider=provider,
    )
    second = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        audit=ListSink(),
        hash_key=b"k" * 32,
        meter_provider=other_provider,
    )
    first.decide([])
    assert of(points(reader.get_metrics_data()), DECISIONS) == {
        attrs(decision="deny", cache="none", error="token_missing"): 1
    }
    assert of(points(other.get_metrics_data()), DECISIONS) == {}
    first.close()
    second.close()
    other_provider.shutdown()


def test_export_failures_say_which_team_and_why(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from iamscope.telemetry import RoutingSpanExporter, TraceOwners
    from iamscope.telemetry.metrics import Metrics

    class Raising(InMemorySpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            raise ConnectionResetError("exporter bug")

    class Refusing(InMemorySpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.FAILURE

    owners = TraceOwners()
    router = RoutingSpanExporter(
        {"sales": Raising(), "platform": Refusing()},
        InMemorySpanExporter(),
        owners=owners,
        metrics=Metrics(provider),
    )
    spans = []
    for owner in ("sales", "platform", None):
        span = TracerProvider().get_tracer("t").start_span("s")
        if owner:
            owners.claim_span(span.get_span_context().span_id, owner)
        span.end()
        spans.append(span)
    router.export(spans)
    assert of(points(reader.get_metrics_data()), "iamscope.export.failures") == {
        attrs(**{"owner.team": "sales"}, error="ConnectionResetError"): 1,
        attrs(**{"owner.team": "platform"}, error="export_failed"): 1,
    }
