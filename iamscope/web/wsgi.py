"""WSGI middleware for Flask, Django and any WSGI app, over the same enforcement core.

The ``Access`` reaches the app in ``environ["iamscope.access"]`` and
:func:`iamscope.current`; the ContextVar stays set while a streaming body is produced
and is reset when the server closes the response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import get_current_span

from iamscope.engine.decision import request_decision
from iamscope.engine.engine import IAMScope
from iamscope.errors import AccessDenied, IAMScopeError, TokenError
from iamscope.telemetry.spans import strip_inbound_baggage, tag, warn_if_misordered

__all__ = ["IAMScopeWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class IAMScopeWSGIMiddleware:
    def __init__(self, app: WSGIApp, iamscope: IAMScope) -> None:
        self.app = app
        self.iamscope = iamscope
        # WSGI puts headers in HTTP_* keys; a server joins repeated headers with ", ",
        # which extraction refuses as an ambiguous request.
        self._keys = [
            ("HTTP_" + name.decode("latin-1").upper().replace("-", "_"), name)
            for name in sorted(iamscope.header_names)
        ]

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if request_decision.get() is not None:
            # A response earlier in this thread was never closed (a server that skips
            # close()): its identity must not reach this request, public or not.
            request_decision.set(None)
        path = environ.get("PATH_INFO", "")
        if self.iamscope.is_public(path):
            return self.app(environ, start_response)
        headers = [
            (name, value.encode("latin-1"))
            for key, name in self._keys
            if isinstance(value := environ.get(key), str)
        ]
        decision = self.iamscope.decide(headers, environ.get("REQUEST_METHOD", "GET"), path)
        span = get_current_span()
        if span.is_recording():
            tag(span, decision)
        elif decision.cache != "hit":
            warn_if_misordered()
        if not decision.allowed:
            error = decision.error or IAMScopeError("denied")
            status, answer, body = self.iamscope.answer(error, decision.decision_id)
            start_response(f"{status} {_REASONS.get(status, '')}".rstrip(), answer)
            return [body]
        environ["iamscope"] = self.iamscope  # for decorators: the app's answer hook
        environ["iamscope.decision"] = decision
        environ["iamscope.access"] = decision.access
        stripped = strip_inbound_baggage() if self.iamscope.telemetry.strip_baggage else None
        token = request_decision.set(decision)

        def reset() -> None:
            request_decision.reset(token)
            if stripped is not None:
                otel_context.detach(stripped)

        started = False

        def tracking_start(status: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal started
            started = True
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, tracking_start)
        except (AccessDenied, TokenError) as exc:  # a require(...) in a plain WSGI app
            reset()
            if started:
                raise  # the app began its own answer: nothing clean left to send
            method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
            self.iamscope.audit_denial(decision, exc, method, path)
            requirement = exc.requirement if isinstance(exc, AccessDenied) else None
            status, answer, body = self.iamscope.answer(
                exc, decision.decision_id, scope=requirement
            )
            start_response(f"{status} {_REASONS.get(status, '')}".rstrip(), answer)
            return [body]
        except BaseException:
            reset()
            raise
        if isinstance(result, list | tuple):
            reset()
            return result
        return _Closing(result, reset)


class _Closing:
    """Keeps the request's Access current while a streaming body is produced."""

    def __init__(self, inner: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()
