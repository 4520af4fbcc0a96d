"""Real OTLP trace receivers (HTTP/protobuf and gRPC) for the export tests.

Mocking the exporter only proves we called it. These receivers listen on a real loopback
port and decode what actually crossed the wire, so export tests can prove that spans arrive,
with the right attributes, resource and headers (an access token, for instance), and that an
outage at the collector is survived rather than raised.

    with OTLPHTTPReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.endpoint)
        ...
        assert receiver.wait_for(1)
        [span] = receiver.spans()
"""

from __future__ import annotations

import gzip
import socket
import threading
import zlib
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = [
    "OTLPGRPCReceiver",
    "OTLPHTTPReceiver",
    "Received",
    "ReceivedSpan",
    "decode_request",
    "stopped_endpoint",
]

TRACES_PATH = "/v1/traces"
_PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived, with OTLP values turned back into plain Python."""

    name: str
    trace_id: str  # 32 lower-case hex digits, as `format_trace_id` prints it
    span_id: str  # 16 lower-case hex digits
    attributes: dict[str, object]
    resource: dict[str, object]


@dataclass(frozen=True)
class Received:
    """One accepted export request: its headers (keys lower-cased) and decoded spans."""

    headers: dict[str, str]
    spans: list[ReceivedSpan]


def _any_value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        # A tuple, not a list: the SDK hands sequence attributes to the exporter as tuples,
        # so a test can compare with what it set.
        return tuple(_any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return _key_values(value.kvlist_value.values)
    if kind is None:
        return None
    # string_value, bool_value, int_value, double_value, bytes_value are already Python.
    scalar: object = getattr(value, kind)
    return scalar


def _key_values(pairs: Iterable[KeyValue]) -> dict[str, object]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


def decode_request(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Flatten an export request into its spans, each carrying its resource's attributes."""
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _key_values(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        attributes=_key_values(span.attributes),
                        # A copy per span, so a test mutating one cannot change another.
                        resource=dict(resource),
                    )
                )
    return spans


def stopped_endpoint() -> str:
    """An OTLP/HTTP traces URL on loopback where nothing listens, to simulate a collector that
    is down (connection refused, as opposed to `fail_with`, which answers with an error)."""
    # The OS hands out a free port; once closed, nothing listens there. Another process could
    # take it in between, but ephemeral ports are not reused that quickly.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{TRACES_PATH}"


class _Recorder:
    """What both receivers share: the record of accepted requests and waiting on it."""

    def __init__(self) -> None:
        self._received: list[Received] = []
        self._span_count = 0
        self._rejected = 0
        # One condition guards the record, so `wait_for` wakes as soon as spans land
        # instead of polling with sleeps.
        self._changed = threading.Condition()

    @property
    def received(self) -> list[Received]:
        """A snapshot of the accepted requests, oldest first."""
        with self._changed:
            return list(self._received)

    @property
    def rejected(self) -> int:
        """How many requests were answered with the `fail_with` error (retries included)."""
        with self._changed:
            return self._rejected

    def spans(self) -> list[ReceivedSpan]:
        """Every span of every accepted request, in arrival order."""
        with self._changed:
            return [span for received in self._received for span in received.spans]

    def wait_for(self, n_spans: int, timeout: float = 10) -> bool:
        """Block until at least `n_spans` spans have arrived; False if `timeout` passes first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._span_count >= n_spans, timeout=timeout)

    def _record(self, headers: dict[str, str], spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self._received.append(Received(headers=headers, spans=spans))
            self._span_count += len(spans)
            self._changed.notify_all()

    def _count_rejected(self) -> None:
        with self._changed:
            self._rejected += 1
            self._changed.notify_all()


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads must not keep a finished test process alive.
    daemon_threads = True

    def __init__(self, receiver: OTLPHTTPReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _OTLPHandler)


class _OTLPHandler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_POST(self) -> None:
        # Read the whole body before any answer, even an error: replying and closing with
        # unread bytes in the socket can make the client see a reset instead of our status.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        receiver = self.server.receiver
        failure = receiver._failure
        if failure is not None:
            receiver._count_rejected()
            self._reply(failure)
            return
        if self.path != TRACES_PATH:
            self._reply(404)
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != _PROTOBUF:
            # OTLP/JSON is legal but the exporters we test never send it; refuse it loudly
            # rather than record nothing and leave a test waiting for a timeout.
            self._reply(415)
            return
        try:
            request = ExportTraceServiceRequest.FromString(
                _decompress(body, self.headers.get("Content-Encoding"))
            )
        except Exception:
            self._reply(400)
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        receiver._record(headers, decode_request(request))
        self._reply(200, ExportTraceServiceResponse().SerializeToString())

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Type", _PROTOBUF)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # The default writes every request to stderr, which buries real test failures.
        pass


def _decompress(body: bytes, encoding: str | None) -> bytes:
    match (encoding or "identity").strip().lower():
        case "gzip":
            return gzip.decompress(body)
        case "deflate":
            return zlib.decompress(body)
        case "identity":
            return body
        case other:
            raise ValueError(f"unsupported Content-Encoding {other!r}")


class OTLPHTTPReceiver(_Recorder):
    """An OTLP/HTTP (protobuf) trace collector on 127.0.0.1, running from construction."""

    def __init__(self) -> None:
        super().__init__()
        self._failure: int | None = None
        self._server = _HTTPServer(self)
        self.port: int = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}{TRACES_PATH}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # `stop` waits up to one poll interval
            name=f"otlp-http-receiver-{self.port}",
            daemon=True,
        )
        self._stopped = False
        self._thread.start()

    def fail_with(self, status: int | None) -> None:
        """Answer every request with `status` (503, say) until called again with None.

        Rejected requests are not recorded in `received`; `rejected` counts them.
        """
        self._failure = status

    def stop(self) -> None:
        """Stop listening and free the port; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: OTLPGRPCReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 - the generated servicer's method name
        self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        failure = self._receiver._failure
        if failure is not None:
            self._receiver._count_rejected()
            context.abort(failure, "simulated outage")
        headers = {
            # Binary ("-bin") metadata arrives as bytes; latin-1 maps bytes one to one, so
            # nothing is lost and headers stay a plain str -> str dict.
            key.lower(): value if isinstance(value, str) else value.decode("latin-1")
            for key, value in context.invocation_metadata()
        }
        self._receiver._record(headers, decode_request(request))
        return ExportTraceServiceResponse()


class OTLPGRPCReceiver(_Recorder):
    """An OTLP/gRPC trace collector on 127.0.0.1 (plaintext), running from construction.

    `endpoint` is `127.0.0.1:PORT`, what the gRPC exporter takes with `insecure=True`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._failure: grpc.StatusCode | None = None
        self._executor = futures.ThreadPoolExecutor(max_workers=4)
        self._server = grpc.server(self._executor)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port: int = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{self.port}"
        self._server.start()
        self._stopped = False

    def fail_with(self, code: grpc.StatusCode | None) -> None:
        """Abort every call with `code` (UNAVAILABLE, say) until called again with None.

        Rejected calls are not recorded in `received`; `rejected` counts them.
        """
        self._failure = code

    def stop(self) -> None:
        """Stop serving (in-flight calls are cancelled) and free the port; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.stop(grace=None).wait()
        # grpc.server does not own the executor it was given.
        self._executor.shutdown(wait=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
