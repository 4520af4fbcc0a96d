"""Identity on spans (contract 5), with a real TracerProvider and in-memory exporter.

An outer ASGI/WSGI layer starts the server span the way the OpenTelemetry middleware
does (a real SDK span made current around the inner app), so the tests need no
instrumentation package; the tagging code cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.metadata
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import IAMScope, IAMScopeMiddleware, IAMScopeWSGIMiddleware, errors, require
from iamscope.engine.decision import Decision
from iamscope.policy import PolicyStore
from iamscope.telemetry import (
    OwnershipSpanProcessor,
    RoutingSpanExporter,
    TelemetrySettings,
    TraceOwners,
    spans,
)
from iamscope.telemetry.spans import tag
from iamscope.testing import LocalIssuer
from tests._http import get
from tests._policy import POLICY

KEY = b"k" * 32


@pytest.fixture(autouse=True, params=["fast", "public"])
def attribute_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Every test here runs on both ways of writing span attributes: the SDK fast path
    and the public API (what any other SDK or version gets)."""
    if request.param == "public":
        monkeypatch.setenv(spans.FAST_PATH_ENV, "off")  # subprocesses too
    assert spans.use_fast_path(request.param == "fast") is (request.param == "fast")
    yield request.param
    monkeypatch.undo()
    spans.use_fast_path()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()  # never the global one: each test owns its provider
    provider.add_span_processor(OwnershipSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def make_iam(issuer: LocalIssuer, **kw: Any) -> IAMScope:
    return IAMScope([issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=KEY, **kw)


class ServerSpan:
    """What OpenTelemetryMiddleware does, reduced: a current SERVER span around the app."""

    def __init__(self, app: Any, provider: TracerProvider, carry: dict[str, str] | None = None):
        self.app, self.tracer, self.carry = app, provider.get_tracer("test"), carry or {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = otel_context.get_current()
        for name, value in self.carry.items():  # inbound baggage, as propagation puts it
            ctx = baggage.set_baggage(name, value, ctx)
        token = otel_context.attach(ctx)
        try:
            name = f"{scope['method']} {scope['path']}"
            with self.tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER):
                await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


def make_app(iam: IAMScope, provider: TracerProvider, **kw: Any) -> Any:
    tracer = provider.get_tracer("handler")
    seen: dict[str, Any] = {}

    async def work(request: Request) -> JSONResponse:
        with tracer.start_as_current_span("in-handler"):
            pass
        # A thread with a copied context, and a task started inside the request.
        await asyncio.to_thread(lambda: tracer.start_span("in-thread").end())
        task = asyncio.create_task(_later(tracer))
        await task
        seen["baggage"] = dict(baggage.get_all())
        return JSONResponse({"ok": True})

    @require(roles=["admin"])
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": True})

    app = Starlette(routes=[Route("/work", work), Route("/admin", admin)])
    wrapped = ServerSpan(IAMScopeMiddleware(app, iam), provider, **kw)
    wrapped.seen = seen  # type: ignore[attr-defined]
    return wrapped


async def _later(tracer: trace.Tracer) -> None:
    await asyncio.sleep(0)
    tracer.start_span("in-task").end()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_server_span_carries_identity_and_decision(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    iam = make_iam(local_issuer)
    app = make_app(iam, provider)
    token = local_issuer.mint(sub="alice", groups=["sales-east"])
    assert get(app, "/work", token).status_code == 200
    assert get(app, "/work", token).status_code == 200
    first, second = [s for s in exporter.get_finished_spans() if s.name == "GET /work"]
    attrs = dict(first.attributes or {})
    assert attrs["iamscope.issuer"] == "corp" and attrs["iamscope.principal.kind"] == "user"
    assert attrs["iamscope.owner.team"] == "sales" and attrs["user.roles"] == ("analyst",)
    assert attrs["iamscope.policy.version"] == "v1" and attrs["iamscope.decision"] == "allow"
    assert attrs["user.hash"] == iam.hasher("corp", "alice")  # type: ignore[misc]
    assert "enduser.id" not in attrs and "alice" not in repr(attrs)  # PII is opt-in
    assert (attrs["iamscope.cache"], second.attributes["iamscope.cache"]) == ("miss", "hit")  # type: ignore[index]
    assert attrs["iamscope.decision_id"] != second.attributes["iamscope.decision_id"]  # type: ignore[index]
    iam.close()


def test_spans_inside_the_request_carry_the_owner(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    iam = make_iam(local_issuer)
    get(make_app(iam, provider), "/work", local_issuer.mint(groups=["sales-east"]))
    spans = by_name(exporter)
    server_id = spans["GET /work"].attributes["iamscope.decision_id"]  # type: ignore[index]
    for name in ("in-handler", "in-thread", "in-task"):
        attrs = spans[name].attributes or {}
        assert attrs.get("iamscope.owner.team") == "sales", name
        assert attrs.get("iamscope.decision_id") == server_id, name
        assert "user.hash" in attrs and "iamscope.decision" not in attrs, name
    iam.close()


def test_spans_outside_requests_carry_no_identity(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    iam = make_iam(local_issuer)
    get(make_app(iam, provider), "/work", local_issuer.mint(groups=["sales-east"]))
    provider.get_tracer("t").start_span("after").end()
    # A thread that did not copy the context sees no request either.
    thread = threading.Thread(target=lambda: provider.get_tracer("t").start_span("bare").end())
    thread.start()
    thread.join()
    spans = by_name(exporter)
    for name in ("after", "bare"):
        assert not any(k.startswith(("iamscope.", "user.")) for k in spans[name].attributes or {})
    iam.close()


def test_denials_are_tagged_without_unverified_identity(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    iam = make_iam(local_issuer)
    app = make_app(iam, provider)
    forged = local_issuer.mint(sub="mallory", groups=["admins"], aud="api://other")
    response = get(app, "/work", forged)
    assert response.status_code == 401
    attrs = dict(by_name(exporter)["GET /work"].attributes or {})
    assert attrs["iamscope.decision"] == "deny" and attrs["iamscope.code"] == "audience_invalid"
    assert attrs["iamscope.decision_id"] == response.json()["decision_id"]
    assert not {"user.hash", "user.roles", "iamscope.owner.team"} & set(attrs)
    iam.close()


def test_refusals_by_a_decorator_are_tagged_with_the_verified_identity(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    iam = make_iam(local_issuer)
    response = get(make_app(iam, provider), "/admin", local_issuer.mint(groups=["sales-east"]))
    assert response.status_code == 403
    attrs = dict(by_name(exporter)["GET /admin"].attributes or {})
    assert attrs["iamscope.decision"] == "deny" and attrs["iamscope.code"] == "role_required"
    assert attrs["iamscope.owner.team"] == "sales" and "user.hash" in attrs
    assert attrs["iamscope.decision_id"] == response.json()["decision_id"]
    iam.close()


def test_raw_subject_only_when_enabled(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    iam = make_iam(local_issuer, telemetry=TelemetrySettings(enduser_id=True, user_hash=False))
    get(make_app(iam, provider), "/work", local_issuer.mint(sub="alice", groups=["sales-east"]))
    attrs = dict(by_name(exporter)["GET /work"].attributes or {})
    assert attrs["enduser.id"] == "alice" and "user.hash" not in attrs
    iam.close()


def test_inbound_baggage_is_never_identity_and_can_be_stripped(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    carry = {"iamscope.owner.team": "platform", "user.hash": "forged", "tenant": "t1"}
    token = local_issuer.mint(groups=["sales-east"])
    kept = make_iam(local_issuer)
    app = make_app(kept, provider, carry=carry)
    get(app, "/work", token)
    assert by_name(exporter)["in-handler"].attributes["iamscope.owner.team"] == "sales"  # type: ignore[index]
    assert app.seen["baggage"]["iamscope.owner.team"] == "platform"  # passed on, never used
    stripping = make_iam(local_issuer, telemetry=TelemetrySettings(strip_baggage=True))
    app = make_app(stripping, provider, carry=carry)
    get(app, "/work", token)
    assert app.seen["baggage"] == {"user.hash": "forged", "tenant": "t1"}
    kept.close()
    stripping.close()


def test_owner_is_decided_once_per_trace(
    local_issuer: LocalIssuer, provider: TracerProvider
) -> None:
    iam = make_iam(local_issuer)
    owners = TraceOwners()
    RoutingSpanExporter({}, InMemorySpanExporter(), owners=owners)  # a reader switches it on
    tracer = provider.get_tracer("t")

    def decide(groups: list[str]) -> Any:
        return iam.decide(
            [(b"authorization", f"Bearer {local_issuer.mint(groups=groups)}".encode())]
        )

    with tracer.start_as_current_span("server") as span:
        tag(span, decide(["admins"]), owners)
        trace_id = span.get_span_context().trace_id
        tag(span, decide(["sales-east"]), owners)  # a request reusing the trace id
    assert owners.get(trace_id) == "platform"
    unread = TraceOwners()
    with tracer.start_as_current_span("server") as span:
        tag(span, decide(["admins"]), unread)
    assert unread.get(span.get_span_context().trace_id) is None  # nobody routes: no cost
    iam.close()


def test_identity_attributes_are_built_once_per_cached_token(local_issuer: LocalIssuer) -> None:
    iam = make_iam(local_issuer)
    headers = [(b"authorization", f"Bearer {local_issuer.mint(groups=['sales-east'])}".encode())]
    miss, hit = iam.decide(headers), iam.decide(headers)
    assert hit.cache == "hit" and hit.attributes is miss.attributes is not None
    iam.close()


def test_flask_server_span_is_tagged(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    iam = make_iam(local_issuer)
    app = flask.Flask("spans")
    tracer = provider.get_tracer("t")

    @app.get("/work")
    def work() -> Any:
        tracer.start_span("in-view").end()
        return {"ok": True}

    inner = IAMScopeWSGIMiddleware(app.wsgi_app, iam)

    def server_span(environ: dict[str, Any], start_response: Any) -> Any:
        with tracer.start_as_current_span("GET /work", kind=trace.SpanKind.SERVER):
            body = inner(environ, start_response)
            try:
                return list(body)
            finally:
                body.close()  # type: ignore[attr-defined]  # as every WSGI server must

    transport = httpx.WSGITransport(app=server_span)
    with httpx.Client(transport=transport, base_url="http://t") as client:
        token = local_issuer.mint(groups=["sales-east"])
        assert client.get("/work", headers={"authorization": f"Bearer {token}"}).status_code == 200
    spans = by_name(exporter)
    assert spans["GET /work"].attributes["iamscope.owner.team"] == "sales"  # type: ignore[index]
    assert spans["in-view"].attributes["iamscope.owner.team"] == "sales"  # type: ignore[index]
    iam.close()


MISORDERED = """
import asyncio, logging, sys
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from iamscope import IAMScope, IAMScopeMiddleware
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer

logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
trace.set_tracer_provider(TracerProvider())  # configured, but nothing starts a server span
policy = {"version": "v", "roles": {"r": {"permissions": ["x"]}},
          "bindings": [{"groups": ["g"], "roles": ["r"]}]}
with LocalIssuer() as issuer:
    iam = IAMScope([issuer.issuer_config("corp")], PolicyStore(policy), hash_key=b"k" * 32)
    app = IAMScopeMiddleware(Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))]), iam)
    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for token in (issuer.mint(groups=["g"]), issuer.mint(groups=["g"])):
                response = await client.get("/", headers={"authorization": "Bearer " + token})
                assert response.status_code == 200
    asyncio.run(main())
    iam.close()
"""


def test_a_request_no_server_span_carried_is_reported_once() -> None:
    # Its own process: the global tracer provider can be set only once.
    out = subprocess.run(
        [sys.executable, "-c", MISORDERED], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("no server span carried") == 1
    assert "opentelemetry-instrument" in out.stdout  # the fix it names instruments once


def test_no_warning_when_the_server_span_starts_inside_the_request() -> None:
    # Flask's and Django's instrumentors start the server span inside the app: with the
    # ownership processor on the provider, that span gets the verdict; nothing to warn.
    inside = (
        MISORDERED.replace(
            "trace.set_tracer_provider(TracerProvider())",
            "from iamscope.telemetry import OwnershipSpanProcessor\n"
            "provider = TracerProvider()\n"
            "provider.add_span_processor(OwnershipSpanProcessor())\n"
            "trace.set_tracer_provider(provider)",
        )
        .replace(
            'lambda r: PlainTextResponse("ok")',
            "served",
        )
        .replace(
            "with LocalIssuer() as issuer:",
            "def served(request):\n"
            "    with trace.get_tracer('fw').start_as_current_span("
            "'GET /', kind=trace.SpanKind.SERVER) as span:\n"
            "        assert span.attributes['iamscope.decision'] == 'allow'\n"
            "        return PlainTextResponse('ok')\n"
            "with LocalIssuer() as issuer:",
        )
    )
    out = subprocess.run([sys.executable, "-c", inside], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "no server span carried" not in out.stdout


def test_copied_context_is_what_threads_need(
    local_issuer: LocalIssuer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # contextvars.copy_context().run is the general form of what asyncio.to_thread does.
    iam = make_iam(local_issuer)
    tracer = provider.get_tracer("t")

    async def view(request: Request) -> JSONResponse:
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(lambda: tracer.start_span("copied").end(),)
        )
        thread.start()
        thread.join()
        return JSONResponse({})

    app = ServerSpan(IAMScopeMiddleware(Starlette(routes=[Route("/", view)]), iam), provider)
    get(app, "/", local_issuer.mint(groups=["admins"]))
    assert by_name(exporter)["copied"].attributes["iamscope.owner.team"] == "platform"  # type: ignore[index]
    iam.close()


def test_put_keeps_the_sdk_rules() -> None:
    # Run on both paths (the module's attribute_path fixture): they must agree.
    from opentelemetry.sdk.trace import SpanLimits

    attrs = {"iamscope.owner.team": "sales", "user.roles": ("analyst", "admin")}
    plain = TracerProvider().get_tracer("t").start_span("s")
    spans.put(plain, attrs)
    assert dict(plain.attributes or {}) == attrs
    # Limits set: the SDK's own path, which truncates and bounds.
    limits = SpanLimits(max_span_attribute_length=3, max_span_attributes=1)
    limited = TracerProvider(span_limits=limits).get_tracer("t").start_span("s")
    spans.put(limited, attrs)
    assert dict(limited.attributes or {}) == {"user.roles": ("ana", "adm")}
    plain.end()
    spans.put(plain, {"late": "x"})  # an ended span is left alone
    assert "late" not in (plain.attributes or {})


@pytest.mark.parametrize(
    ("decision", "verdict"),
    [
        (
            Decision(True, 7, "hit"),
            {"iamscope.decision": "allow", "iamscope.cache": "hit"},
        ),
        (
            Decision(False, 8, "miss", error=errors.SignatureInvalid("forged")),
            {
                "iamscope.decision": "deny",
                "iamscope.cache": "miss",
                "iamscope.code": "signature_invalid",
            },
        ),
    ],
)
def test_put_writes_a_verdict_beside_the_identity(
    decision: Decision, verdict: dict[str, str]
) -> None:
    # Run on both paths (the module's attribute_path fixture): they must agree.
    from opentelemetry.sdk.trace import SpanLimits

    identity = {"iamscope.owner.team": "sales", "user.roles": ("analyst",)}
    # In the order set_attributes would have written them.
    written = {**verdict, "iamscope.decision_id": decision.decision_id}
    order = ("iamscope.decision", "iamscope.decision_id", "iamscope.cache", "iamscope.code")
    expected = {**identity, **{name: written[name] for name in order if name in written}}
    span = TracerProvider().get_tracer("t").start_span("s")
    spans.put(span, identity, decision)
    assert dict(span.attributes or {}) == expected
    assert identity == {"iamscope.owner.team": "sales", "user.roles": ("analyst",)}
    # Room for the identity but not the verdict: the SDK's own bound, oldest out first.
    room = len(identity) + 1
    full = TracerProvider(span_limits=SpanLimits(max_span_attributes=room)).get_tracer("t")
    bounded = full.start_span("s")
    spans.put(bounded, identity, decision)
    assert list(bounded.attributes or {}) == list(expected)[-room:]


def test_a_cached_identitys_attributes_are_written_as_its_dict_would_be() -> None:
    # Run on both paths (the module's attribute_path fixture): they must agree.
    identity = {"iamscope.issuer": "corp", "user.roles": ("analyst",), "user.hash": "h1"}
    cached = spans.compact_attributes(identity, lambda shared: shared)
    assert isinstance(cached, spans.CachedAttributes) and cached == identity
    decision = Decision(True, 9, "hit", attributes=cached)
    tracer = TracerProvider().get_tracer("t")
    whole, split = tracer.start_span("whole"), tracer.start_span("split")
    spans.put(whole, identity, decision)
    tag(split, decision)
    assert list((split.attributes or {}).items()) == list((whole.attributes or {}).items())
    assert (split.attributes or {})["user.hash"] == "h1"


def test_the_fast_path_fields_keep_their_shape_in_the_supported_sdk_range() -> None:
    # Fails when an SDK inside FAST_PATH_SDK moves the private fields put() writes: the
    # runtime would fall back to the public path, but the range would then be a lie.
    assert spans.sdk_version_supported(), (
        f"opentelemetry-sdk {importlib.metadata.version('opentelemetry-sdk')} is outside "
        f"{spans.FAST_PATH_SDK}: test it, then move the range here and in pyproject.toml"
    )
    span = TracerProvider().get_tracer("t").start_span("s")
    assert spans.fast_path_problems(span) == []
    assert spans.use_fast_path(True)
    span.end()
    assert spans.fast_path_problems(span) == ["Span._end_time is not None on a live span"]
    assert spans.fast_path_problems(trace.NonRecordingSpan(span.get_span_context()))


def test_the_declared_sdk_range_is_the_tested_range() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (sdk,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("opentelemetry-sdk")]
    (low, high) = spans.FAST_PATH_SDK
    assert sdk == f"opentelemetry-sdk>={low[0]}.{low[1]},<{high[0]}.{high[1]}"


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("1.24.0", False),
        ("1.25.0", True),
        ("1.45.1", True),
        ("1.46.0", False),
        ("2.0.0", False),
        ("1.46.0rc1", False),
        ("unknown", False),
    ],
)
def test_only_tested_sdk_versions_take_the_fast_path(version: str, supported: bool) -> None:
    assert spans.sdk_version_supported(version) is supported


def test_the_environment_can_force_the_public_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(spans.FAST_PATH_ENV, "off")
    assert spans.use_fast_path() is False
    span = TracerProvider().get_tracer("t").start_span("s")
    spans.put(span, {"a": "b"})  # through set_attributes
    assert dict(span.attributes or {}) == {"a": "b"}
