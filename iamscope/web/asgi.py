"""Plain-ASGI middleware for Starlette, FastAPI and any ASGI app (no BaseHTTPMiddleware).

HTTP and WebSocket scopes are checked; everything else passes through (at lifespan
startup and shutdown, the key refresher is started and stopped on the way). The
``Access`` reaches the app in ``scope["iamscope.access"]``, ``request.state.access``
and :func:`iamscope.current`, and the ContextVar is reset after the request, on errors
and after streaming responses alike. An :class:`~iamscope.errors.AccessDenied` raised
by a handler (``require(...)``, a FastAPI dependency) becomes a 403 problem answer if
the response has not started.

An allowed request is audited when it ends (:meth:`IAMScope.finish`), so that a refusal
inside it is the request's one event. A cache hit takes :meth:`IAMScope.peek`: no
coroutine, no lock, nothing formatted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import get_current_span

from iamscope.engine.decision import Decision, request_decision
from iamscope.engine.engine import IAMScope
from iamscope.errors import AccessDenied, IAMScopeError, TokenError
from iamscope.telemetry.context import recording_span
from iamscope.telemetry.spans import (
    refusal_span,
    strip_inbound_baggage,
    tag,
    warn_if_untraced,
)
from iamscope.web.refusal import answer_for, error_of

__all__ = ["IAMScopeMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WS_POLICY_VIOLATION = 1008


class IAMScopeMiddleware:
    def __init__(self, app: ASGIApp, iamscope: IAMScope) -> None:
        self.app = app
        self.iamscope = iamscope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = _watch_lifespan(receive, self.iamscope)
            await self.app(scope, receive, send)
            return
        iam = self.iamscope
        path = scope.get("path", "")
        if path in iam.public_paths or (iam.public_prefixes and iam.is_public(path)):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "WEBSOCKET")
        decision = iam.peek(scope["headers"])
        span = recording_span()
        if decision is None:
            decision = await self._decide(scope, method, path)
            if not decision.allowed:
                if span is not None:
                    tag(span, decision)
                status = await _refuse(kind, send, error_of(decision), decision.decision_id, iam)
                if span is None and kind == "http":
                    # Nothing recording outside us: the refusal still leaves a span.
                    refusal_span(decision, method, path, status, _reader(scope["headers"]))
                return
        if span is not None:
            tag(span, decision)
        access = decision.access
        scope["iamscope"] = iam  # for decorators: the app's answer hook and audit
        scope["iamscope.decision"] = decision
        scope["iamscope.access"] = access
        if "state" in scope:
            scope["state"]["access"] = access
        else:
            scope["state"] = {"access": access}
        started = False

        # Not a coroutine: it hands back the server's own awaitable, so a message costs
        # one call of ours rather than one more coroutine and frame.
        def tracking_send(message: Message) -> Awaitable[None]:
            nonlocal started
            if not started and message["type"] in _STARTS:
                started = True
            return send(message)

        stripped = strip_inbound_baggage() if iam.telemetry.strip_baggage else None
        token = request_decision.set(decision)
        try:
            await self.app(scope, receive, tracking_send)
        except (AccessDenied, TokenError) as exc:  # from require(...) or a dependency
            if started:
                raise  # the app began its own answer: the request stays allowed
            iam.audit_denial(decision, exc, method, path)
            await _refuse(kind, send, exc, decision.decision_id, iam)
        finally:
            request_decision.reset(token)
            if stripped is not None:
                otel_context.detach(stripped)
            # The request's one audit event, unless a refusal inside it was that event.
            iam.finish(decision, method, path)
            if span is None and decision.cache != "hit":
                warn_if_untraced(get_current_span())

    async def _decide(self, scope: Scope, method: str, path: str) -> Decision:
        headers = scope["headers"]
        found = self.iamscope.decide_now(headers, method, path, final=False)
        if isinstance(found, Decision):
            return found
        return await self.iamscope.decide_async(headers, method, path, pending=found, final=False)


_STARTS = frozenset(("http.response.start", "websocket.accept"))


def _watch_lifespan(receive: Receive, iam: IAMScope) -> Receive:
    """The key refresher starts with the app and stops at its shutdown (contract 9)."""

    async def watched() -> Message:
        message = await receive()
        if message["type"] == "lifespan.startup":
            iam.start()
        elif message["type"] == "lifespan.shutdown":
            iam.stop()
        return message

    return watched


def _reader(headers: list[tuple[bytes, bytes]]) -> Callable[[str], str | None]:
    """A request header by lower-case name (for trace context propagation)."""

    def read(name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    return read


async def _refuse(
    kind: str, send: Send, error: IAMScopeError, decision_id: str, iamscope: IAMScope
) -> int:
    """Sends the refusal; returns its HTTP status."""
    if kind == "websocket":
        # Closing before accept makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
        return 403
    status, headers, body = answer_for(iamscope, error, decision_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status
