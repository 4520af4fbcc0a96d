"""The OTLP/HTTP wire for the gateway: trace exports in, answers out, resources stamped.

Reading a request (size limits before and after gzip, protobuf or JSON with OTLP's hex
ids), answering it (an ``ExportTraceServiceResponse``, or a ``google.rpc.Status`` body
with the HTTP status), and the resource attributes the gateway reads (where a resource
says it runs) and writes (who owns it, what identity sent it). No policy and no
forwarding here: :mod:`iamscope.gateway.app` decides and routes.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
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
    "read_body",
    "respond",
    "respond_status",
    "restamp",
    "stamp_values",
    "status_body",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: The resource attributes that say where a resource runs.
_ENV_KEYS = ("deployment.environment.name", "deployment.environment")
_PLACEMENT_KEYS = frozenset((*_ENV_KEYS, "service.name"))
_FORGED_MARKERS = (b"iamscope.", b"user.", b"enduser.id")  # see _forged


class Refused(Exception):
    """An export answered without forwarding: (status, message[, retry after])."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


# --- reading a request ---------------------------------------------------------------------


def content_type(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return kind if kind in (PROTOBUF, JSON) else None
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    encoding = None
    for name, value in scope.get("headers", ()):
        if (
            name == b"content-length"
            and value.isdigit()
            and (len(value) > 18 or int(value) > limit)
        ):
            raise Refused(413, f"the body is over {limit} bytes")
        if name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "the client went away")
        body += message.get("body", b"")
        if len(body) > limit:
            raise Refused(413, f"the body is over {limit} bytes")
        if not message.get("more_body", False):
            break
    if encoding in (None, "", "identity"):
        return bytes(body)
    if encoding == "gzip":
        return _gunzip(bytes(body), limit)
    raise Refused(415, f"content-encoding {encoding!r} is not accepted (gzip is)")


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a small bomb cannot become a large body."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise Refused(400, "the body is not valid gzip") from None
    if len(out) > limit:
        raise Refused(413, f"the decompressed body is over {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        # Truncated, or more after the first member (another member, trailing bytes):
        # refuse rather than forward part of what the sender sent.
        raise Refused(400, "the body is not a single complete gzip member")
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
        raise Refused(400, "the body is not an OTLP trace export") from None
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


def status_body(code: int, message: str, kind: str) -> bytes:
    """A google.rpc.Status, as OTLP/HTTP asks for error bodies (encoded by hand: two
    fields, not worth a dependency)."""
    if kind == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


_GRPC_CODES = {400: 3, 404: 5, 405: 12, 413: 8, 415: 3, 502: 14, 503: 14}


async def respond_status(send: Send, kind: str, refused: Refused) -> None:
    body = status_body(_GRPC_CODES.get(refused.status, 2), refused.message, kind)
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
    pairs = [(k, v) for k, v in headers or [] if k != "content-type"]
    pairs.append(("content-type", kind))
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


def _strip(attributes: Any) -> None:
    if any(_forged(kv.key) for kv in attributes):
        kept = [kv for kv in attributes if not _forged(kv.key)]
        del attributes[:]
        attributes.extend(kept)


def restamp(resource_spans: ResourceSpans, stamp: list[KeyValue], *, deep: bool) -> None:
    """Remove whatever the sender said about identity (resource, and with ``deep`` the
    scopes and spans too) and write what the gateway verified on the resource."""
    _strip(resource_spans.resource.attributes)
    resource_spans.resource.attributes.extend(stamp)
    if not deep:
        return
    for scope_spans in resource_spans.scope_spans:
        _strip(scope_spans.scope.attributes)
        for span in scope_spans.spans:
            _strip(span.attributes)


def may_hold_forged(wire: bytes) -> bool:
    """Whether an export's protobuf wire form may carry an identity key only iamscope
    may write. Protobuf keeps keys as plain UTF-8, so a forged key appears verbatim;
    without one, the per-span strip (~3 µs a span) can be skipped."""
    return any(marker in wire for marker in _FORGED_MARKERS)
