"""An identity-aware OTLP gateway: workload identity in, the right project's token out.

Services send OTLP/HTTP trace exports authenticated by their own short-lived identity
token (a Kubernetes service-account token, a CI token, a SPIFFE JWT-SVID, a user token)
instead of a long-lived project key. The gateway runs them through the iamscope
pipeline, checks the sender's trace ``write`` scope against every resource it sends,
stamps ownership the sender cannot forge, and forwards to the owning project with that
project's token, which only the gateway holds.

    POST /v1/traces ─► IAMScopeMiddleware (who) ─► a reading slot (per sender, in all)
        ─► body (deadline, minimum rate, size, gzip, protobuf / JSON) ─► a forwarding slot
        ─► per resource: write on (project, deployment.environment.name, service.name)?
        ─► stamp owner attributes (keep the spans' end users where ``attest`` is granted)
        ─► forward (retries, Retry-After) ─► partial success

The project is the sender's owner team (the policy's ``owner``); senders without one
write to ``default``. Out-of-scope resources are dropped and reported through OTLP
partial success, or the whole export refused with 403 (``out_of_scope: refuse``). When
the upstream cannot take the data the gateway answers 503 with ``Retry-After``: it
never accepts spans it is about to lose.

Identity on the spans: a sender's ``user.*`` / ``enduser.id`` / ``iamscope.*`` span
attributes are dropped (anyone can write them) unless the policy grants the sender the
trace action ``attest`` on that resource's (project, environment, service): then its
spans keep the end users it verified, except ``iamscope.owner.team``; the resource
always carries the sender's own verified identity and owner.

Slow senders: a body must arrive within ``body_timeout`` and at ``min_body_rate``, or
the sender gets 408 and its connection is closed. A sender (issuer + subject) holds at
most ``max_per_sender`` exports in progress (429 beyond), bodies being read are bounded
by ``max_reading``, and a forwarding slot (``max_inflight``) is taken only once the body
is in, so senders stalling mid-body never keep live exports out. Every error answer is
an OTLP ``google.rpc.Status`` in the request's encoding, and one given before the body
was read whole closes the connection.

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
      max_per_sender: 16                # default: max_inflight / 4
      max_reading: 128                  # default: 2 x max_inflight
      body_timeout: 10
      min_body_rate: 1024               # bytes/s after the first second
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

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
    problem_as_status,
    read_body,
    respond,
    respond_status,
    restamp,
    stamp_values,
)
from iamscope.gateway.settings import GatewaySettings
from iamscope.telemetry.export import LIGHTSTEP_HTTP
from iamscope.telemetry.settings import LIGHTSTEP_HEADER, Project, locate, project_token
from iamscope.web.asgi import IAMScopeMiddleware, Message, Receive, Scope, Send
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


Sender = tuple[str, str]  # (issuer name, subject): whose share a slot counts against


@dataclass(slots=True)
class _Ticket:
    """One export's hold on the gateway: its sender's share, then a reading or a
    forwarding slot."""

    sender: Sender
    reading: bool = True
    forwarding: bool = False


@dataclass(slots=True)
class _Slots:
    """Admission (bookkeeping only: the event loop is its one thread).

    A sender's share counts its exports from admission to answer, so one sender
    stalling many bodies holds at most ``max_per_sender``; reading slots bound the
    bodies being received (their memory) apart from the forwarding slots, which are
    taken only once a body is in: a stalled body never holds one."""

    settings: GatewaySettings
    senders: dict[Sender, int] = field(default_factory=dict)
    reading: int = 0
    forwarding: int = 0

    def admit(self, sender: Sender) -> _Ticket:
        held = self.senders.get(sender, 0)
        if held >= self.settings.sender_slots:
            raise Refused(
                429,
                f"this sender already has {held} exports in progress",
                retry_after=1.0,
                reason="sender_at_capacity",
            )
        if self.reading >= self.settings.reading_slots:
            raise Refused(503, "at capacity", retry_after=1.0, reason="at_capacity")
        self.senders[sender] = held + 1
        self.reading += 1
        return _Ticket(sender)

    def forward(self, ticket: _Ticket) -> None:
        if self.forwarding >= self.settings.max_inflight:
            raise Refused(503, "at capacity", retry_after=1.0, reason="at_capacity")
        self.reading -= 1
        self.forwarding += 1
        ticket.reading, ticket.forwarding = False, True

    def leave(self, ticket: _Ticket) -> None:
        if ticket.reading:
            self.reading -= 1
        if ticket.forwarding:
            self.forwarding -= 1
        ticket.reading = ticket.forwarding = False
        left = self.senders.pop(ticket.sender) - 1
        if left:
            self.senders[ticket.sender] = left


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
        self._slots = _Slots(settings)
        self._app = IAMScopeMiddleware(self._export, iamscope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        exchange = _Exchange(content_type(scope) or JSON, _bodiless(scope))
        await self._app(scope, exchange.receiving(receive), exchange.answering(send))

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
        ticket = None
        try:
            if _path(scope) != TRACES_PATH:
                raise Refused(404, "not found", reason="not_found")
            if scope.get("method") != "POST":
                raise Refused(405, "only POST is accepted", reason="method_not_allowed")
            if kind is None:
                raise Refused(415, f"send {PROTOBUF} or {JSON}", reason="content_type_unsupported")
            if not decision.access.traces.projects("write"):
                await self._refuse_scope(scope, send, decision)  # no write scope: unread
                return
            ticket = self._slots.admit(_sender(decision))
            body = await read_body(
                scope,
                receive,
                self.settings.max_body_bytes,
                timeout=self.settings.body_timeout,
                min_rate=self.settings.min_body_rate,
            )
            self._slots.forward(ticket)
            # Parsing and checking a large export is CPU work: off the event loop.
            request, rejected, attested = await asyncio.to_thread(
                self._prepare, body, kind, decision
            )
            if rejected and self.settings.out_of_scope == "refuse":
                await self._refuse_scope(scope, send, decision)
                return
            kept = sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
            upstream_rejected, upstream_message = 0, ""
            if kept:
                upstream_rejected, upstream_message = await self._forward(request, decision)
        except Refused as refused:
            await respond_status(send, kind or JSON, refused, decision.decision_id)
            self._audit(decision, scope, f"refused {refused.status}: {refused.message}")
            return
        finally:
            if ticket is not None:
                self._slots.leave(ticket)
        messages = [f"{rejected} spans outside the sender's trace write scope"] if rejected else []
        if upstream_rejected:
            messages.append(f"the upstream rejected {upstream_rejected}: {upstream_message}")
        total = rejected + upstream_rejected
        details = f"forwarded {kept - upstream_rejected} spans, rejected {total}"
        if attested:
            details += f", {attested} with end users the sender attests"
        self._audit(decision, scope, details)
        response = ExportTraceServiceResponse()
        if total:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=total, error_message="; ".join(messages))
            )
        await respond(send, 200, kind or PROTOBUF, encode(response, kind or PROTOBUF))

    def _prepare(
        self, body: bytes, kind: str, decision: Decision
    ) -> tuple[ExportTraceServiceRequest, int, int]:
        request = parse(body, kind)
        if len(request.resource_spans) > MAX_RESOURCES:
            raise Refused(
                400, f"more than {MAX_RESOURCES} resources in one export", reason="body_invalid"
            )
        return request, *self._authorize(request, decision)

    def _authorize(self, request: ExportTraceServiceRequest, decision: Decision) -> tuple[int, int]:
        """Drop resources outside the sender's write scope and stamp ownership on the
        rest, keeping their spans' end users where the sender may attest them. Returns
        (spans dropped, spans kept with the end users the sender attests)."""
        access = decision.access
        if access is None:
            raise Refused(403, "no access", reason="trace_scope_required")  # checked before
        project = access.owner or DEFAULT_PROJECT
        stamp = stamp_values(decision, project)
        deep = may_hold_forged(request.SerializeToString())
        may_attest = deep and bool(access.traces.projects("attest"))
        rejected = attested = 0
        kept = []
        for resource_spans in request.resource_spans:
            spans = sum(len(s.spans) for s in resource_spans.scope_spans)
            where = placement(resource_spans.resource)
            if where is None or not access.traces.permits("write", project, *where):
                rejected += spans
                continue
            attests = may_attest and access.traces.permits("attest", project, *where)
            restamp(resource_spans, stamp, deep=deep, attested=attests)
            attested += spans if attests else 0
            kept.append(resource_spans)
        del request.resource_spans[:]
        request.resource_spans.extend(kept)
        return rejected, attested

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
                    raise Refused(
                        400,
                        f"the upstream refused the export ({status})",
                        reason="upstream_refused",
                    )
            pause = min(retry_after if retry_after is not None else wait, _MAX_RETRY_AFTER)
            if attempt == self.settings.retries or time.monotonic() + pause > deadline:
                raise Refused(
                    503,
                    "the upstream is unavailable",
                    retry_after=max(pause, 1.0),
                    reason="upstream_unavailable",
                )
            await self._sleep(pause)
            wait *= 2
        raise Refused(
            503, "the upstream is unavailable", retry_after=1.0, reason="upstream_unavailable"
        )

    async def _refuse_scope(self, scope: Scope, send: Send, decision: Decision) -> None:
        error = TraceScopeRequired(
            "the export has resources outside the sender's trace write scope",
            requirement="trace:write",
        )
        status, headers, body = refuse_late(self.iamscope, decision, error, "POST", TRACES_PATH)
        await respond(send, status, dict(headers)["content-type"], body, headers)

    def _audit(self, decision: Decision, scope: Scope, details: str) -> None:
        self.iamscope.audit_export(decision, scope.get("path", ""), details)


# --- one request's wire state ------------------------------------------------------------


@dataclass(slots=True)
class _Exchange:
    """What the answer to one request must honour: OTLP's encoding for error bodies
    (the request's; JSON when it sent neither), and whether the body was read whole."""

    kind: str
    body_read: bool

    def receiving(self, receive: Receive) -> Receive:
        async def tracked() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                self.body_read = True
            return message

        return tracked

    def answering(self, send: Send) -> Send:
        """``send``, with every error answer made an OTLP ``Status`` in the request's
        encoding (the middleware's and the ``answer`` hook's problem documents are
        rewritten; the gateway's own already are one) and ``connection: close`` on an
        error given before the body was read whole: the server would otherwise wait for
        (or drain) the rest, and a stalled sender's connection would stay open."""
        held: Message | None = None
        parts: list[bytes] = []

        async def answer(message: Message) -> None:
            nonlocal held
            if held is not None:  # a problem document being collected
                parts.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = problem_as_status(b"".join(parts), held["status"], self.kind)
                length = (b"content-length", str(len(body)).encode())
                await send({**held, "headers": [*held["headers"], length]})
                await send({"type": "http.response.body", "body": body})
                return
            if message["type"] == "http.response.start" and message["status"] >= 400:
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"connection"]
                if not self.body_read:
                    headers.append((b"connection", b"close"))
                given = next((v for k, v in headers if k == b"content-type"), b"")
                if given != self.kind.encode():
                    kept = [
                        (k, v) for k, v in headers if k not in (b"content-type", b"content-length")
                    ]
                    held = {**message, "headers": [*kept, (b"content-type", self.kind.encode())]}
                    return
                message = {**message, "headers": headers}
            await send(message)

        return answer


# --- pure helpers ---------------------------------------------------------------------------


def _bodiless(scope: Scope) -> bool:
    """Whether the request says it has no body (nothing left to read on the wire)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return False
    return True


def _sender(decision: Decision) -> Sender:
    principal = decision.principal
    return (principal.issuer, principal.subject) if principal is not None else ("", "")


def _upstream(
    settings: GatewaySettings, project: Project, name: str, env: Mapping[str, str]
) -> _Upstream:
    lightstep = settings.upstream == "lightstep"
    url = project.endpoint or settings.endpoint or (LIGHTSTEP_HTTP if lightstep else None)
    if url is None:
        raise ConfigError(f"gateway {name}: no upstream endpoint", key="endpoint")
    headers = {"content-type": PROTOBUF}
    header = settings.token_header or (LIGHTSTEP_HEADER if lightstep else None)
    try:
        token = project_token("gateway", name, project, lightstep=lightstep, header=header, env=env)
    except ConfigError as exc:
        where = (settings.source, settings.lines, project.line)
        raise locate(exc, *where, fallback="upstream") from None
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
