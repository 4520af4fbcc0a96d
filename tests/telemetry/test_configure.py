"""configure() on a process whose OpenTelemetry is already set up (what
``opentelemetry-instrument`` and most applications do), and the post-instrument hook.

The global tracer provider can be set once per process: those tests run a script in a
subprocess and read what it prints.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iamscope.config import otel_post_instrument

ROOT = Path(__file__).resolve().parents[2]

ATTACH = """
import asyncio, json, logging, sys
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from iamscope import IAMScope, IAMScopeMiddleware, IAMScopeWSGIMiddleware
from iamscope.policy import PolicyStore
from iamscope.telemetry import configure
from iamscope.testing import LocalIssuer
from tests._policy import POLICY

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
memory = InMemorySpanExporter()
theirs = TracerProvider()  # the application's (or opentelemetry-instrument's) provider
theirs.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(theirs)
first = configure({"exporter": "console"})
second = configure({"exporter": "none"})

def framework(environ, start_response):
    # Flask's and Django's instrumentors start the server span inside the application.
    with trace.get_tracer("fw").start_as_current_span("GET /", kind=trace.SpanKind.SERVER):
        trace.get_tracer("app").start_span("query").end()
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

with LocalIssuer() as issuer:
    iam = IAMScope([issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=b"k" * 32)
    app = IAMScopeWSGIMiddleware(framework, iam)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        token = issuer.mint(groups=["sales-east"])
        ok = client.get("/", headers={"authorization": "Bearer " + token})
        refused = client.get("/", headers={"traceparent": parent})

    async def asgi_app(scope, receive, send):  # nothing starts a span around it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def asgi_refusal():
        transport = httpx.ASGITransport(app=IAMScopeMiddleware(asgi_app, iam))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/x", headers={"traceparent": parent})

    asgi_refused = asyncio.run(asgi_refusal())
    iam.close()
spans = [
    {
        "name": s.name,
        "kind": s.kind.name,
        "trace_id": format(s.context.trace_id, "032x"),
        "parent": format(s.parent.span_id, "016x") if s.parent else None,
        "attributes": dict(s.attributes),
    }
    for s in memory.get_finished_spans()
]
print("RESULT", json.dumps({
    "same": first is theirs and second is theirs,
    "statuses": [ok.status_code, refused.status_code, asgi_refused.status_code],
    "spans": spans,
}))
"""


def run(script: str, **env: str) -> tuple[dict[str, object], str]:
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    assert out.returncode == 0, out.stderr
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT ")), out.stderr


def test_configure_attaches_to_the_provider_already_set_instead_of_replacing_it() -> None:
    result, log = run(ATTACH, OTEL_TRACES_EXPORTER="")
    assert result["same"] is True  # the application's provider, kept
    assert "Overriding of current TracerProvider" not in log
    assert log.count("already configured") == 1  # the second call added nothing
    assert result["statuses"] == [200, 401, 401]
    spans = {s["name"]: s for s in result["spans"]}  # type: ignore[union-attr]
    # The server span started inside the request got the verdict, the child the identity.
    assert spans["GET /"]["attributes"]["iamscope.decision"] == "allow"
    assert spans["GET /"]["attributes"]["iamscope.owner.team"] == "sales"
    assert spans["query"]["attributes"]["iamscope.owner.team"] == "sales"
    # The refusal never reached the framework: iamscope's own server span, in the
    # caller's trace.
    (refusal,) = [s for s in result["spans"] if s["name"] == "GET"]  # type: ignore[union-attr]
    assert refusal["kind"] == "SERVER"
    assert refusal["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert refusal["parent"] == "b7ad6b7169203331"
    assert refusal["attributes"]["iamscope.decision"] == "deny"
    assert refusal["attributes"]["iamscope.code"] == "token_missing"
    assert refusal["attributes"]["http.response.status_code"] == 401
    assert "no server span carried" not in log
    # The same from the ASGI middleware.
    (asgi,) = [s for s in result["spans"] if s["name"] == "POST"]  # type: ignore[union-attr]
    assert asgi["kind"] == "SERVER" and asgi["parent"] == "b7ad6b7169203331"
    assert asgi["attributes"]["url.path"] == "/x"
    assert asgi["attributes"]["iamscope.code"] == "token_missing"


def test_attaching_beside_a_standard_exporter_warns_that_spans_leave_twice() -> None:
    _, log = run(ATTACH, OTEL_TRACES_EXPORTER="otlp")
    assert "spans leave twice" in log and "OTEL_TRACES_EXPORTER=none" in log


def test_the_hook_does_nothing_without_iamscope_config(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("IAMSCOPE_CONFIG", raising=False)
    otel_post_instrument()
    monkeypatch.setenv("IAMSCOPE_CONFIG", "/nonexistent/iamscope.yaml")
    monkeypatch.setenv("IAMSCOPE_OTEL_AUTO", "off")
    otel_post_instrument()
    assert not caplog.records


def test_a_bad_config_under_the_hook_is_logged_never_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = tmp_path / "iamscope.yaml"
    config.write_text(
        "issuers: [{name: corp, issuer: 'https://id.example', audience: api}]\n"
        "telemetry: {exporter: lightstep}\n"
    )
    monkeypatch.setenv("IAMSCOPE_CONFIG", str(config))
    monkeypatch.delenv("LS_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("IAMSCOPE_OTEL_AUTO", raising=False)
    with caplog.at_level(logging.ERROR, logger="iamscope"):
        otel_post_instrument()  # the exporter cannot be built: nothing is installed
    assert "LS_ACCESS_TOKEN is not set" in caplog.text


SAMPLED_OUT = """
import json, logging, sys
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from iamscope import IAMScope, IAMScopeWSGIMiddleware
from iamscope.policy import PolicyStore
from iamscope.telemetry import configure
from iamscope.testing import LocalIssuer
from tests._policy import POLICY

class DropTheServerSpan(Sampler):  # what a ratio sampler does to some requests
    def should_sample(self, parent_context, trace_id, name, *args, **kwargs):
        return SamplingResult(Decision.DROP if name == "GET /" else Decision.RECORD_AND_SAMPLE)
    def get_description(self):
        return "drop GET /"

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
memory = InMemorySpanExporter()
provider = TracerProvider(sampler=DropTheServerSpan())
provider.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(provider)
configure({"exporter": "none"})

with LocalIssuer() as issuer:
    iam = IAMScope([issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=b"k" * 32)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    inner = IAMScopeWSGIMiddleware(app, iam)

    def outside(environ, start_response):  # an instrumentation wrapping iamscope
        with trace.get_tracer("fw").start_as_current_span("GET /", kind=trace.SpanKind.SERVER):
            return inner(environ, start_response)

    with httpx.Client(transport=httpx.WSGITransport(app=outside), base_url="http://t") as c:
        token = issuer.mint(groups=["sales-east"])
        allowed = c.get("/", headers={"authorization": "Bearer " + token}).status_code
        statuses = [allowed] + [c.get("/").status_code for _ in range(2)]
    iam.close()
spans = [s.name for s in memory.get_finished_spans()]
print("RESULT", json.dumps({"statuses": statuses, "spans": spans}))
"""


def test_a_request_the_sampler_dropped_gets_no_span_of_iamscope_s_and_no_warning() -> None:
    result, log = run(SAMPLED_OUT)
    assert result == {"statuses": [200, 401, 401], "spans": []}
    assert "no server span carried" not in log
