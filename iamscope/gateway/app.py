"""An identity-aware OTLP gateway: workload identity in, the right project's token out.

Services send OTLP/HTTP trace exports authenticated by their own short-lived identity
token (a Kubernetes service-account token, a CI token, a SPIFFE JWT-SVID, a user token)
instead of a long-lived project key. The gateway runs them through the iamscope
pipeline, checks the sender's trace ``write`` scope against every resource it sends,
stamps ownership the sender cannot forge, and forwards to the owning project with that
project's token, which only the gateway holds.

    POST /v1/traces ─► IAMScopeMiddleware (who) ─► body (size, gzip, protobuf / JSON)
        ─► per resource: write on (project, deployment.environment.name, service.name)?
        ─► stamp owner attributes ─► forward (retries, Retry-After) ─► partial success

The project is the sender's owner team (the policy's ``owner``); senders without one
write to ``default``. Out-of-scope resources are dropped and reported through OTLP
partial success, or the whole export refused with 403 (``out_of_scope: refuse``). When
the upstream cannot take the data the gateway answers 503 with ``Retry-After``: it
never accepts spans it is about to lose.

    gateway:
      upstream: lightstep               # or otlp (give endpoint)
      endpoint: https://otlp.example/v1/traces
      token_header: lightstep-access-token
      projects: {checkout: {token_env: LS_TOKEN_CHECKOUT}}
      default_project: {token_env: LS_ACCESS_TOKEN}
      out_of_scope: drop                # or refuse
      max_body_bytes: 4194304
      timeout: 10
      retries: 3
      max_inflight: 64
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import math
import os
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from iamscope.engine.decision import Decision
from iamscope.engine.engine import IAMScope
from iamscope.errors import ConfigError, TokenMissing, TraceScopeRequired
from iamscope.gateway.settings import GatewaySettings
from iamscope.telemetry.export import LIGHTSTEP_HTTP
from iamscope.telemetry.settings import LIGHTSTEP_HEADER, Project, project_token
from iamscope.telemetry.spans import ISSUER, KIND, OWNER, POLICY_VERSION, USER_HASH, USER_ROLES
from iamscope.web.asgi import IAMScopeMiddleware

__all__ = ["GatewaySettings", "OTLPGateway"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_PROJECT = "default"
#: Attributes the gateway writes on every resource; the sender's values are replaced.
_ENV_KEYS = ("deployment.environment.name", "deployment.environment")
_PLACEMENT_KEYS = frozenset((*_ENV_KEYS, "service.name"))
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RESOURCES = 10_000  # per export: the scope check is per resource
_FORGED_MARKERS = (b"iamscope.", b"user.", b"enduser.id")  # see _forged
_ENV_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class _Upstream:
    url: str
    headers: Mapping[str, str]


class _Refused(Exception):
    """An export answered without forwarding: (status, message[, retry after])."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class OTLPGateway:
    """The gateway as an ASGI app: run it on its own or mount it in an existing app.

    It brings its own :class:`~iamscope.web.asgi.IAMScopeMiddleware`, so senders are
    authenticated, cached, audited and tagged like any other iamscope request.
    """

    def __init__(
        self,
        iamscope: IAMScope,
        settings: GatewaySettings,
        *,
        client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.iamscope = iamscope
        self.settings = settings
        env = os.environ if environ is None else environ
        self._default = _upstream(settings, settings.default_project, "default_project", env)
        self._routes = {
            team: _upstream(settings, project, f"projects.{team}", env)
            for team, project in settings.projects.items()
        }
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self._sleep = sleep
        self._inflight = 0
        self._app = IAMScopeMiddleware(self._export, iamscope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self._app(scope, receive, send)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- one export -------------------------------------------------------------------

    async def _export(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        decision: Decision | None = scope.get("iamscope.decision")
        kind = _content_type(scope)
        if decision is None or decision.access is None:
            # A public path or optional mode let an anonymous sender through: refuse.
            error = TokenMissing("exports need the sender's own token")
            status, headers, body = self.iamscope.answer(error, "-")
            await _send(send, status, dict(headers)["content-type"], body, headers)
            return
        if self._inflight >= self.settings.max_inflight:
            # Checked before the body is read: a full gateway must not buffer more.
            await _send_status(send, kind or JSON, _Refused(503, "at capacity", 1.0))
            self._audit(decision, scope, "refused 503: at capacity")
            return
        self._inflight += 1
        try:
            await self._export_one(scope, receive, send, decision, kind)
        finally:
            self._inflight -= 1

    async def _export_one(
        self, scope: Scope, receive: Receive, send: Send, decision: Decision, kind: str | None
    ) -> None:
        try:
            if _path(scope) != TRACES_PATH:
                raise _Refused(404, "not found")
            if scope.get("method") != "POST":
                raise _Refused(405, "only POST is accepted")
            if kind is None:
                raise _Refused(415, f"send {PROTOBUF} or {JSON}")
            access = decision.access
            if access is None or not access.traces.projects("write"):
                await self._refuse_scope(scope, send, decision)  # no write scope: unread
                return
            body = await _read_body(scope, receive, self.settings.max_body_bytes)
            # Parsing and checking a large export is CPU work: off the event loop.
            request, rejected = await asyncio.to_thread(self._prepare, body, kind, decision)
            if rejected and self.settings.out_of_scope == "refuse":
                await self._refuse_scope(scope, send, decision)
                return
            kept = sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
            upstream_rejected, upstream_message = 0, ""
            if kept:
                upstream_rejected, upstream_message = await self._forward(request, decision)
        except _Refused as refused:
            await _send_status(send, kind or JSON, refused)
            self._audit(decision, scope, f"refused {refused.status}: {refused.message}")
            return
        messages = [f"{rejected} spans outside the sender's trace write scope"] if rejected else []
        if upstream_rejected:
            messages.append(f"the upstream rejected {upstream_rejected}: {upstream_message}")
        total = rejected + upstream_rejected
        self._audit(
            decision, scope, f"forwarded {kept - upstream_rejected} spans, rejected {total}"
        )
        response = ExportTraceServiceResponse()
        if total:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=total, error_message="; ".join(messages))
            )
        await _send(send, 200, kind or PROTOBUF, _encode(response, kind or PROTOBUF))

    def _prepare(
        self, body: bytes, kind: str, decision: Decision
    ) -> tuple[ExportTraceServiceRequest, int]:
        request = _parse(body, kind)
        if len(request.resource_spans) > MAX_RESOURCES:
            raise _Refused(400, f"more than {MAX_RESOURCES} resources in one export")
        return request, self._authorize(request, decision)

    def _authorize(self, request: ExportTraceServiceRequest, decision: Decision) -> int:
        """Drop resources outside the sender's write scope (returning how many spans
        went) and stamp ownership on the rest."""
        access = decision.access
        project = (access.owner if access is not None else None) or DEFAULT_PROJECT
        stamp = _stamp_values(decision, project)
        # A forged identity key must appear verbatim in the wire form (protobuf keeps
        # keys as plain UTF-8); without one, the per-span pass (~3 µs a span) is skipped.
        wire = request.SerializeToString()
        deep = any(marker in wire for marker in _FORGED_MARKERS)
        rejected = 0
        kept = []
        for resource_spans in request.resource_spans:
            where = _placement(resource_spans.resource)
            allowed = (
                where is not None
                and access is not None
                and access.traces.permits("write", project, where[0], where[1])
            )
            if not allowed:
                rejected += sum(len(s.spans) for s in resource_spans.scope_spans)
                continue
            _restamp(resource_spans, stamp, deep=deep)
            kept.append(resource_spans)
        del request.resource_spans[:]
        request.resource_spans.extend(kept)
        return rejected

    async def _forward(
        self, request: ExportTraceServiceRequest, decision: Decision
    ) -> tuple[int, str]:
        """Forward; the upstream's own partial success, passed back to the sender."""
        access = decision.access
        owner = access.owner if access is not None else None
        upstream = self._routes.get(owner or "", self._default)
        answer = await self._post(upstream, request.SerializeToString())
        try:
            partial = ExportTraceServiceResponse.FromString(answer).partial_success
        except DecodeError:
            return 0, ""  # a 2xx without a readable body: OTLP says full success
        return partial.rejected_spans, partial.error_message

    async def _post(self, upstream: _Upstream, body: bytes) -> bytes:
        """POST with bounded retries; raises _Refused(503) when the data cannot land."""
        deadline = time.monotonic() + self.settings.timeout
        wait = 0.1
        for attempt in range(self.settings.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # a total deadline, not per phase
                    response = await self._client.post(
                        upstream.url, content=body, headers=upstream.headers
                    )
            except (httpx.HTTPError, TimeoutError):
                status, retry_after = 503, None
            else:
                if response.status_code < 300:
                    return response.content
                status, retry_after = response.status_code, _retry_after(response)
                if status not in _RETRY_STATUSES:
                    # The upstream refused the data itself: retrying will not help, so
                    # the sender gets a non-retryable 400 naming it, not a 502 it retries.
                    raise _Refused(400, f"the upstream refused the export ({status})")
            pause = min(retry_after if retry_after is not None else wait, _MAX_RETRY_AFTER)
            if attempt == self.settings.retries or time.monotonic() + pause > deadline:
                raise _Refused(503, "the upstream is unavailable", retry_after=max(pause, 1.0))
            await self._sleep(pause)
            wait *= 2
        raise _Refused(503, "the upstream is unavailable", retry_after=1.0)

    async def _refuse_scope(self, scope: Scope, send: Send, decision: Decision) -> None:
        error = TraceScopeRequired(
            "the export has resources outside the sender's trace write scope",
            requirement="trace:write",
        )
        self.iamscope.audit_denial(decision, error, "POST", TRACES_PATH)
        status, headers, body = self.iamscope.answer(
            error, decision.decision_id, scope=error.requirement
        )
        await _send(send, status, dict(headers)["content-type"], body, headers)

    def _audit(self, decision: Decision, scope: Scope, details: str) -> None:
        self.iamscope.audit_export(decision, scope.get("path", ""), details)


# --- pure helpers ---------------------------------------------------------------------------


def _upstream(
    settings: GatewaySettings, project: Project, name: str, env: Mapping[str, str]
) -> _Upstream:
    lightstep = settings.upstream == "lightstep"
    url = project.endpoint or settings.endpoint or (LIGHTSTEP_HTTP if lightstep else None)
    if url is None:
        raise ConfigError(f"gateway {name}: no upstream endpoint", key="endpoint")
    headers = {"content-type": PROTOBUF}
    header = settings.token_header or (LIGHTSTEP_HEADER if lightstep else None)
    token = project_token("gateway", name, project, lightstep=lightstep, header=header, env=env)
    if token is not None:
        headers[token[0]] = token[1]
    return _Upstream(url, headers)


def _path(scope: Scope) -> str:
    """The path inside the gateway's mount point (Starlette keeps the full path)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _content_type(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return kind if kind in (PROTOBUF, JSON) else None
    return None


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    encoding = None
    for name, value in scope.get("headers", ()):
        if (
            name == b"content-length"
            and value.isdigit()
            and (len(value) > 18 or int(value) > limit)
        ):
            raise _Refused(413, f"the body is over {limit} bytes")
        if name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Refused(400, "the client went away")
        body += message.get("body", b"")
        if len(body) > limit:
            raise _Refused(413, f"the body is over {limit} bytes")
        if not message.get("more_body", False):
            break
    if encoding in (None, "", "identity"):
        return bytes(body)
    if encoding == "gzip":
        return _gunzip(bytes(body), limit)
    raise _Refused(415, f"content-encoding {encoding!r} is not accepted (gzip is)")


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a small bomb cannot become a large body."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise _Refused(400, "the body is not valid gzip") from None
    if len(out) > limit:
        raise _Refused(413, f"the decompressed body is over {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        # Truncated, or more after the first member (another member, trailing bytes):
        # refuse rather than forward part of what the sender sent.
        raise _Refused(400, "the body is not a single complete gzip member")
    return out


def _parse(body: bytes, kind: str) -> ExportTraceServiceRequest:
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
        raise _Refused(400, "the body is not an OTLP trace export") from None
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


def _encode(response: ExportTraceServiceResponse, kind: str) -> bytes:
    if kind == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def _placement(resource: Resource) -> tuple[str | None, str | None] | None:
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


def _stamp_values(decision: Decision, project: str) -> list[KeyValue]:
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


def _restamp(resource_spans: ResourceSpans, stamp: list[KeyValue], *, deep: bool) -> None:
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is True too
        return float(value[:9])
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_body(code: int, message: str, kind: str) -> bytes:
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


async def _send_status(send: Send, kind: str, refused: _Refused) -> None:
    body = _status_body(_GRPC_CODES.get(refused.status, 2), refused.message, kind)
    extra = []
    if refused.retry_after is not None:
        extra.append(("retry-after", str(max(1, math.ceil(refused.retry_after)))))
    await _send(send, refused.status, kind, body, extra)


async def _send(
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


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
