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
import email.utils
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from iamscope.engine.decision import Decision
from iamscope.engine.engine import IAMScope
from iamscope.errors import ConfigError, TokenMissing, TraceScopeRequired
from iamscope.gateway.otlp import (
    JSON,
    PROTOBUF,
    Refused,
    content_type,
    encode,
    may_hold_forged,
    parse,
    placement,
    read_body,
    respond,
    respond_status,
    restamp,
    stamp_values,
)
from iamscope.gateway.settings import GatewaySettings
from iamscope.telemetry.export import LIGHTSTEP_HTTP
from iamscope.telemetry.settings import LIGHTSTEP_HEADER, Project, project_token
from iamscope.web.asgi import IAMScopeMiddleware, Receive, Scope, Send
from iamscope.web.refusal import refuse_late

__all__ = ["GatewaySettings", "OTLPGateway"]

TRACES_PATH = "/v1/traces"
DEFAULT_PROJECT = "default"
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RESOURCES = 10_000  # per export: the scope check is per resource
_MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class _Upstream:
    url: str
    headers: Mapping[str, str]


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
        kind = content_type(scope)
        if decision is None or decision.access is None:
            # A public path or optional mode let an anonymous sender through: refuse.
            error = TokenMissing("exports need the sender's own token")
            status, headers, body = self.iamscope.answer(error, "-")
            await respond(send, status, dict(headers)["content-type"], body, headers)
            return
        if self._inflight >= self.settings.max_inflight:
            # Checked before the body is read: a full gateway must not buffer more.
            await respond_status(send, kind or JSON, Refused(503, "at capacity", 1.0))
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
                raise Refused(404, "not found")
            if scope.get("method") != "POST":
                raise Refused(405, "only POST is accepted")
            if kind is None:
                raise Refused(415, f"send {PROTOBUF} or {JSON}")
            access = decision.access
            if access is None or not access.traces.projects("write"):
                await self._refuse_scope(scope, send, decision)  # no write scope: unread
                return
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            # Parsing and checking a large export is CPU work: off the event loop.
            request, rejected = await asyncio.to_thread(self._prepare, body, kind, decision)
            if rejected and self.settings.out_of_scope == "refuse":
                await self._refuse_scope(scope, send, decision)
                return
            kept = sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
            upstream_rejected, upstream_message = 0, ""
            if kept:
                upstream_rejected, upstream_message = await self._forward(request, decision)
        except Refused as refused:
            await respond_status(send, kind or JSON, refused)
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
        await respond(send, 200, kind or PROTOBUF, encode(response, kind or PROTOBUF))

    def _prepare(
        self, body: bytes, kind: str, decision: Decision
    ) -> tuple[ExportTraceServiceRequest, int]:
        request = parse(body, kind)
        if len(request.resource_spans) > MAX_RESOURCES:
            raise Refused(400, f"more than {MAX_RESOURCES} resources in one export")
        return request, self._authorize(request, decision)

    def _authorize(self, request: ExportTraceServiceRequest, decision: Decision) -> int:
        """Drop resources outside the sender's write scope (returning how many spans
        went) and stamp ownership on the rest."""
        access = decision.access
        project = (access.owner if access is not None else None) or DEFAULT_PROJECT
        stamp = stamp_values(decision, project)
        deep = may_hold_forged(request.SerializeToString())
        rejected = 0
        kept = []
        for resource_spans in request.resource_spans:
            where = placement(resource_spans.resource)
            allowed = (
                where is not None
                and access is not None
                and access.traces.permits("write", project, where[0], where[1])
            )
            if not allowed:
                rejected += sum(len(s.spans) for s in resource_spans.scope_spans)
                continue
            restamp(resource_spans, stamp, deep=deep)
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
        """POST with bounded retries; raises Refused(503) when the data cannot land."""
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
                    raise Refused(400, f"the upstream refused the export ({status})")
            pause = min(retry_after if retry_after is not None else wait, _MAX_RETRY_AFTER)
            if attempt == self.settings.retries or time.monotonic() + pause > deadline:
                raise Refused(503, "the upstream is unavailable", retry_after=max(pause, 1.0))
            await self._sleep(pause)
            wait *= 2
        raise Refused(503, "the upstream is unavailable", retry_after=1.0)

    async def _refuse_scope(self, scope: Scope, send: Send, decision: Decision) -> None:
        error = TraceScopeRequired(
            "the export has resources outside the sender's trace write scope",
            requirement="trace:write",
        )
        status, headers, body = refuse_late(self.iamscope, decision, error, "POST", TRACES_PATH)
        await respond(send, status, dict(headers)["content-type"], body, headers)

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


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
