"""End-user identity through the gateway, end to end: a service running iamscope
in-process (OpenTelemetry's ASGI middleware outside it) tags its spans with its end
users' identity and exports them through the gateway (uvicorn, the service's own
workload token) into a real collector (rotel), which is read back.

Tokens for end users and workloads come from one real local issuer; the service and the
gateway each have their own IAMScope and policy, as they would in two processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import IAMScope, require
from iamscope.errors import ConfigError
from iamscope.gateway.app import OTLPGateway
from iamscope.gateway.otlp import restamp
from iamscope.gateway.settings import GatewaySettings
from iamscope.policy import PolicyStore
from iamscope.telemetry import OwnershipSpanProcessor
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from iamscope.web.asgi import IAMScopeMiddleware
from tests.gateway._serve import serve
from tests.gateway.test_app import ENV, export, partial, post, resource, settings
from tests.telemetry._receiver import OTLPHTTPReceiver
from tests.telemetry._rotel import ReceivedSpan, Rotel

HASH_KEY = b"shared-hash-key-" * 2  # the service's and the gateway's: user.hash agrees

GATEWAY_POLICY: dict[str, Any] = {
    "version": "gw-attest",
    "roles": {
        "checkout-service": {
            "traces": [
                {"project": "checkout", "environments": ["production"], "actions": ["write"]},
                # Its end users only for the service that verifies them.
                {
                    "project": "checkout",
                    "environments": ["production"],
                    "services": ["checkout-api"],
                    "actions": ["attest"],
                },
            ]
        },
        "reporting-service": {
            "traces": [
                {"project": "reporting", "environments": ["production"], "actions": ["write"]}
            ]
        },
    },
    "bindings": [
        {"groups": ["svc-checkout"], "roles": ["checkout-service"], "owner": "checkout"},
        {"groups": ["svc-reporting"], "roles": ["reporting-service"], "owner": "reporting"},
    ],
}
SERVICE_POLICY: dict[str, Any] = {
    "version": "svc-1",
    "roles": {"analyst": {"permissions": ["sales:read"]}},
    "bindings": [{"groups": ["sales-east"], "roles": ["analyst"], "owner": "sales"}],
}


@pytest.fixture
def gateway_port(local_issuer: LocalIssuer, rotel: Rotel) -> Iterator[int]:
    iam = IAMScope(
        [local_issuer.issuer_config("corp")], PolicyStore(GATEWAY_POLICY), hash_key=HASH_KEY
    )
    settings = GatewaySettings.from_mapping(
        {
            "endpoint": rotel.http_endpoint,
            "token_header": "x-project-token",
            "default_project": {"token_env": "TOK"},
        }
    )
    with serve(OTLPGateway(iam, settings, environ={"TOK": "t"})) as port:
        yield port
    iam.close()


def run_service(
    local_issuer: LocalIssuer, gateway_port: int, service: str, workload_groups: list[str]
) -> IAMScope:
    """A service exporting through the gateway with its workload token; three requests:
    an end user allowed, one refused by the handler's requirement, one without a token."""
    iam = IAMScope(
        [local_issuer.issuer_config("corp")], PolicyStore(SERVICE_POLICY), hash_key=HASH_KEY
    )
    workload = local_issuer.mint(
        sub=f"system:serviceaccount:shop:{service}", groups=workload_groups
    )
    exporter = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{gateway_port}/v1/traces",
        headers={"authorization": f"Bearer {workload}"},
    )
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "deployment.environment.name": "production"}
        )
    )
    provider.add_span_processor(OwnershipSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @require(permissions=["sales:read"])
    async def sales(request: Request) -> JSONResponse:
        return JSONResponse({"rows": []})

    app = Starlette(routes=[Route("/sales", sales)])
    traced = OpenTelemetryMiddleware(IAMScopeMiddleware(app, iam), tracer_provider=provider)

    async def requests() -> list[int]:
        transport = httpx.ASGITransport(app=traced)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            codes = []
            for token in (
                local_issuer.mint(sub="alice", groups=["sales-east"]),
                local_issuer.mint(sub="bob", groups=["marketing"]),
                None,
            ):
                headers = {"authorization": f"Bearer {token}"} if token else {}
                codes.append((await client.get("/sales", headers=headers)).status_code)
            return codes

    assert asyncio.run(requests()) == [200, 403, 401]
    assert provider.force_flush()
    provider.shutdown()
    return iam


def exported(
    local_issuer: LocalIssuer, gateway_port: int, rotel: Rotel, service: str, groups: list[str]
) -> tuple[IAMScope, list[ReceivedSpan], list[ReceivedSpan]]:
    """The service's three requests through the gateway: (the service's IAMScope, every
    span the collector got from it, the three server spans among them)."""
    iam = run_service(local_issuer, gateway_port, service, groups)

    def server(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.kind == "SPAN_KIND_SERVER"]

    def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.resource.get("service.name") == service]

    spans = mine(rotel.wait_for(lambda got: len(server(mine(got))) >= 3))
    assert len(server(spans)) == 3
    return iam, spans, server(spans)


