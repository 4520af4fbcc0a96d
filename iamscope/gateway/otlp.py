"""The OTLP/HTTP wire for the gateway: trace exports in, answers out, resources stamped.

Reading a request (size limits before and after gzip, a deadline and a minimum rate for
the body, protobuf or JSON with OTLP's hex ids), answering it (an
``ExportTraceServiceResponse``, or a ``google.rpc.Status`` body with the HTTP status, in
the request's encoding, as OTLP/HTTP asks of every error), and the attributes the
gateway reads (where a resource says it runs) and writes (who owns it, what identity
sent it; which identity attributes a sender's spans may keep). No policy and no
forwarding here: :mod:`iamscope.gateway.app` decides and routes.
"""

from __future__ import annotations

import asyncio
import base64
import http
import json
import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from iamscope.engine.decision import Decision
from iamscope.telemetry.spans import ISSUER, KIND, OWNER, POLICY_VERSION, USER_HASH, USER_ROLES
from iamscope.web.asgi import Receive, Scope, Send

__all__ = [
    "JSON",
    "PROTOBUF",
    "Refused",
    "content_type",
    "encode",
    "may_hold_forged",
    "parse",
    "placement",
    "problem_as_status",
    "read_body",
    "respond",
    "respond_status",
    "restamp",
    "stamp_values",
    "status_body",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: ``google.rpc.ErrorInfo.domain`` of the gateway's error details.
DOMAIN = "iamscope"
#: A body has this long before ``min_rate`` starts to count: a sender's first bytes may
#: trail its headers by a round trip or a scheduling hiccup.
RATE_GRACE = 1.0
#: The resource attributes that say where a resource runs.
_ENV_KEYS = ("deployment.environment.name", "deployment.environment")
_PLACEMENT_KEYS = frozenset((*_ENV_KEYS, "service.name"))
_FORGED_MARKERS = (b"iamscope.", b"user.", b"enduser.id")  # see _forged


class Refused(Exception):
    """An export answered without forwarding: (status, message[, retry after]), and the
    stable ``reason`` its ``google.rpc.ErrorInfo`` carries (``body_too_slow``, …)."""

    def __init__(
        self, status: int, message: str, retry_after: float | None = None, *, reason: str
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after
        self.reason = reason


# --- reading a request ---------------------------------------------------------------------


def content_type(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return kind if kind in (PROTOBUF, JSON) else None
    return None


async def read_body(
    scope: Scope, receive: Receive, limit: int, *, timeout: float, min_rate: float
) -> bytes:
    """The whole body within ``timeout`` seconds, arriving at ``min_rate`` bytes a second
    on average once its first :data:`RATE_GRACE` second is over (0: no rate), else
    ``Refused(408)``: a sender that stalls mid-body must not hold the gateway for longer
    than a live export takes (Apache's mod_reqtimeout ``body=…,MinRate=…``)."""
    encoding = None
    for name, value in scope.get("headers", ()):
        if (
            name == b"content-length"
            and value.isdigit()
            and (len(value) > 18 or int(value) > limit)
        ):
            raise Refused(413, f"the body is over {limit} bytes", reason="body_too_large")
        if name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
    loop = asyncio.get_running_loop()
    start = loop.time()
    last = start + timeout
    body = bytearray()
    while True:
        # Each byte received buys 1/min_rate s more, never past the whole body's deadline.
        due = min(last, start + RATE_GRACE + len(body) / min_rate) if min_rate > 0 else last
        try:
            async with asyncio.timeout_at(due):
                message = await receive()
        except TimeoutError:
            raise Refused(
                408,
                f"the body did not arrive in time ({len(body)} bytes after "
                f"{loop.time() - start:.1f} s)",
                reason="body_too_slow",
            ) from None
        if message["type"] == "http.disconnect":
            raise Refused(400, "the client went away", reason="body_incomplete")
        body += message.get("body", b"")
        if len(body) > limit:
            raise Refused(413, f"the body is over {limit} bytes", reason="body_too_large")
        if not message.get("more_body", False):
            break
    if encoding in (None, "", "identity"):
        return bytes(body)
    if encoding == "gzip":
        return _gunzip(bytes(body), limit)
    raise Refused(
        415,
        f"content-encoding {encoding!r} is not accepted (gzip is)",
        reason="encoding_unsupported",
    )


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a small bomb cannot become a large body."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise Refused(400, "the body is not valid gzip", reason="body_invalid") from None
    if len(out) > limit:
        raise Refused(413, f"the decompressed body is over {limit} bytes", reason="body_too_large")
    if not inflater.eof or inflater.unused_data:
        # Truncated, or more after the first member (another member, trailing bytes):
        # refuse rather than forward part of what the sender sent.
        raise Refused(400, "the body is not a single complete gzip member", reason="body_invalid")
    return out


def parse(body: bytes, kind: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        if kind == PROTOBUF:
            request.ParseFromString(body)
        else:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("not an object")
            json_format.ParseDict(_ids_to_base64(document), request)
    except (
        DecodeError,
        ValueError,
        TypeError,
        AttributeError,  # a JSON list or string where OTLP has an object
        json_format.ParseError,
        RecursionError,
    ):
        raise Refused(400, "the body is not an OTLP trace export", reason="body_invalid") from None
    return request


def _ids_to_base64(document: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    for resource_spans in document.get("resourceSpans") or []:
        for scope_spans in (resource_spans or {}).get("scopeSpans") or []:
            for span in (scope_spans or {}).get("spans") or []:
                _hex_fields(span)
                for link in (span or {}).get("links") or []:
                    _hex_fields(link)
    return document


def _hex_fields(item: Any) -> None:
    if not isinstance(item, dict):
        return
    for key in ("traceId", "spanId", "parentSpanId"):
        value = item.get(key)
        if isinstance(value, str) and value:
            try:
                item[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise ValueError(f"{key} is not hex") from None


def encode(response: ExportTraceServiceResponse, kind: str) -> bytes:
    if kind == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


# --- answers -------------------------------------------------------------------------------


#: HTTP status → google.rpc.Code, as gRPC maps them (an unknown status is UNKNOWN, 2).
_GRPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,
    429: 8,
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE
    503: 14,
    504: 4,
}


def status_body(
    status: int,
    message: str,
    kind: str,
    reason: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The ``google.rpc.Status`` OTLP/HTTP asks for as an error body (protobuf, or its
    JSON mapping for JSON requests); ``reason`` (a stable code, upper-cased as
    ``ErrorInfo`` wants) and ``metadata`` (the decision id) ride in an ``ErrorInfo``."""
    answer = Status(code=_GRPC_CODES.get(status, 2), message=message)
    if reason:
        info = ErrorInfo(reason=reason.upper(), domain=DOMAIN, metadata=dict(metadata or {}))
        detail = AnyMessage()
        detail.Pack(info)
        answer.details.append(detail)
    if kind == JSON:
        return json_format.MessageToJson(answer, indent=None).encode()
    return answer.SerializeToString()


def problem_as_status(problem: bytes, status: int, kind: str) -> bytes:
    """An iamscope problem document (a refusal of the middleware or of the ``answer``
    hook) as the ``google.rpc.Status`` an OTLP exporter reads: its ``detail`` is the
    message, its ``code`` the reason, its decision id and requirement the metadata. A
    body that is not a problem document (a custom hook's) keeps only the status."""
    try:
        document = json.loads(problem)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        return status_body(status, _phrase(status), kind)
    detail, code = document.get("detail"), document.get("code")
    metadata = {
        key: value
        for key in ("decision_id", "requirement")
        if isinstance(value := document.get(key), str)
    }
    return status_body(
        status,
        detail if isinstance(detail, str) else _phrase(status),
        kind,
        code if isinstance(code, str) else None,
        metadata,
    )


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "refused"


async def respond_status(
    send: Send, kind: str, refused: Refused, decision_id: str | None = None
) -> None:
    metadata = {"decision_id": decision_id} if decision_id else None
    body = status_body(refused.status, refused.message, kind, refused.reason, metadata)
    extra = []
    if refused.retry_after is not None:
        extra.append(("retry-after", str(max(1, math.ceil(refused.retry_after)))))
    await respond(send, refused.status, kind, body, extra)


async def respond(
    send: Send,
    status: int,
    kind: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    pairs = [(k, v) for k, v in headers or [] if k not in ("content-type", "content-length")]
    pairs.append(("content-type", kind))
    pairs.append(("content-length", str(len(body))))  # not chunked: one small body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- resources: where they say they come from, who they belong to ---------------------------


def placement(resource: Resource) -> tuple[str | None, str | None] | None:
    """(environment, service) a resource says it comes from, or None when it says so
    ambiguously: a key twice, a non-string value, or the two environment keys
    disagreeing. Backends read such resources differently, so none of them is trusted."""
    seen: dict[str, str] = {}
    for kv in resource.attributes:
        if kv.key in _PLACEMENT_KEYS:
            if kv.key in seen or not kv.value.HasField("string_value"):
                return None
            seen[kv.key] = kv.value.string_value
    envs = {seen[k] for k in _ENV_KEYS if k in seen}
    if len(envs) > 1:
        return None
    return (envs.pop() if envs else None), seen.get("service.name")


def stamp_values(decision: Decision, project: str) -> list[KeyValue]:
    identity = decision.attributes or {}
    stamp = {OWNER: project}
    for key in (USER_HASH, ISSUER, KIND, POLICY_VERSION):
        value = identity.get(key)
        if isinstance(value, str):
            stamp[key] = value
    pairs = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in stamp.items()]
    roles = identity.get(USER_ROLES)
    if isinstance(roles, tuple):
        values = [AnyValue(string_value=str(r)) for r in roles]
        array = AnyValue(array_value=ArrayValue(values=values))
        pairs.append(KeyValue(key=USER_ROLES, value=array))
    return pairs


def _forged(key: str) -> bool:
    """Identity keys only iamscope may write (contract 5)."""
    return key.startswith(("iamscope.", "user.")) or key == "enduser.id"


def _owner(key: str) -> bool:
    """The one identity key even an attesting sender may not write on a span: who owns
    the work (and so where a span-context route sends it) is the gateway's to say."""
    return key == OWNER


def _strip(attributes: Any, drop: Callable[[str], bool] = _forged) -> None:
    if any(drop(kv.key) for kv in attributes):
        kept = [kv for kv in attributes if not drop(kv.key)]
        del attributes[:]
        attributes.extend(kept)


def restamp(
    resource_spans: ResourceSpans,
    stamp: list[KeyValue],
    *,
    deep: bool,
    attested: bool = False,
) -> None:
    """Remove whatever the sender said about identity (resource, and with ``deep`` the
    scopes, spans, events and links too) and write what the gateway verified on the
    resource.

    With ``attested`` (the policy lets the sender attest its end users for this
    resource: the trace action ``attest``), its spans keep their own ``user.*``,
    ``enduser.id`` and ``iamscope.*`` attributes — the end user the sending service
    verified — except ``iamscope.owner.team``. The resource is always the sender's: it
    says which workload exported, stamped here, whatever the spans say."""
    _strip(resource_spans.resource.attributes)
    resource_spans.resource.attributes.extend(stamp)
    if not deep:
        return
    on_spans = _owner if attested else _forged
    for scope_spans in resource_spans.scope_spans:
        _strip(scope_spans.scope.attributes)
        for span in scope_spans.spans:
            _strip(span.attributes, on_spans)
            for event in span.events:
                _strip(event.attributes)
            for link in span.links:
                _strip(link.attributes)


def may_hold_forged(wire: bytes) -> bool:
    """Whether an export's protobuf wire form may carry an identity key only iamscope
    may write. Protobuf keeps keys as plain UTF-8, so a forged key appears verbatim;
    without one, the per-span strip (~3 µs a span) can be skipped."""
    return any(marker in wire for marker in _FORGED_MARKERS)
