"""Gateway throughput: spans per second through the identity-aware OTLP gateway, over
loopback, against a plain pass-through proxy built from the same parts.

Three uvicorn processes on 127.0.0.1 (one worker each): an upstream that reads each
export and answers 200; the **gateway** (`OTLPGateway`: the iamscope middleware with the
sender's identity cached, body read and parsed, trace write scope checked per resource,
ownership stamped, re-serialised and forwarded with the project's token); and a
**pass-through** proxy that reads, parses, re-serialises and forwards with the same
code and the same httpx client, without identity or authorization. wrk posts one
512-span OTLP/protobuf export (4 resources x 128 spans, about 60 KB) over and over.

    .venv/bin/python benchmarks/bench_gateway.py [--write] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _readme import intro_of, write_section
from bench_loopback import requests_per_second, start
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

BATCH = 512

APPS = """
import os
import httpx
from iamscope import IAMScope, IssuerConfig
from iamscope.gateway.app import OTLPGateway
from iamscope.gateway import otlp
from iamscope.gateway.otlp import PROTOBUF
from iamscope.gateway.settings import GatewaySettings
from iamscope.policy import PolicyStore
from iamscope.telemetry.settings import Project

async def upstream(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await otlp.respond(send, 200, PROTOBUF, b"")

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "")
SETTINGS = GatewaySettings(endpoint=UPSTREAM)
client = httpx.AsyncClient()

async def passthrough(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await otlp.read_body(scope, receive, SETTINGS.max_body_bytes,
                                timeout=SETTINGS.body_timeout, min_rate=SETTINGS.min_body_rate)
    request = otlp.parse(body, PROTOBUF)
    await client.post(UPSTREAM, content=request.SerializeToString(),
                      headers={"content-type": PROTOBUF, "lightstep-access-token": "t"})
    await otlp.respond(send, 200, PROTOBUF, b"")

def _gateway():
    issuer = IssuerConfig(name="ci", issuer=os.environ["BENCH_ISSUER"],
                          audience=("api://local",), jwks_uri=os.environ["BENCH_JWKS"])
    policy = {"version": "bench",
              "roles": {"w": {"traces": [{"project": "checkout", "actions": ["write"]}]}},
              "bindings": [{"groups": ["ci"], "roles": ["w"], "owner": "checkout"}]}
    iam = IAMScope([issuer], PolicyStore(policy), hash_key=b"k" * 32, audit_hits="summary")
    settings = GatewaySettings(endpoint=UPSTREAM, token_header="lightstep-access-token",
                               default_project=Project(token_env="BENCH_TOKEN"))
    return OTLPGateway(iam, settings)

gateway = _gateway() if os.environ.get("BENCH_ISSUER") else None
"""

LUA = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/x-protobuf"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN_VALUE")
"""


def export_body() -> bytes:
    resources = []
    for r in range(4):
        attrs = {"service.name": f"svc-{r}", "deployment.environment.name": "staging"}
        spans = [
            Span(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name=f"op-{i}",
                start_time_unix_nano=1,
                end_time_unix_nano=2,
                attributes=[KeyValue(key="http.route", value=AnyValue(string_value="/x"))],
            )
            for i in range(BATCH // 4)
        ]
        resources.append(
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()
                    ]
                ),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        )
    return ExportTraceServiceRequest(resource_spans=resources).SerializeToString()


def check_forwards_everything(port: int, body: bytes, token: str) -> None:
    """The figures must measure forwarding, not a gateway that rejects the batch."""
    import httpx
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/traces",
        content=body,
        headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {token}"},
    )
    answer = ExportTraceServiceResponse.FromString(response.content)
    if response.status_code != 200 or answer.partial_success.rejected_spans:
        raise SystemExit(f"the gateway did not forward the batch: {response.status_code}")


def wrk_post(port: int, seconds: int, script: str, env: dict[str, str]) -> float:
    command = [
        "wrk",
        "-t1",
        "-c8",
        f"-d{seconds}s",
        "-s",
        script,
        f"http://127.0.0.1:{port}/v1/traces",
    ]
    return requests_per_second(command, env) * BATCH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gateway spans/s vs a pass-through proxy")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    from iamscope.testing import LocalIssuer

    with LocalIssuer() as issuer, tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_gateway_apps.py").write_text(APPS)
        body = Path(tmp, "body.bin")
        body.write_bytes(export_body())
        script = Path(tmp, "post.lua")
        script.write_text(LUA)
        token = issuer.mint(groups=["ci"], exp=int(time.time()) + 3600)
        env = {
            "PYTHONPATH": os.pathsep.join([tmp, str(Path(__file__).resolve().parents[1])]),
            "BENCH_TOKEN": "project-token",
        }
        upstream, up_port = start(tmp, env, "bench_gateway_apps:upstream")
        env["BENCH_UPSTREAM"] = f"http://127.0.0.1:{up_port}/v1/traces"
        proxy, proxy_port = start(tmp, env, "bench_gateway_apps:passthrough")
        gw_env = {**env, "BENCH_ISSUER": issuer.url, "BENCH_JWKS": issuer.jwks_uri}
        gateway, gw_port = start(tmp, gw_env, "bench_gateway_apps:gateway")
        load = {"BENCH_BODY": str(body), "BENCH_TOKEN_VALUE": token}
        servers = {"pass-through proxy": proxy_port, "iamscope gateway": gw_port}
        try:
            check_forwards_everything(gw_port, body.read_bytes(), token)
            for port in servers.values():
                wrk_post(port, 1, str(script), load)  # warm: the first export caches the identity
            results: dict[str, list[float]] = {name: [] for name in servers}
            for r in range(args.rounds):
                for name in list(servers) if r % 2 == 0 else reversed(servers):
                    results[name].append(wrk_post(servers[name], args.seconds, str(script), load))
        finally:
            for process in (gateway, proxy, upstream):
                process.terminate()
                process.wait(timeout=10)
    base = statistics.median(results["pass-through proxy"])
    rows = ["| contender | spans/s (median) | min-max | of pass-through |", "|---|---:|---:|---:|"]
    rows += [
        f"| {name} | {statistics.median(v):,.0f} | {min(v):,.0f}-{max(v):,.0f} | "
        f"{statistics.median(v) / base:.2f} |"
        for name, v in results.items()
    ]
    rows += [
        "",
        f"Batches of {BATCH} spans, wrk -t1 -c8, {args.seconds} s x {args.rounds} rounds, "
        f"uvicorn 1 worker each; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    block = "\n".join(rows)
    print(block)
    if args.write:
        write_section("gateway", "Gateway (`bench_gateway.py`)", intro_of(__doc__), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
