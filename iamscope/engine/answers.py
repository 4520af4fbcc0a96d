"""Refusals as HTTP answers (contract 4): RFC 6750 ``WWW-Authenticate`` and an RFC 9457
``application/problem+json`` body with a stable ``code`` and the ``decision_id``.

Framework-free: (status, headers, body) for the web shells and the decorators to send
in their own terms. The one table of HTTP reason phrases lives here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from iamscope.errors import AccessDenied, IAMScopeError, KeysUnavailable, RevocationsUnavailable

__all__ = ["REASONS", "Answer", "denial", "status_line"]

#: A hook to render refusals your way; the default is :func:`denial`.
Answer = Callable[..., tuple[int, list[tuple[str, str]], bytes]]

#: Every status a refusal can have, with its reason phrase.
REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_line(status: int) -> str:
    """WSGI's ``"401 Unauthorized"`` (a status a custom answer hook invents goes bare)."""
    return f"{status} {REASONS.get(status, '')}".rstrip()


def denial(
    error: IAMScopeError, decision_id: str, *, realm: str = "iamscope", scope: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for a refused request, per RFC 6750 and RFC 9457.

    Never a 500 for bad input: anything that is not a known 400/401/403/503 fault is
    answered as the server error it is, without details.
    """
    status = error.status if error.status in REASONS else 500
    headers = [("content-type", "application/problem+json"), ("cache-control", "no-store")]
    if status in (400, 401, 403):
        challenge = f'Bearer realm="{realm}"'
        if error.error:
            challenge += f', error="{error.error}"'
        if status == 403 and scope:
            challenge += f', scope="{scope}"'
        headers.append(("www-authenticate", challenge))
    if isinstance(error, KeysUnavailable | RevocationsUnavailable):
        # KeysUnavailable says when the next key fetch may happen (contract 9).
        wait = error.retry_after if error.retry_after is not None else 5.0
        headers.append(("retry-after", str(max(1, math.ceil(wait)))))
    body = {
        "type": "about:blank",
        "title": REASONS[status],
        "status": status,
        "code": error.code if status != 500 else "internal_error",
        "detail": error.message if status != 500 else "internal error",
        "decision_id": decision_id,
    }
    if isinstance(error, AccessDenied) and error.requirement:
        body["requirement"] = error.requirement
    return status, headers, json.dumps(body).encode()
