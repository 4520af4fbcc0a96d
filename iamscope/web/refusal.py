"""One refusal path for every web shell: which answer a refused request gets, and the
audit of a refusal made after the middleware let the request in.

The ASGI and WSGI middlewares and the decorators differ only in how they send the
(status, headers, body) this module gives them.
"""

from __future__ import annotations

from iamscope.engine.answers import denial
from iamscope.engine.decision import Decision, new_decision_id
from iamscope.engine.engine import IAMScope
from iamscope.errors import AccessDenied, IAMScopeError

__all__ = ["Answer", "answer_for", "error_of", "refuse_late", "requirement_of"]

Answer = tuple[int, list[tuple[str, str]], bytes]


def requirement_of(error: IAMScopeError) -> str | None:
    """The RFC 6750 ``scope`` a 403 names: the requirement that was not met."""
    return error.requirement if isinstance(error, AccessDenied) else None


def answer_for(iam: IAMScope | None, error: IAMScopeError, decision_id: str | None) -> Answer:
    """The app's answer to ``error`` (its ``answer`` hook); with no engine in front
    (a decorator without the middleware), the default answer under a fresh id."""
    if iam is None or decision_id is None:
        return denial(error, new_decision_id(), scope=requirement_of(error))
    result: Answer = iam.answer(error, decision_id, scope=requirement_of(error))
    return result


def error_of(decision: Decision) -> IAMScopeError:
    """Why the engine refused a request (every refusal carries its error; the fallback
    keeps a refusal a refusal)."""
    return decision.error or IAMScopeError("denied")


def refuse_late(
    iam: IAMScope, decision: Decision, error: IAMScopeError, method: str, path: str
) -> Answer:
    """A refusal after the middleware allowed the request (``require(...)``, a
    dependency): audited under the request's decision id, so the request's one audit
    event carries its final decision."""
    iam.audit_denial(decision, error, method, path)
    return answer_for(iam, error, decision.decision_id)