def test_an_attesting_workload_keeps_its_end_users_on_the_spans(
    local_issuer: LocalIssuer,
    gateway_port: int,
    rotel: Rotel,
) -> None:
    iam, spans, served = exported(
        local_issuer, gateway_port, rotel, "checkout-api", ["svc-checkout"]
    )
    by_user = {s.attributes.get("user.hash"): s for s in served}
    alice = by_user[iam.hasher("corp", "alice")]  # type: ignore[misc]
    assert alice.attributes["iamscope.decision"] == "allow"
    assert alice.attributes["user.roles"] == ("analyst",)
    assert alice.attributes["iamscope.issuer"] == "corp"
    bob = by_user[iam.hasher("corp", "bob")]  # type: ignore[misc]
    assert bob.attributes["iamscope.decision"] == "deny"
    assert bob.attributes["iamscope.code"] == "permission_required"
    anonymous = by_user[None]  # a refusal before any identity: only the verdict
    assert anonymous.attributes["iamscope.decision"] == "deny"
    assert anonymous.attributes["iamscope.code"] == "token_missing"
    workload = iam.hasher("corp", "system:serviceaccount:shop:checkout-api")  # type: ignore[misc]
    for span in spans:
        # Ownership is the gateway's to say: the end user's team (the service put
        # "sales" on every span of alice's request) never rides on a span, and the
        # resource is the exporting workload, verified and stamped.
        assert "iamscope.owner.team" not in span.attributes
        assert span.resource["iamscope.owner.team"] == "checkout"
        assert span.resource["user.roles"] == ("checkout-service",)
        assert span.resource["user.hash"] == workload
    iam.close()


def test_a_workload_without_attest_loses_every_span_level_identity(
    local_issuer: LocalIssuer,
    gateway_port: int,
    rotel: Rotel,
) -> None:
    iam, spans, _ = exported(local_issuer, gateway_port, rotel, "reporting-api", ["svc-reporting"])
    for span in spans:
        said = [k for k in span.attributes if k.startswith(("user.", "iamscope.", "enduser."))]
        assert said == []  # what the sender said about its users is gone
        assert span.attributes  # the rest stays (http.*, asgi.event.type)
        assert span.resource["iamscope.owner.team"] == "reporting"
    iam.close()


def identity(**values: str) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in values.items()]


END_USER = {
    "user.hash": "end-user-hash",
    "enduser.id": "alice",
    "iamscope.decision": "deny",
    "iamscope.code": "role_required",
    "iamscope.owner.team": "platform",  # a route the sender would like to choose
}


def test_attest_is_scoped_per_resource_like_write(local_issuer: LocalIssuer) -> None:
    iam = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(GATEWAY_POLICY),
        hash_key=HASH_KEY,
        audit=(sink := ListSink()),
    )
    attested = resource("production", "checkout-api", 1)  # write and attest
    written = resource("production", "checkout-worker", 1)  # write only
    outside = resource("staging", "checkout-api", 1)  # neither
    for rs in (attested, written, outside):
        rs.scope_spans[0].spans[0].attributes.extend(identity(**END_USER))
    workload = local_issuer.mint(sub="checkout", groups=["svc-checkout"])
    with OTLPHTTPReceiver() as receiver:
        app = OTLPGateway(iam, settings(receiver.endpoint), environ=ENV)
        response = post(app, export(attested, written, outside), workload)
        assert response.status_code == 200 and partial(response)[0] == 1
        assert receiver.wait_for(2)
        spans = {s.resource["service.name"]: s for s in receiver.spans()}
    kept = dict(END_USER)
    del kept["iamscope.owner.team"]
    assert spans["checkout-api"].attributes == kept
    assert spans["checkout-worker"].attributes == {}
    assert {s.resource["iamscope.owner.team"] for s in spans.values()} == {"checkout"}
    details = [e["details"] for e in sink.events if "details" in e]
    assert details == ["forwarded 2 spans, rejected 1, 1 with end users the sender attests"]
    iam.close()


def test_scopes_events_and_links_never_carry_a_sender_s_identity() -> None:
    rs = resource("production", "checkout-api", 1)
    span = rs.scope_spans[0].spans[0]
    span.attributes.extend(identity(**{"user.hash": "end-user"}))
    span.events.add(name="e", attributes=identity(**{"user.hash": "x", "exception.type": "E"}))
    span.links.add(trace_id=b"\1" * 16, span_id=b"\2" * 8, attributes=identity(**{"user.id": "y"}))
    rs.scope_spans[0].scope.attributes.extend(identity(**{"iamscope.issuer": "forged"}))
    restamp(rs, identity(**{"iamscope.owner.team": "checkout"}), deep=True, attested=True)
    assert [kv.key for kv in span.attributes] == ["user.hash"]  # attested: the span's own
    assert [kv.key for kv in span.events[0].attributes] == ["exception.type"]
    assert list(span.links[0].attributes) == []
    assert list(rs.scope_spans[0].scope.attributes) == []
    assert [kv.key for kv in rs.resource.attributes][-1] == "iamscope.owner.team"


def test_an_attest_grant_alone_writes_nothing(local_issuer: LocalIssuer) -> None:
    policy = {
        "version": "attest-only",
        "roles": {"witness": {"traces": [{"project": "default", "actions": ["attest"]}]}},
        "bindings": [{"groups": ["witness"], "roles": ["witness"]}],
    }
    iam = IAMScope([local_issuer.issuer_config("corp")], PolicyStore(policy), hash_key=HASH_KEY)
    with OTLPHTTPReceiver() as receiver:
        app = OTLPGateway(iam, settings(receiver.endpoint), environ=ENV)
        body = export(resource("production", "api", 1))
        response = post(app, body, local_issuer.mint(groups=["witness"]))
        assert response.status_code == 403 and receiver.received == []
    iam.close()


def test_attest_is_a_trace_action_the_loader_knows() -> None:
    with pytest.raises(ConfigError, match="did you mean 'attest'"):
        PolicyStore(
            {"version": "v", "roles": {"r": {"traces": [{"project": "p", "actions": ["atest"]}]}}}
        )
