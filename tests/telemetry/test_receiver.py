"""The test receivers themselves, driven by the real OTLP exporters over loopback."""

from __future__ import annotations

import time

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GRPCSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HTTPSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from tests.telemetry._receiver import (
    OTLPGRPCReceiver,
    OTLPHTTPReceiver,
    ReceivedSpan,
    stopped_endpoint,
)

TOKEN_HEADER = {"lightstep-access-token": "t1"}
ATTRIBUTES = {"iam.subject": "alice", "iam.rows": 3, "iam.roles": ("reader", "auditor")}


def _emit_span(exporter: SpanExporter) -> ReadableSpan:
    """One span with `ATTRIBUTES` on a `service.name`d resource, exported synchronously."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "iamscope-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.telemetry")
    with tracer.start_as_current_span("resolve", attributes=ATTRIBUTES):
        pass
    provider.shutdown()
    [span] = memory.get_finished_spans()
    return span


def _assert_arrived(received: ReceivedSpan, sent: ReadableSpan) -> None:
    assert sent.context is not None
    assert received.name == "resolve"
    assert received.trace_id == format_trace_id(sent.context.trace_id)
    assert received.span_id == format_span_id(sent.context.span_id)
    assert received.attributes == ATTRIBUTES
    assert received.resource["service.name"] == "iamscope-test"


def test_http_exporter_spans_arrive_with_headers_attributes_and_resource() -> None:
    with OTLPHTTPReceiver() as receiver:
        sent = _emit_span(HTTPSpanExporter(endpoint=receiver.endpoint, headers=TOKEN_HEADER))

        assert receiver.wait_for(1, timeout=5)
        [request] = receiver.received
        assert request.headers["lightstep-access-token"] == "t1"
        assert request.headers["content-type"] == "application/x-protobuf"
        [span] = receiver.spans()
        _assert_arrived(span, sent)


def test_http_exporter_gzip_body_is_decoded() -> None:
    with OTLPHTTPReceiver() as receiver:
        exporter = HTTPSpanExporter(
            endpoint=receiver.endpoint, headers=TOKEN_HEADER, compression=Compression.Gzip
        )
        sent = _emit_span(exporter)

        assert receiver.wait_for(1, timeout=5)
        assert receiver.received[0].headers["content-encoding"] == "gzip"
        _assert_arrived(receiver.spans()[0], sent)


def test_grpc_exporter_spans_arrive_with_metadata_attributes_and_resource() -> None:
    with OTLPGRPCReceiver() as receiver:
        exporter = GRPCSpanExporter(endpoint=receiver.endpoint, insecure=True, headers=TOKEN_HEADER)
        sent = _emit_span(exporter)

        assert receiver.wait_for(1, timeout=5)
        [request] = receiver.received
        assert request.headers["lightstep-access-token"] == "t1"
        [span] = receiver.spans()
        _assert_arrived(span, sent)


def test_http_outage_makes_export_fail_without_raising_then_recovers() -> None:
    span = _emit_span(InMemorySpanExporter())
    with OTLPHTTPReceiver() as receiver:
        # 503 is retried with ~1s, ~2s, ... backoff, but never past the exporter's timeout:
        # with timeout=2 that is one retry after ~1s, then FAILURE.
        exporter = HTTPSpanExporter(endpoint=receiver.endpoint, headers=TOKEN_HEADER, timeout=2)
        receiver.fail_with(503)

        started = time.monotonic()
        assert exporter.export([span]) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 4
        assert receiver.rejected >= 1
        assert receiver.received == []

        receiver.fail_with(None)
        assert exporter.export([span]) is SpanExportResult.SUCCESS
        assert [received.name for received in receiver.spans()] == ["resolve"]


def test_grpc_outage_makes_export_fail_without_raising() -> None:
    span = _emit_span(InMemorySpanExporter())
    with OTLPGRPCReceiver() as receiver:
        exporter = GRPCSpanExporter(
            endpoint=receiver.endpoint, insecure=True, headers=TOKEN_HEADER, timeout=2
        )
        receiver.fail_with(grpc.StatusCode.UNAVAILABLE)

        started = time.monotonic()
        assert exporter.export([span]) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 4
        assert receiver.rejected >= 1
        assert receiver.received == []
        exporter.shutdown()


def test_stopped_endpoint_refuses_and_export_fails_without_raising() -> None:
    span = _emit_span(InMemorySpanExporter())
    exporter = HTTPSpanExporter(endpoint=stopped_endpoint(), timeout=2)

    started = time.monotonic()
    assert exporter.export([span]) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 4


def test_wait_for_gives_up_after_timeout() -> None:
    with OTLPHTTPReceiver() as receiver:
        started = time.monotonic()
        assert not receiver.wait_for(1, timeout=0.2)
        assert 0.15 < time.monotonic() - started < 2
