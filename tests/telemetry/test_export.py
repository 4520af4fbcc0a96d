"""Export end to end: iamscope's presets and routing exporter sending to a real
collector (rotel: routing, compression, gRPC, what a collector decodes) and, where the
request headers are the point (project tokens, the standard headers), to the in-repo
OTLP receiver on 127.0.0.1 (HTTP/protobuf and gRPC), decoded on arrival."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import IAMScope, IAMScopeMiddleware
from iamscope.errors import ConfigError
from iamscope.policy import PolicyStore
from iamscope.telemetry import RoutingSpanExporter, TelemetrySettings, TraceOwners, configure
from iamscope.telemetry.export import build_exporter
from iamscope.telemetry.metrics import Metrics
from iamscope.testing import LocalIssuer
from tests._policy import POLICY
from tests.telemetry._receiver import OTLPGRPCReceiver, OTLPHTTPReceiver, stopped_endpoint
from tests.telemetry._rotel import Rotel
from tests.telemetry.test_spans import ServerSpan

TOKENS = {"LS_TOKEN_SALES": "tok-sales", "LS_TOKEN_PLATFORM": "tok-platform"}
TOKENS["LS_ACCESS_TOKEN"] = "tok-default"


@pytest.fixture(autouse=True)
def project_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")  # an outage test gives up quickly


def lightstep(endpoint: str, protocol: str = "http/protobuf") -> dict[str, Any]:
    """The reference config's telemetry block, pointed at the local receiver."""
    return {
        "exporter": "lightstep",
        "protocol": protocol,
        "endpoint": endpoint,
        "projects": {
            "sales": {"token_env": "LS_TOKEN_SALES"},
            "platform": {"token_env": "LS_TOKEN_PLATFORM"},
        },
        "default_project": {"token_env": "LS_ACCESS_TOKEN"},
    }


