"""The collector fixture itself: what an OTLP exporter sends reaches rotel and is read
back whole (name, kind, parent, typed attributes, resource), over HTTP and gRPC."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests.telemetry._rotel import Rotel, parse, rotel, value

__all__ = ["rotel"]  # the fixture, imported for pytest


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_spans_reach_rotel_and_are_read_back(protocol: str, rotel: Rotel) -> None:
    exporter = (
        HTTPExporter(endpoint=rotel.http_endpoint)
        if protocol == "http"
        else GRPCExporter(endpoint=rotel.grpc_endpoint, insecure=True)
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as server:
        server.set_attributes({"user.roles": ("a", "b"), "n": 3, "ok": True, "f": 1.5})
        tracer.start_span("child").end()
    provider.shutdown()
    spans = {s.name: s for s in rotel.wait_for(lambda found: len(found) >= 2)}
    assert set(spans) == {"GET /x", "child"}
    top, child = spans["GET /x"], spans["child"]
    assert top.kind == "SPAN_KIND_SERVER" and child.kind == "SPAN_KIND_INTERNAL"
    assert child.parent_id == top.span_id and child.trace_id == top.trace_id
    assert top.attributes == {"user.roles": ("a", "b"), "n": 3, "ok": True, "f": 1.5}
    assert top.resource["service.name"] == "svc"


def test_the_parser_reads_every_value_kind() -> None:
    assert value("Str(a, b)") == "a, b"
    assert value("Slice(Str(x), Str(y, z))") == ("x", "y, z")
    assert value("Int(-4)") == -4 and value("Bool(false)") is False
    assert parse("") == []


def test_rotel_listens_on_loopback_only_and_stops_by_its_pid(tmp_path: Path) -> None:
    with Rotel(tmp_path) as collector:
        process = collector._process
        assert process is not None and process.poll() is None
        assert collector.http_endpoint.startswith("http://127.0.0.1:")
    assert process.poll() is not None  # exited: stopped by its process id
    with socket.socket() as probe:  # nothing listens on its port any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        probe.bind(("127.0.0.1", collector.http_port))
        probe.listen()
