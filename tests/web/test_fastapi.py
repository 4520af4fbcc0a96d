"""FastAPI: dependencies, the OpenAPI security scheme, answers through the middleware."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI

from iamscope import IAMScope, IAMScopeMiddleware
from iamscope.policy import Access
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from iamscope.web.fastapi import requires
from tests._http import get
from tests.web._engine import engine


@pytest.fixture
def iam(local_issuer: LocalIssuer) -> Iterator[IAMScope]:
    scope = engine(local_issuer, optional=True)
    yield scope
    scope.close()


def make_app(iam: IAMScope) -> Any:
    api = FastAPI()

    @api.get("/sales")
    async def sales(access: Access = Depends(requires(permission="sales:read"))) -> Any:
        return {"roles": sorted(access.roles)}

    @api.get("/traces/{project}")
    def traces(
        project: str,
        access: Access = Depends(requires(trace="read", project_param="project")),
    ) -> Any:
        return {"project": project}

    @api.get("/me")
    async def me(access: Access = Depends(requires())) -> Any:
        return {"owner": access.owner}

    @api.get("/public")
    async def public() -> Any:
        return {"ok": True}

    api.add_middleware(IAMScopeMiddleware, iamscope=iam)
    return api


def test_dependencies_check_and_return_the_access(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    app = make_app(iam)
    analyst = local_issuer.mint(groups=["sales-east"])
    assert get(app, "/sales", analyst).json() == {"roles": ["analyst"]}
    assert get(app, "/traces/checkout", analyst).json() == {"project": "checkout"}
    assert get(app, "/me", analyst).json() == {"owner": "sales"}
    denied = get(app, "/traces/payments", analyst)
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["code"] == "trace_scope_required"
    nobody = local_issuer.mint(groups=["marketing"])
    assert get(app, "/sales", nobody).json()["code"] == "permission_required"


def test_dependency_refusals_link_the_answer_and_the_audit_event(
    local_issuer: LocalIssuer,
) -> None:
    sink = ListSink()
    iam = engine(local_issuer, sink)
    denied = get(make_app(iam), "/sales", local_issuer.mint(groups=["marketing"]))
    iam.close()
    assert denied.status_code == 403
    (refused,) = sink.events  # the request's one event: its final decision
    assert refused["decision"] == "deny" and refused["code"] == "permission_required"
    assert refused["decision_id"] == denied.json()["decision_id"]


def test_anonymous_requests_reach_public_routes_only(iam: IAMScope) -> None:
    app = make_app(iam)
    assert get(app, "/public").json() == {"ok": True}
    missing = get(app, "/me")
    assert missing.status_code == 401 and missing.json()["code"] == "token_missing"
    assert missing.headers["www-authenticate"] == 'Bearer realm="iamscope"'


def test_openapi_documents_the_bearer_scheme(iam: IAMScope) -> None:
    schema = get(make_app(iam), "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["iamscope"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from one of the configured issuers.",
    }
    assert schema["paths"]["/sales"]["get"]["security"] == [{"iamscope": []}]
    assert "security" not in schema["paths"]["/public"]["get"]
