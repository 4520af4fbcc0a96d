"""iamscope in an existing FastAPI app: one middleware, requirements as dependencies
(which also document the bearer scheme in OpenAPI).

    IAMSCOPE_CONFIG=examples/policy/iamscope.yaml \
        uvicorn examples.fastapi_app.app:create_app --factory
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from opentelemetry import trace

from iamscope import IAMScope, IAMScopeMiddleware
from iamscope.policy import Access
from iamscope.web.fastapi import requires


def create_app(iam: IAMScope | None = None) -> FastAPI:
    api = FastAPI(title="iamscope example")

    @api.get("/whoami")
    async def whoami(access: Access = Depends(requires())) -> Any:
        # A span of the app's own: under OpenTelemetry it carries the caller's identity.
        with trace.get_tracer(__name__).start_as_current_span("whoami.lookup"):
            return {"roles": sorted(access.roles), "owner": access.owner}

    @api.get("/sales")
    async def sales(access: Access = Depends(requires(permission="sales:read"))) -> Any:
        return {"rows": ["east-1"], "plan": access.rows_for("sales").kind}

    # The line iamscope adds to an existing FastAPI app:
    iam = iam or IAMScope.from_config(public_paths=("/openapi.json", "/docs"))
    api.add_middleware(IAMScopeMiddleware, iamscope=iam)
    return api
