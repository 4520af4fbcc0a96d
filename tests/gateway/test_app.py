"""The OTLP gateway end to end: workload tokens from a real local issuer, the gateway
in-process, and a real OTLP/HTTP receiver on 127.0.0.1 standing in for the upstream."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from iamscope import IAMScope
from iamscope.errors import ConfigError
from iamscope.gateway.app import OTLPGateway
from iamscope.gateway.settings import GatewaySettings
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from tests.telemetry._receiver import OTLPHTTPReceiver

POLICY: dict[str, Any] = {
    "version": "gw",
    "roles": {
        "deployer": {
            "traces": [{"project": "checkout", "environments": ["staging"], "actions": ["write"]}]
        },
        "admin": {"traces": [{"project": "*", "actions": ["read", "write"]}]},
        "shared": {"traces": [{"project": "default", "actions": ["write"]}]},
    },
    "bindings": [
        {"groups": ["ci-checkout"], "roles": ["deployer"], "owner": "checkout"},
        {"groups": ["admins"], "roles": ["admin"], "owner": "platform"},
        {"groups": ["misc"], "roles": ["shared"]},
    ],
}
ENV = {"TOK_CHECKOUT": "tok-checkout", "TOK_PLATFORM": "tok-platform", "TOK_DEFAULT": "tok-default"}
PROTOBUF = "application/x-protobuf"


def settings(endpoint: str, **kw: Any) -> GatewaySettings:
    return GatewaySettings.from_mapping(
        {
            "upstream": "otlp",
            "endpoint": endpoint,
            "token_header": "lightstep-access-token",
            "projects": {
                "checkout": {"token_env": "TOK_CHECKOUT"},
                "platform": {"token_env": "TOK_PLATFORM"},
            },
            "default_project": {"token_env": "TOK_DEFAULT"},
            "retries": 2,
            "timeout": 5,
            **kw,
        }
    )


async def no_wait(seconds: float) -> None:
    pass


@pytest.fixture
def receiver() -> Iterator[OTLPHTTPReceiver]:
    with OTLPHTTPReceiver() as r:
        yield r


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def iam(local_issuer: LocalIssuer, sink: ListSink) -> Iterator[IAMScope]:
    scope = IAMScope(
        [local_issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=b"k" * 32, audit=sink
    )
    yield scope
    scope.close()


def gateway(iam: IAMScope, receiver: OTLPHTTPReceiver, **kw: Any) -> OTLPGateway:
    return OTLPGateway(iam, settings(receiver.endpoint, **kw), environ=ENV, sleep=no_wait)


def resource(env: str | None, service: str, spans: int, **forged: str) -> ResourceSpans:
    attrs = {"service.name": service, **forged}
    if env is not None:
        attrs["deployment.environment.name"] = env
    return ResourceSpans(
        resource=Resource(
            attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()]
        ),
        scope_spans=[
            ScopeSpans(
                spans=[
                    Span(
                        trace_id=bytes([1] * 16),
                        span_id=(i + 1).to_bytes(8, "big"),
                        name=f"{service}-{i}",
                        start_time_unix_nano=1,
                        end_time_unix_nano=2,
                    )
                    for i in range(spans)
                ]
            )
        ],
    )


def export(*resources: ResourceSpans) -> bytes:
    return ExportTraceServiceRequest(resource_spans=list(resources)).SerializeToString()


def post(
    app: Any,
    body: bytes,
    token: str | None,
    content_type: str = PROTOBUF,
    method: str = "POST",
    path: str = "/v1/traces",
    **headers: str,
) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            sent = {"content-type": content_type, **headers}
            if token:
                sent["authorization"] = f"Bearer {token}"
            return await client.request(method, path, content=body, headers=sent)

    return asyncio.run(run())


def partial(response: httpx.Response) -> tuple[int, str]:
    decoded = ExportTraceServiceResponse.FromString(response.content)
    return decoded.partial_success.rejected_spans, decoded.partial_success.error_message


def status_of(response: httpx.Response) -> tuple[Status, ErrorInfo | None]:
    """The google.rpc.Status an error answer carries (OTLP/HTTP: protobuf, or JSON for
    a JSON request) and its ErrorInfo, decoded the way an exporter would."""
    status = Status()
    if response.headers["content-type"] == "application/json":
        json_format.Parse(response.content, status)
    else:
        assert response.headers["content-type"] == PROTOBUF
        status.ParseFromString(response.content)
    for detail in status.details:
        info = ErrorInfo()
        if detail.Unpack(info):
            return status, info
    return status, None


def reason_of(response: httpx.Response) -> str:
    info = status_of(response)[1]
    assert info is not None and info.domain == "iamscope"
    return info.reason


def test_in_scope_spans_reach_the_project_stamped_and_with_its_token(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver, sink: ListSink
) -> None:
    app = gateway(iam, receiver)
    bot = local_issuer.mint(sub="repo:acme/checkout", groups=["ci-checkout"])
    forged = {"iamscope.owner.team": "platform", "user.hash": "forged", "iamscope.issuer": "x"}
    response = post(app, export(resource("staging", "checkout-api", 3, **forged)), bot)
    assert response.status_code == 200 and partial(response) == (0, "")
    assert receiver.wait_for(3)
    (received,) = receiver.received
    assert received.headers["lightstep-access-token"] == "tok-checkout"
    assert "authorization" not in received.headers  # the sender's token stays here
    stamped = received.spans[0].resource
    assert stamped["iamscope.owner.team"] == "checkout"  # the sender's claim was replaced
    assert stamped["user.hash"] == iam.hasher("corp", "repo:acme/checkout")  # type: ignore[misc]
    assert stamped["iamscope.issuer"] == "corp" and stamped["iamscope.principal.kind"] == "user"
    assert stamped["service.name"] == "checkout-api"
    assert [s.name for s in received.spans] == [
        "checkout-api-0",
        "checkout-api-1",
        "checkout-api-2",
    ]
    details = [e["details"] for e in sink.events if "details" in e]
    assert details == ["forwarded 3 spans, rejected 0"]
    # One audit event for the request (contract 7): the export's, not an allow beside it.
    assert len(sink.events) == 1 and sink.events[0]["decision"] == "allow"


def test_out_of_scope_resources_are_dropped_and_reported(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver)
    bot = local_issuer.mint(groups=["ci-checkout"])
    body = export(
        resource("staging", "checkout-api", 2),
        resource("production", "checkout-api", 4),  # a staging bot can never write here
        resource(None, "checkout-api", 1),  # says nothing of its environment
    )
    response = post(app, body, bot)
    assert response.status_code == 200
    rejected, message = partial(response)
    assert rejected == 5 and "outside the sender's trace write scope" in message
    assert receiver.wait_for(2)
    assert {s.resource["deployment.environment.name"] for s in receiver.spans()} == {"staging"}


def test_all_out_of_scope_forwards_nothing(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    response = post(
        gateway(iam, receiver),
        export(resource("production", "api", 2)),
        local_issuer.mint(groups=["ci-checkout"]),
    )
    assert response.status_code == 200 and partial(response)[0] == 2
    assert receiver.received == []


def test_refuse_mode_answers_403_and_forwards_nothing(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver, sink: ListSink
) -> None:
    app = gateway(iam, receiver, out_of_scope="refuse")
    body = export(resource("staging", "api", 1), resource("production", "api", 1))
    response = post(app, body, local_issuer.mint(groups=["ci-checkout"]))
    assert response.status_code == 403
    status, info = status_of(response)
    assert status.code == 7 and info is not None  # PERMISSION_DENIED
    assert info.reason == "TRACE_SCOPE_REQUIRED" and info.metadata["requirement"] == "trace:write"
    assert receiver.received == []
    assert any(e["decision"] == "deny" and e["code"] == "trace_scope_required" for e in sink.events)


def test_each_owner_goes_to_its_own_project(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver)
    post(app, export(resource("production", "billing", 1)), local_issuer.mint(groups=["admins"]))
    post(app, export(resource("dev", "misc", 1)), local_issuer.mint(groups=["misc"]))
    assert receiver.wait_for(2)
    tokens = {r.headers["lightstep-access-token"]: r.spans[0].resource for r in receiver.received}
    assert tokens["tok-platform"]["iamscope.owner.team"] == "platform"
    assert tokens["tok-default"]["iamscope.owner.team"] == "default"  # no owner: default


def test_senders_must_authenticate(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver)
    body = export(resource("staging", "api", 1))
    missing = post(app, body, None)
    assert missing.status_code == 401 and reason_of(missing) == "TOKEN_MISSING"
    assert missing.headers["www-authenticate"].startswith("Bearer")  # RFC 6750 still
    as_json = post(app, b"{}", None, content_type="application/json")
    assert as_json.headers["content-type"] == "application/json"  # the request's encoding
    assert as_json.json()["code"] == 16 and reason_of(as_json) == "TOKEN_MISSING"
    expired = post(app, body, local_issuer.mint(groups=["admins"], iat=1, exp=2))
    assert expired.status_code == 401 and reason_of(expired) == "TOKEN_EXPIRED"
    status, info = status_of(expired)
    assert status.code == 16 and info is not None and info.metadata["decision_id"]
    assert receiver.received == []


def test_otlp_json_and_gzip_are_accepted(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver)
    admin = local_issuer.mint(groups=["admins"])
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "json-span",
                                "kind": 2,
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    response = post(app, json.dumps(document).encode(), admin, content_type="application/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.content) == {}  # full success, OTLP/JSON
    zipped = gzip.compress(export(resource("staging", "api", 1)))
    assert post(app, zipped, admin, **{"content-encoding": "gzip"}).status_code == 200
    assert receiver.wait_for(2)
    (json_span,) = [s for s in receiver.spans() if s.name == "json-span"]
    assert json_span.trace_id == "0af7651916cd43dd8448eb211c80319c"  # hex ids kept
    assert json_span.span_id == "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff\xff\xff not protobuf", {}, 400),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            {"ct": "json"},
            400,
        ),
        (b"[1, 2]", {"ct": "json"}, 400),
        (b'{"a":' * 12_000, {"ct": "json"}, 400),
        (b"not gzip at all", {"content-encoding": "gzip"}, 400),
        (b"x" * (64 * 1024 + 1), {}, 413),
        (gzip.compress(b"\0" * (10 * 1024 * 1024)), {"content-encoding": "gzip"}, 413),
        (b"", {"content-encoding": "br"}, 415),
        (b'{"resourceSpans": ["x"]}', {"ct": "json"}, 400),
        (b'{"resourceSpans": "abc"}', {"ct": "json"}, 400),
        (gzip.compress(b"") + gzip.compress(b"\n\x00"), {"content-encoding": "gzip"}, 400),
        (gzip.compress(b"") + b"trailing", {"content-encoding": "gzip"}, 400),
        (b"\x0a\x00" * 10_001, {}, 400),
        (b"{}", {"ct": "text/plain"}, 415),
    ],
    ids=[
        "bad-protobuf",
        "bad-hex-id",
        "json-not-object",
        "json-too-deep",
        "bad-gzip",
        "too-large",
        "gzip-bomb",
        "unknown-encoding",
        "json-list-item",
        "json-string-list",
        "two-gzip-members",
        "gzip-trailing-bytes",
        "too-many-resources",
        "wrong-type",
    ],
)
def test_bad_bodies_get_a_precise_answer_never_a_500(
    body: bytes,
    headers: dict[str, str],
    status: int,
    iam: IAMScope,
    local_issuer: LocalIssuer,
    receiver: OTLPHTTPReceiver,
) -> None:
    app = gateway(iam, receiver, max_body_bytes=64 * 1024)
    kind = {"json": "application/json", "text/plain": "text/plain"}.get(
        headers.pop("ct", ""), PROTOBUF
    )
    response = post(app, body, local_issuer.mint(groups=["admins"]), content_type=kind, **headers)
    assert response.status_code == status
    assert receiver.received == []
    # OTLP/HTTP: the body is a google.rpc.Status in the request's encoding (JSON when
    # the request's own is neither), with a stable reason.
    answered = "application/json" if kind != PROTOBUF else PROTOBUF
    assert response.headers["content-type"] == answered
    assert reason_of(response) in {
        "BODY_INVALID",
        "BODY_TOO_LARGE",
        "ENCODING_UNSUPPORTED",
        "CONTENT_TYPE_UNSUPPORTED",
    }


def test_wrong_method_and_path(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver)
    admin = local_issuer.mint(groups=["admins"])
    assert post(app, b"", admin, method="GET").status_code == 405
    assert post(app, b"", admin, path="/v1/metrics").status_code == 404


def test_upstream_outage_is_503_with_retry_after_and_nothing_accepted(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver, sink: ListSink
) -> None:
    app = gateway(iam, receiver)
    receiver.fail_with(503)
    response = post(app, export(resource("prod", "api", 1)), local_issuer.mint(groups=["admins"]))
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert receiver.rejected == 3  # the first try and two retries, then the sender is told
    assert any("refused 503" in e.get("details", "") for e in sink.events)
    receiver.fail_with(None)
    again = post(app, export(resource("prod", "api", 1)), local_issuer.mint(groups=["admins"]))
    assert again.status_code == 200 and receiver.wait_for(1)


def test_an_upstream_that_refuses_the_data_is_a_non_retryable_400(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    receiver.fail_with(400)
    response = post(
        gateway(iam, receiver),
        export(resource("prod", "api", 1)),
        local_issuer.mint(groups=["admins"]),
    )
    # Not retried here, and a 400 so the sender's exporter does not retry it either.
    assert response.status_code == 400 and receiver.rejected == 1


def test_missing_project_tokens_refuse_to_start(iam: IAMScope, receiver: OTLPHTTPReceiver) -> None:
    with pytest.raises(ConfigError, match="TOK_PLATFORM is not set"):
        OTLPGateway(
            iam, settings(receiver.endpoint), environ={"TOK_CHECKOUT": "x", "TOK_DEFAULT": "y"}
        )


def test_gateway_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="did you mean 'out_of_scope'"):
        GatewaySettings.from_mapping({"endpoint": "http://x", "out_of_scop": "drop"})
    with pytest.raises(ConfigError, match="needs 'endpoint'"):
        GatewaySettings.from_mapping({"upstream": "otlp"})
    with pytest.raises(ConfigError, match="'timeout'"):
        GatewaySettings.from_mapping({"endpoint": "http://x", "timeout": float("nan")})
    assert GatewaySettings.from_mapping({"upstream": "lightstep"}).upstream == "lightstep"
    for bad, message in [
        ({"max_per_sender": 65}, "must be ≤ max_inflight"),
        ({"max_inflight": 8, "max_per_sender": 9}, r"≤ max_inflight \(8\)"),
        ({"max_reading": 0}, "'max_reading' must be a whole number"),
        ({"body_timeout": 0}, "'body_timeout' must be a positive number"),
        ({"body_timeout": "10s"}, "'body_timeout' must be a number of seconds"),
        ({"min_body_rate": -1}, "'min_body_rate' must be a number of bytes"),
        ({"min_body_rate": True}, "'min_body_rate' must be a number of bytes"),
    ]:
        with pytest.raises(ConfigError, match=message):
            GatewaySettings.from_mapping({"endpoint": "http://x", **bad})
    small = GatewaySettings.from_mapping({"endpoint": "http://x", "max_inflight": 2})
    assert (small.sender_slots, small.reading_slots) == (1, 4)  # derived: a quarter, twice
    assert (GatewaySettings().sender_slots, GatewaySettings().reading_slots) == (16, 128)


#: A config file's first six lines, up to the gateway's endpoint.
GATEWAY_FILE = (
    "issuers:\n"
    "  - {name: corp, issuer: https://idp.example, audience: api://x,\n"
    "     jwks_uri: https://idp.example/keys}\n"
    "policy: {version: '1', roles: {}, bindings: []}\n"
    "gateway:\n"
    "  endpoint: http://collector.internal:4318/v1/traces\n"
)


def test_a_misspelt_limit_in_the_file_names_its_line_and_the_key(tmp_path: Any) -> None:
    from iamscope.config import load_config

    text = GATEWAY_FILE + "  body_timout: 5\n"
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 7 and str(path) in str(info.value)
    assert "did you mean 'body_timeout'" in str(info.value)


def test_a_token_variable_missing_at_start_names_the_file_and_its_line(
    iam: IAMScope, tmp_path: Any
) -> None:
    """The variable is read when the gateway starts, long after the file was loaded:
    the error still points at the ``token_env`` line (``<config>`` only for settings
    built in code)."""
    import yaml

    from iamscope.config import load_config

    text = (
        GATEWAY_FILE + "  token_header: x-token\n"
        "  projects:\n"
        "    checkout:\n"
        "      token_env: TOK_CHECKOUT\n"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    loaded = load_config(path).gateway
    assert loaded is not None
    with pytest.raises(ConfigError, match="TOK_CHECKOUT is not set") as info:
        OTLPGateway(iam, loaded, environ={})
    assert info.value.source == str(path) and info.value.line == 10, str(info.value)
    with pytest.raises(ConfigError, match="TOK_CHECKOUT is not set") as info:
        in_code = GatewaySettings.from_mapping(yaml.safe_load(text)["gateway"])
        OTLPGateway(iam, in_code, environ={})
    assert info.value.source is None and str(info.value).startswith("<config>")


def held_upstream(iam: IAMScope, **kw: Any) -> tuple[OTLPGateway, asyncio.Event, httpx.AsyncClient]:
    """A gateway whose upstream holds every export until the event is set."""
    release = asyncio.Event()

    async def slow_upstream(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    upstream = httpx.AsyncClient(transport=httpx.ASGITransport(app=slow_upstream))
    app = OTLPGateway(
        iam, settings("http://upstream/v1/traces", **kw), environ=ENV, client=upstream
    )
    return app, release, upstream


def test_at_capacity_the_gateway_says_retry_later(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    async def run() -> tuple[httpx.Response, httpx.Response]:
        app, release, upstream = held_upstream(iam, max_inflight=1)
        body = export(resource("prod", "api", 1))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

            def send(sub: str) -> Any:
                token = local_issuer.mint(sub=sub, groups=["admins"])
                headers = {"content-type": PROTOBUF, "authorization": f"Bearer {token}"}
                return client.post("/v1/traces", content=body, headers=headers)

            first = asyncio.create_task(send("alice"))
            while app._slots.forwarding == 0:  # the first export has taken the only slot
                await asyncio.sleep(0.01)
            second = await asyncio.wait_for(send("bob"), 10)  # not held: answered
            release.set()
            done = await first
        await upstream.aclose()
        return done, second

    first, second = asyncio.run(run())
    assert first.status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert reason_of(second) == "AT_CAPACITY" and status_of(second)[0].code == 14


def test_one_sender_holds_at_most_its_share_and_others_still_export(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    async def run() -> tuple[list[int], httpx.Response, str]:
        app, release, upstream = held_upstream(iam, max_inflight=8, max_per_sender=2)
        body = export(resource("prod", "api", 1))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

            def send(token: str) -> Any:
                headers = {"content-type": PROTOBUF, "authorization": f"Bearer {token}"}
                return client.post("/v1/traces", content=body, headers=headers)

            greedy = local_issuer.mint(sub="greedy", groups=["admins"])
            held = [asyncio.create_task(send(greedy)) for _ in range(2)]
            while app._slots.forwarding < 2:
                await asyncio.sleep(0.01)
            refused = await asyncio.wait_for(send(greedy), 10)  # a third: over its share
            other = asyncio.create_task(send(local_issuer.mint(sub="other", groups=["admins"])))
            while app._slots.forwarding < 3:  # another sender still gets a slot
                await asyncio.sleep(0.01)
            release.set()
            done = [(await t).status_code for t in (*held, other)]
        await upstream.aclose()
        return done, refused, refused.headers.get("retry-after", "")

    done, refused, retry_after = asyncio.run(run())
    assert done == [200, 200, 200]
    assert refused.status_code == 429 and retry_after == "1"  # OTLP: retryable
    assert reason_of(refused) == "SENDER_AT_CAPACITY"


def test_the_cli_runs_the_gateway(
    local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver, tmp_path: Any
) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import yaml

    config = {
        "issuers": [
            {
                "name": "corp",
                "issuer": local_issuer.url,
                "audience": "api://local",
                "jwks_uri": local_issuer.jwks_uri,
            }
        ],
        "policy": POLICY,
        "gateway": {
            "endpoint": receiver.endpoint,
            "token_header": "lightstep-access-token",
            "default_project": {"token_env": "TOK_DEFAULT"},
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **ENV, "IAMSCOPE_HASH_KEY": "cli-key"}
    command = [sys.executable, "-m", "iamscope.cli", "gateway", "--config", str(path)]
    process = subprocess.Popen([*command, "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        token = local_issuer.mint(groups=["admins"])
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/traces",
            content=export(resource("prod", "api", 2)),
            headers={"content-type": PROTOBUF, "authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        assert receiver.wait_for(2)
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Without a gateway block the command refuses, with exit code 2.
    del config["gateway"]
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no 'gateway' block" in done.stdout


def test_ambiguous_placement_is_never_trusted(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    app = gateway(iam, receiver)
    bot = local_issuer.mint(groups=["ci-checkout"])  # may write checkout/staging only

    def with_attrs(*pairs: tuple[str, AnyValue]) -> ResourceSpans:
        rs = resource(None, "api", 1)
        rs.resource.attributes.extend(KeyValue(key=k, value=v) for k, v in pairs)
        return rs

    s = AnyValue(string_value="staging")
    p = AnyValue(string_value="production")
    listed = AnyValue(array_value=ArrayValue(values=[p]))
    body = export(
        with_attrs(("deployment.environment.name", p), ("deployment.environment.name", s)),
        with_attrs(("deployment.environment.name", listed), ("deployment.environment", s)),
        with_attrs(("deployment.environment.name", s), ("deployment.environment", p)),
    )
    response = post(app, body, bot)
    assert response.status_code == 200 and partial(response)[0] == 3
    assert receiver.received == []


def test_senders_without_any_write_scope_are_refused_before_the_body_is_read(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    nobody = local_issuer.mint(groups=["marketing"])
    response = post(gateway(iam, receiver), b"never parsed", nobody)
    assert response.status_code == 403 and reason_of(response) == "TRACE_SCOPE_REQUIRED"


def test_every_forged_identity_attribute_is_removed(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    rs = resource("staging", "api", 1, **{"user.roles": "admin", "enduser.id": "victim"})
    span = rs.scope_spans[0].spans[0]
    span.attributes.extend(
        [
            KeyValue(key="iamscope.owner.team", value=AnyValue(string_value="platform")),
            KeyValue(key="user.hash", value=AnyValue(string_value="deadbeef")),
            KeyValue(key="http.route", value=AnyValue(string_value="/pay")),
        ]
    )
    rs.scope_spans[0].scope.attributes.append(
        KeyValue(key="iamscope.issuer", value=AnyValue(string_value="forged"))
    )
    post(gateway(iam, receiver), export(rs), local_issuer.mint(groups=["ci-checkout"]))
    assert receiver.wait_for(1)
    (got,) = receiver.spans()
    assert got.attributes == {"http.route": "/pay"}  # only what is not identity
    assert "enduser.id" not in got.resource
    assert got.resource["user.roles"] == ("deployer",)
    assert got.resource["iamscope.policy.version"] == "gw"
    assert got.resource["iamscope.owner.team"] == "checkout"


def test_the_gateway_can_be_mounted_under_a_prefix(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/otlp", app=gateway(iam, receiver))])
    admin = local_issuer.mint(groups=["admins"])
    response = post(outer, export(resource("prod", "api", 1)), admin, path="/otlp/v1/traces")
    assert response.status_code == 200 and receiver.wait_for(1)


def test_a_named_project_needs_its_own_token(iam: IAMScope, receiver: OTLPHTTPReceiver) -> None:
    cfg = settings(receiver.endpoint, projects={"checkout": {"endpoint": "http://x.example"}})
    with pytest.raises(ConfigError, match=r"projects\.checkout: 'token_env' is required"):
        OTLPGateway(iam, cfg, environ=ENV)


def test_escaped_json_keys_cannot_smuggle_identity(
    iam: IAMScope, local_issuer: LocalIssuer, receiver: OTLPHTTPReceiver
) -> None:
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "s",
        "attributes": [{"key": "iamscope.owner.team", "value": {"stringValue": "platform"}}],
    }
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "api"}},
                        {"key": "deployment.environment.name", "value": {"stringValue": "staging"}},
                    ]
                },
                "scopeSpans": [{"spans": [span]}],
            }
        ]
    }
    # JSON may spell the key with an escape: the bytes never say "iamscope.".
    body = json.dumps(document).replace('"iamscope.', '"\\u0069amscope.').encode()
    assert b"iamscope." not in body  # the key is escaped on the wire
    bot = local_issuer.mint(groups=["ci-checkout"])
    response = post(gateway(iam, receiver), body, bot, content_type="application/json")
    assert response.status_code == 200 and receiver.wait_for(1)
    (got,) = receiver.spans()
    assert got.attributes == {} and got.resource["iamscope.owner.team"] == "checkout"
