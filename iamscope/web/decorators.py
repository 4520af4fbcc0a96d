"""``require(...)``: one check function behind every way of protecting a handler.

    @require(permission="sales:read")                   # any framework, sync or async
    @require(roles=["admin", "auditor"])                # any of these roles
    @require(all_roles=["analyst", "exporter"])         # all of them
    @require(trace="read", project_param="project")     # trace scope, project from the path
    @require(trace="read", project="*")                 # some trace read scope (listings)
    @require(predicate=lambda access: access.owner == "sales", name="sales team")

A failed requirement is a 403 ``insufficient_scope`` naming what was missing. The
answer is rendered where the framework wants it: Starlette endpoints return a problem
response (WebSockets close with 1008), Django views return an ``HttpResponse``, Flask
views abort with one, and anything else raises :class:`~iamscope.errors.AccessDenied`,
which the ASGI middleware turns into the same answer. The ``Access`` always comes from
:func:`iamscope.current`, set by the middleware for this request only.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from iamscope.engine.decision import Decision, current
from iamscope.errors import (
    IAMScopeError,
    PermissionRequired,
    RequirementFailed,
    RoleRequired,
    TokenMissing,
    TraceScopeRequired,
)
from iamscope.policy.access import Access
from iamscope.web.refusal import Answer, answer_for, refuse_late

__all__ = ["Requirement", "require"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Requirement:
    any_roles: tuple[str, ...] = ()
    all_roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    trace: str | None = None
    project: str | None = None
    project_param: str | None = None
    environment: str | None = None
    predicate: Callable[[Access], bool] | None = None
    name: str = "requirement"

    def check(self, access: Access | None, params: dict[str, Any] | None = None) -> None:
        """Raise the matching :class:`AccessDenied` (or TokenMissing) if not met."""
        if access is None:
            raise TokenMissing("this resource needs credentials")
        if self.any_roles and access.roles.isdisjoint(self.any_roles):
            raise RoleRequired(
                "one of these roles is required: " + ", ".join(self.any_roles),
                requirement="role:" + " ".join(self.any_roles),
            )
        for role in self.all_roles:
            if role not in access.roles:
                raise RoleRequired(f"role {role!r} is required", requirement=f"role:{role}")
        for permission in self.permissions:
            if not access.can(permission):
                raise PermissionRequired(
                    f"permission {permission!r} is required", requirement=f"permission:{permission}"
                )
        if self.trace is not None:
            project = self._project(params or {})
            if project == "*" and self.project_param is None:
                # A listing endpoint: some grant for the action; results get filtered.
                allowed = bool(access.traces.projects(self.trace))
            else:
                allowed = project is not None and access.traces.allows(
                    self.trace, project, self.environment
                )
            if not allowed:
                raise TraceScopeRequired(
                    f"trace {self.trace} access to this project is required",
                    requirement=f"trace:{self.trace}",
                )
        if self.predicate is not None and not self.predicate(access):
            raise RequirementFailed(f"{self.name} is not met", requirement=self.name)

    def _project(self, params: dict[str, Any]) -> str | None:
        if self.project_param is not None:
            value = params.get(self.project_param)
            return value if isinstance(value, str) else None
        return self.project

    # --- as a decorator ------------------------------------------------------------------

    def __call__(self, handler: F) -> F:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                refused = self._refusal(args, kwargs)
                if refused is None:
                    return await handler(*args, **kwargs)
                first: Any = args[0] if args else None
                if first is not None and _is_websocket(first):
                    await first.close(code=1008)
                    return None
                return refused()

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(handler)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            refused = self._refusal(args, kwargs)
            if refused is not None:
                return refused()
            return handler(*args, **kwargs)

        return sync_wrapper  # type: ignore[return-value]

    def _refusal(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any] | None:
        """None when allowed, else a function producing the framework's answer."""
        params = dict(kwargs)
        first = args[0] if args else None
        path_params = getattr(first, "path_params", None)
        if isinstance(path_params, dict):
            params = {**path_params, **params}
        try:
            self.check(current(), params)
        except IAMScopeError as exc:
            return functools.partial(_answer, first, exc)
        return None


def require(
    permission: str | None = None,
    *,
    roles: Iterable[str] = (),
    all_roles: Iterable[str] = (),
    permissions: Iterable[str] = (),
    trace: str | None = None,
    project: str | None = None,
    project_param: str | None = None,
    environment: str | None = None,
    predicate: Callable[[Access], bool] | None = None,
    name: str = "requirement",
) -> Requirement:
    """A requirement usable as a decorator (sync or async) or checked directly."""
    wanted = tuple(permissions) + ((permission,) if permission else ())
    if trace is not None and project is None and project_param is None:
        raise ValueError("a trace requirement needs project= or project_param=")
    if project == "*" and environment is not None:
        raise ValueError("project='*' checks for any grant; it cannot narrow by environment")
    return Requirement(
        any_roles=tuple(roles),
        all_roles=tuple(all_roles),
        permissions=wanted,
        trace=trace,
        project=project,
        project_param=project_param,
        environment=environment,
        predicate=predicate,
        name=name,
    )


# --- answers in each framework's terms ------------------------------------------------------


def _answer(first: Any, error: IAMScopeError) -> Any:
    module = type(first).__module__ if first is not None else ""
    holder = _holder(first)
    if module.startswith("starlette") or module.startswith("fastapi"):
        from starlette.responses import Response

        status, headers, body = _refused(holder, error)
        return Response(body, status_code=status, headers=dict(headers))
    if module.startswith("django"):
        from django.http import HttpResponse

        status, headers, body = _refused(holder, error)
        response = HttpResponse(body, status=status, content_type="application/problem+json")
        for key, value in headers:
            response[key] = value
        return response
    if _flask_environ() is not None:
        import flask

        status, headers, body = _refused(holder, error)
        return flask.Response(body, status=status, headers=headers)
    raise error  # the ASGI middleware answers (and audits) it


def _holder(first: Any) -> dict[str, Any] | None:
    """Where the middleware left the request's decision: the ASGI scope, Django's META
    (the WSGI environ) or Flask's environ."""
    for holder in (getattr(first, "scope", None), getattr(first, "META", None), _flask_environ()):
        if isinstance(holder, dict) and "iamscope" in holder:
            return holder
    return None


def _refused(holder: dict[str, Any] | None, error: IAMScopeError) -> Answer:
    """The refusal under the request's decision id, audited like any other decision."""
    if holder is None:  # no middleware in front: nothing to link to or audit through
        return answer_for(None, error, None)
    decision: Decision = holder["iamscope.decision"]
    method = holder.get("method") or holder.get("REQUEST_METHOD", "")
    path = holder.get("path") or holder.get("PATH_INFO", "")
    return refuse_late(holder["iamscope"], decision, error, method, path)


def _flask_environ() -> Any:
    try:
        import flask
    except ImportError:
        return None
    return flask.request.environ if flask.has_request_context() else None


def _is_websocket(first: Any) -> bool:
    return type(first).__name__ == "WebSocket" and type(first).__module__.startswith("starlette")