@pytest.fixture
def iam(local_issuer: LocalIssuer) -> Iterator[IAMScope]:
    scope = IAMScope([local_issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=b"k" * 32)
    yield scope
    scope.close()


def serve(iam: IAMScope, provider: TracerProvider) -> Any:
    tracer = provider.get_tracer("app")

    async def work(request: Request) -> JSONResponse:
        with tracer.start_as_current_span("query"):
            pass
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/work", work)])
    return ServerSpan(IAMScopeMiddleware(app, iam), provider)


def call(app: Any, tokens: Sequence[str | None]) -> list[int]:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses = []
            for token in tokens:
                headers = {"authorization": f"Bearer {token}"} if token else {}
                statuses.append((await client.get("/work", headers=headers)).status_code)
            return statuses

    return asyncio.run(run())


def by_token(receiver: Any) -> dict[str, set[tuple[str, object]]]:
    """For each project token seen: (span name, its owner) pairs that arrived with it."""
    found: dict[str, set[tuple[str, object]]] = {}
    for received in receiver.received:
        token = received.headers.get("lightstep-access-token", "")
        for span in received.spans:
            found.setdefault(token, set()).add(
                (span.name, span.attributes.get("iamscope.owner.team"))
            )
    return found


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_each_team_s_spans_reach_its_project_with_its_token(
    protocol: str, iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    receiver = OTLPHTTPReceiver() if protocol == "http/protobuf" else OTLPGRPCReceiver()
    with receiver:
        endpoint = (
            receiver.endpoint if protocol == "http/protobuf" else "http://" + receiver.endpoint
        )
        provider = configure(lightstep(endpoint, protocol), set_global=False)
        app = serve(iam, provider)
        sales = local_issuer.mint(groups=["sales-east"])
        admin = local_issuer.mint(groups=["admins"])
        assert call(app, [sales, admin, None]) == [200, 200, 401]
        provider.get_tracer("startup").start_span("outside-requests").end()
        assert provider.force_flush()
        assert receiver.wait_for(6)
        provider.shutdown()
    assert by_token(receiver) == {
        "tok-sales": {("GET /work", "sales"), ("query", "sales")},
        "tok-platform": {("GET /work", "platform"), ("query", "platform")},
        # The anonymous denial and spans outside requests have no owner: default project.
        "tok-default": {("GET /work", None), ("outside-requests", None)},
    }
    denied = [s for s in receiver.spans() if s.attributes.get("iamscope.decision") == "deny"]
    assert [s.attributes["iamscope.code"] for s in denied] == ["token_missing"]


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("http/protobuf", "none"), ("http/protobuf", "gzip"), ("grpc", "gzip")],
)
def test_each_team_s_trace_reaches_its_own_collector_whole(
    protocol: str,
    compression: str,
    iam: IAMScope,
    local_issuer: LocalIssuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real collector (rotel) per project, decoding what iamscope's exporters send.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    with Rotel(tmp_path / "sales") as sales, Rotel(tmp_path / "default") as default:

        def endpoint(rotel: Rotel) -> str:
            return rotel.http_endpoint if protocol == "http/protobuf" else rotel.grpc_endpoint

        settings = {
            "exporter": "otlp",
            "protocol": protocol,
            "projects": {"sales": {"endpoint": endpoint(sales)}},
            "default_project": {"endpoint": endpoint(default)},
        }
        provider = configure(settings, set_global=False)
        app = serve(iam, provider)
        seller = local_issuer.mint(groups=["sales-east"])
        admin = local_issuer.mint(groups=["admins"])
        assert call(app, [seller, admin, None]) == [200, 200, 401]
        assert provider.force_flush()
        to_sales = sales.wait_for(lambda found: len(found) >= 2)
        to_default = default.wait_for(lambda found: len(found) >= 3)
        provider.shutdown()
    assert sorted((s.name, s.kind) for s in to_sales) == [
        ("GET /work", "SPAN_KIND_SERVER"),
        ("query", "SPAN_KIND_INTERNAL"),
    ]
    assert {s.attributes["iamscope.owner.team"] for s in to_sales} == {"sales"}
    assert len({s.trace_id for s in to_sales}) == 1  # the trace, whole
    server = next(s for s in to_sales if s.name == "GET /work")
    assert server.attributes["user.roles"] == ("analyst",)
    assert server.attributes["iamscope.decision"] == "allow"
    verdicts = sorted(
        (
            s.name,
            s.attributes.get("iamscope.owner.team", ""),
            s.attributes.get("iamscope.code", ""),
        )
        for s in to_default
    )
    assert verdicts == [
        ("GET /work", "", "token_missing"),
        ("GET /work", "platform", ""),
        ("query", "platform", ""),
    ]


def test_a_collector_outage_never_reaches_the_requests(
    iam: IAMScope, local_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    settings = lightstep(stopped_endpoint())
    provider = configure(settings, set_global=False, metrics=Metrics(meters))
    app = serve(iam, provider)
    token = local_issuer.mint(groups=["sales-east"])
    with caplog.at_level(logging.WARNING, logger="iamscope"):
        assert call(app, [token] * 20) == [200] * 20  # answered despite the outage
    # The requests ran on this thread: nothing was exported (and failed) on it meanwhile.
    # (SimpleSpanProcessor would have: one failed export per span, here.)
    during = [r for r in caplog.records if "were not delivered" in r.getMessage()]
    assert threading.get_ident() not in {r.thread for r in during}
    provider.force_flush()
    failed = sum(
        point.value
        for resource in (reader.get_metrics_data() or MetricsData([])).resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "iamscope.export.failures"
        for point in metric.data.data_points
        if point.attributes and point.attributes.get("iamscope.owner.team") == "sales"
    )
    assert failed == 40  # 20 server spans + 20 child spans, counted, never raised
    provider.shutdown()
    meters.shutdown()


class Failing(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise RuntimeError("exporter bug")


def test_a_raising_exporter_is_contained_and_counted() -> None:
    provider = TracerProvider()
    good = InMemorySpanExporter()
    owners = TraceOwners()
    router = RoutingSpanExporter({"sales": Failing()}, good, owners=owners)
    tracer = provider.get_tracer("t")
    spans = []
    for owner in ("sales", "platform", None):
        span = tracer.start_span("s")
        if owner:
            owners.claim_span(span.get_span_context().span_id, owner)
        span.end()
        spans.append(span)
    assert router.export(spans) is SpanExportResult.FAILURE
    assert router.failed == {"sales": 1}
    # Unknown owners and spans without one go to the default project.
    assert len(good.get_finished_spans()) == 2


def test_routing_follows_what_iamscope_recorded_not_span_attributes() -> None:
    owners = TraceOwners()
    sales, platform, default = (InMemorySpanExporter() for _ in range(3))
    router = RoutingSpanExporter({"sales": sales, "platform": platform}, default, owners=owners)
    tracer = TracerProvider().get_tracer("t")
    # An attribute copied from inbound baggage (or set by any processor) routes nothing.
    forged = tracer.start_span("forged", attributes={"iamscope.owner.team": "platform"})
    forged.end()
    recorded = tracer.start_span("recorded", attributes={"iamscope.owner.team": "platform"})
    owners.claim_span(recorded.get_span_context().span_id, "sales")
    recorded.end()
    router.export([forged, recorded])
    assert [s.name for s in default.get_finished_spans()] == ["forged"]
    assert [s.name for s in sales.get_finished_spans()] == ["recorded"]
    assert platform.get_finished_spans() == ()


def test_spans_without_an_owner_follow_their_trace() -> None:
    owners = TraceOwners()
    sales, default = InMemorySpanExporter(), InMemorySpanExporter()
    router = RoutingSpanExporter({"sales": sales}, default, owners=owners)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("server") as server:
        owners.claim(server.get_span_context().trace_id, "sales")
        child = tracer.start_span("started-before-the-middleware")
        child.end()
    router.export([child])
    assert [s.name for s in sales.get_finished_spans()] == ["started-before-the-middleware"]
    assert default.get_finished_spans() == ()


def test_the_otlp_preset_follows_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    with OTLPHTTPReceiver() as receiver:
        base = receiver.endpoint.removesuffix("/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team-key=abc")
        provider = configure({"exporter": "otlp"}, set_global=False)
        call(serve(iam, provider), [local_issuer.mint(groups=["admins"])])
        provider.force_flush()
        assert receiver.wait_for(2)
        provider.shutdown()
    assert {r.headers.get("x-team-key") for r in receiver.received} == {"abc"}


def test_otlp_project_tokens_go_in_the_named_header_beside_the_standard_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-org=acme")
    with OTLPHTTPReceiver() as receiver:
        settings = {
            "exporter": "otlp",
            "endpoint": receiver.endpoint,
            "token_header": "x-project-token",
            "default_project": {"token_env": "LS_ACCESS_TOKEN"},
        }
        provider = configure(settings, set_global=False)
        provider.get_tracer("t").start_span("s").end()
        provider.force_flush()
        assert receiver.wait_for(1)
        provider.shutdown()
    (received,) = receiver.received
    assert received.headers["x-project-token"] == "tok-default"
    assert received.headers["x-org"] == "acme"


def test_missing_secrets_refuse_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_TOKEN_SALES")
    with pytest.raises(ConfigError, match="LS_TOKEN_SALES is not set"):
        build_exporter(TelemetrySettings.from_mapping(lightstep("http://127.0.0.1:9/v1/traces")))
    otlp = {"exporter": "otlp", "default_project": {"token_env": "LS_ACCESS_TOKEN"}}
    with pytest.raises(ConfigError, match="token_header"):
        build_exporter(TelemetrySettings.from_mapping(otlp))


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
)
def test_the_lightstep_preset_follows_the_standard_variables_too(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lightstep is only OTLP + a header: pointed at another backend (an EU ingest, a
    # collector, a successor product) by the standard variables, it goes there.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-org=acme")
    with OTLPHTTPReceiver() as receiver:
        value = receiver.endpoint
        if variable == "OTEL_EXPORTER_OTLP_ENDPOINT":
            value = value.removesuffix("/v1/traces")
        monkeypatch.setenv(variable, value)
        provider = configure({"exporter": "lightstep"}, set_global=False)
        provider.get_tracer("t").start_span("s").end()
        provider.force_flush()
        assert receiver.wait_for(1)
        provider.shutdown()
    (received,) = receiver.received
    assert received.headers["lightstep-access-token"] == "tok-default"
    assert received.headers["x-org"] == "acme"


def test_a_configured_endpoint_wins_over_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    settings = TelemetrySettings(exporter="lightstep", endpoint="https://eu.example/v1/traces")
    exporter = build_exporter(settings)
    assert exporter._endpoint == "https://eu.example/v1/traces"  # type: ignore[attr-defined]


def test_lightstep_preset_defaults_to_its_ingest_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    exporter = build_exporter(TelemetrySettings(exporter="lightstep"))
    assert exporter is not None
    assert exporter._endpoint == "https://ingest.lightstep.com/traces/otlp/v0.9"  # type: ignore[attr-defined]
    assert build_exporter(TelemetrySettings()) is None


def test_configure_sets_the_global_provider_only_when_asked() -> None:
    before = trace.get_tracer_provider()
    configure({"exporter": "none"}, set_global=False)
    assert trace.get_tracer_provider() is before


def test_no_project_is_ever_sent_another_project_s_key(monkeypatch: pytest.MonkeyPatch) -> None:
    unnamed = lightstep("http://127.0.0.1:9/v1/traces")
    unnamed["projects"]["search"] = {"endpoint": "http://search.example/v1/traces"}
    with pytest.raises(ConfigError, match=r"projects\.search: 'token_env' is required"):
        build_exporter(TelemetrySettings.from_mapping(unnamed))
    # The SDK sends OTEL_EXPORTER_OTLP_HEADERS to every exporter: a project key there
    # would reach every project, so routing with one there is refused.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "lightstep-access-token=default-secret")
    with pytest.raises(ConfigError, match="goes to every project"):
        build_exporter(TelemetrySettings.from_mapping(lightstep("http://127.0.0.1:9/v1/traces")))


# --- errors found when the exporters are built name the file the settings came from ----

TELEMETRY_FILE = """\
issuers:
  - {name: corp, issuer: https://corp.example, audience: api}
telemetry:
  exporter: lightstep
  projects:
    sales:
      token_env: LS_TOKEN_SALES
    search:
      endpoint: http://search.example/v1/traces
"""


def test_a_missing_project_token_names_the_file_and_its_token_env_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iamscope.config import load_config

    path = tmp_path / "iamscope.yaml"
    path.write_text(
        TELEMETRY_FILE.replace("    search:\n      endpoint: http://search.example/v1/traces\n", "")
    )
    monkeypatch.delenv("LS_TOKEN_SALES")
    settings = load_config(path).telemetry
    for build in (lambda: build_exporter(settings), lambda: configure(settings, set_global=False)):
        with pytest.raises(ConfigError, match="LS_TOKEN_SALES is not set") as info:
            build()
        assert (info.value.source, info.value.line) == (str(path), 7)
        assert str(info.value).startswith(f"{path}:7: telemetry projects.sales")


def test_a_project_without_token_env_names_the_file_and_the_project_line(
    tmp_path: Path,
) -> None:
    from iamscope.config import load_config

    path = tmp_path / "iamscope.yaml"
    path.write_text(TELEMETRY_FILE)
    with pytest.raises(ConfigError, match="'token_env' is required") as info:
        build_exporter(load_config(path).telemetry)
    assert (info.value.source, info.value.line) == (str(path), 8)


def test_a_missing_default_token_points_at_the_exporter_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iamscope.config import load_config

    path = tmp_path / "iamscope.yaml"
    path.write_text(TELEMETRY_FILE.split("  projects:")[0])  # lightstep: LS_ACCESS_TOKEN
    monkeypatch.delenv("LS_ACCESS_TOKEN")
    with pytest.raises(ConfigError, match="LS_ACCESS_TOKEN is not set") as info:
        build_exporter(load_config(path).telemetry)
    assert (info.value.source, info.value.line) == (str(path), 4)


def test_settings_built_in_code_keep_the_config_placeholder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LS_TOKEN_SALES")
    with pytest.raises(ConfigError) as info:
        configure(lightstep("http://127.0.0.1:9/v1/traces"), set_global=False)
    assert info.value.source is None and str(info.value).startswith("<config>: telemetry")


def test_the_file_a_setting_came_from_is_not_part_of_its_value(tmp_path: Path) -> None:
    from iamscope.config import load_config

    path = tmp_path / "iamscope.yaml"
    path.write_text(TELEMETRY_FILE)
    loaded = load_config(path).telemetry
    assert loaded.source == str(path)
    assert loaded == TelemetrySettings.from_mapping(yaml_free(loaded))


def yaml_free(settings: TelemetrySettings) -> dict[str, Any]:
    """The settings as the mapping code would write."""
    return {
        "exporter": settings.exporter,
        "projects": {
            team: {k: v for k, v in (("token_env", p.token_env), ("endpoint", p.endpoint)) if v}
            for team, p in settings.projects.items()
        },
    }
