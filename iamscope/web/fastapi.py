"""FastAPI: requirements as dependencies, documented as a bearer security scheme.

    from fastapi import Depends, FastAPI
    from iamscope.web.fastapi import requires

    @app.get("/sales")
    async def sales(access: Access = Depends(requires(permission="sales:read"))): ...

The dependency reads the ``Access`` the ASGI middleware attached, applies the same
check as ``require(...)``, and declares an HTTP bearer scheme so OpenAPI (and the docs
UI) show that the route needs a token. A failed check raises
:class:`~iamscope.errors.AccessDenied`, which the middleware answers as a 403 problem.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from iamscope.errors import TokenMissing
from iamscope.policy.access import Access
from iamscope.web.decorators import Requirement, require

__all__ = ["requires"]

_BEARER = HTTPBearer(
    auto_error=False,  # iamscope answers, with its own codes, not FastAPI's 403
    scheme_name="iamscope",
    description="A token from one of the configured issuers.",
)


def requires(
    requirement: Requirement | None = None, /, **kwargs: Any
) -> Callable[..., Awaitable[Access]]:
    """A FastAPI dependency returning the request's Access once ``requirement`` holds.

    Takes a :class:`Requirement` or the keyword arguments of :func:`require`; with
    neither, it only asks for an authenticated principal.
    """
    wanted = requirement if requirement is not None else require(**kwargs)

    async def dependency(
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(_BEARER),
    ) -> Access:
        access: Access | None = request.scope.get("iamscope.access")
        if access is None:
            raise TokenMissing("this resource needs credentials")
        wanted.check(access, dict(request.path_params))
        return access

    return dependency
