"""The frameworks' own instrumentors, applied by hand before or after iamscope's
middleware: every order the instrumentors document gives each request exactly one
server span, with the verdict, allowed or refused.

Each case runs in its own process (the global tracer provider is set once per process),
with the real instrumentor, iamscope's ``configure()`` on the application's provider,
and an in-memory exporter read back as JSON.
"""

from __future__ import annotations

import pytest

from tests.telemetry.test_configure import run

PRELUDE = """
import json, sys
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

memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(provider)
configure({"exporter": "none"})
issuer = LocalIssuer().start()
iam = IAMScope([issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=b"k" * 32)
token = issuer.mint(groups=["sales-east"])
"""

BUILD = {
    ("fastapi", "instrumented first"): """
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
app = FastAPI()
app.get("/whoami")(lambda: {"ok": True})
FastAPIInstrumentor.instrument_app(app)
app.add_middleware(IAMScopeMiddleware, iamscope=iam)
transport = httpx.ASGITransport(app=app)
""",
    ("fastapi", "instrumented last"): """
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
app = FastAPI()
app.get("/whoami")(lambda: {"ok": True})
app.add_middleware(IAMScopeMiddleware, iamscope=iam)
FastAPIInstrumentor.instrument_app(app)
transport = httpx.ASGITransport(app=app)
""",
    ("flask", "instrumented first"): """
from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
app = Flask("t")
app.get("/whoami")(lambda: {"ok": True})
FlaskInstrumentor().instrument_app(app)
app.wsgi_app = IAMScopeWSGIMiddleware(app.wsgi_app, iam)
transport = httpx.WSGITransport(app=app)
""",
    ("flask", "instrumented last"): """
from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
app = Flask("t")
app.get("/whoami")(lambda: {"ok": True})
app.wsgi_app = IAMScopeWSGIMiddleware(app.wsgi_app, iam)
FlaskInstrumentor().instrument_app(app)
transport = httpx.WSGITransport(app=app)
""",
    # Django's instrumentor documents one order: instrument, then build the application.
    ("django", "instrumented first"): """
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "examples.django_app.settings"
from opentelemetry.instrumentation.django import DjangoInstrumentor
DjangoInstrumentor().instrument()
from django.core.wsgi import get_wsgi_application
transport = httpx.WSGITransport(app=IAMScopeWSGIMiddleware(get_wsgi_application(), iam))
""",
}

REQUESTS = """
is_async = isinstance(transport, httpx.ASGITransport)
async def run_async():
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return [
            (await client.get("/whoami", headers={"authorization": "Bearer " + token})).status_code,
            (await client.get("/whoami")).status_code,
        ]
if is_async:
    import asyncio
    statuses = asyncio.run(run_async())
else:
    with httpx.Client(transport=transport, base_url="http://localhost") as client:
        statuses = [
            client.get("/whoami", headers={"authorization": "Bearer " + token}).status_code,
            client.get("/whoami").status_code,
        ]
iam.close()
issuer.stop()
servers = [
    {
        "decision": s.attributes.get("iamscope.decision"),
        "owner": s.attributes.get("iamscope.owner.team"),
        "code": s.attributes.get("iamscope.code"),
    }
    for s in memory.get_finished_spans()
    if s.kind is trace.SpanKind.SERVER
]
print("RESULT", json.dumps({"statuses": statuses, "servers": servers}))
"""


@pytest.mark.parametrize(("framework", "order"), list(BUILD))
def test_one_server_span_with_the_verdict_whatever_the_order(framework: str, order: str) -> None:
    result, log = run(PRELUDE + BUILD[framework, order] + REQUESTS)
    assert result["statuses"] == [200, 401]
    assert result["servers"] == [
        {"decision": "allow", "owner": "sales", "code": None},
        {"decision": "deny", "owner": None, "code": "token_missing"},
    ]
    assert "no server span carried" not in log
