"""WSGI middleware for Flask, Django and any WSGI app, over the same enforcement core.

The ``Access`` reaches the app in ``environ["iamscope.access"]`` and
:func:`iamscope.current`; the ContextVar stays set while a streaming body is produced
and is reset when the server closes the response. An allowed request is audited once
the app has answered (:meth:`IAMScope.finish`), so that a refusal inside it is the
request's one event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import get_current_span

from iamscope.engine.answers import status_line
from iamscope.engine.decision import request_decision
from iamscope.engine.engine import IAMScope
from iamscope.errors import AccessDenied, TokenError
from iamscope.telemetry.context import recording_span
from iamscope.telemetry.spans import (
    refusal_span,
    strip_inbound_baggage,
    tag,
    warn_if_untraced,
)
from iamscope.web.refusal import Answer, answer_for, error_of, refuse_late

__all__ = ["IAMScopeWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


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
        iam = self.iamscope
        path = environ.get("PATH_INFO", "")
        if iam.is_public(path):
            return self.app(environ, start_response)
        headers = [
            (name, value.encode("latin-1"))
            for key, name in self._keys
            if isinstance(value := environ.get(key), str)
        ]
        method = environ.get("REQUEST_METHOD", "GET")
        # The same fast path as the ASGI shell: an allowed cache hit, else the full decision.
        decision = iam.peek(headers)
        if decision is None:
            decision = iam.decide(headers, method, path, final=False)
        span = recording_span()
        recording = span is not None
        if span is not None:
            tag(span, decision)
        if not decision.allowed:
            answer = answer_for(iam, error_of(decision), decision.decision_id)
            if not recording:
                # Flask's and Django's instrumentors start the server span inside the
                # app, which a refused request never reaches: the refusal makes its own.
                refusal_span(decision, method, path, answer[0], _reader(environ))
            return _send(start_response, answer)
        environ["iamscope"] = iam  # for decorators: the app's answer hook
        environ["iamscope.decision"] = decision
        environ["iamscope.access"] = decision.access
        stripped = strip_inbound_baggage() if iam.telemetry.strip_baggage else None
        token = request_decision.set(decision)

        def reset() -> None:
            request_decision.reset(token)
            if stripped is not None:
                otel_context.detach(stripped)
            if not recording and decision.cache != "hit":
                warn_if_untraced(get_current_span())

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
            return _send(start_response, refuse_late(iam, decision, exc, method, path))
        except BaseException:
            reset()
            raise
        finally:
            # The request's one audit event, unless a refusal inside the app was that
            # event. A refusal needs the app's answer, which it has by now (a body
            # streamed later cannot be refused cleanly).
            iam.finish(decision, method, path)
        if isinstance(result, list | tuple):
            reset()
            return result
        return _Closing(result, reset)


def _send(start_response: StartResponse, answer: Answer) -> list[bytes]:
    status, headers, body = answer
    start_response(status_line(status), headers)
    return [body]


def _reader(environ: Environ) -> Callable[[str], str | None]:
    """A request header by lower-case name (for trace context propagation)."""

    def read(name: str) -> str | None:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None

    return read


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
