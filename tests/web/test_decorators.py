"""``require(...)`` (web/decorators.py): one check behind every way of protecting a
handler, refusals answered and audited under the request's decision id, and answered
with a fresh id when no middleware stands in front."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import IAMScope, require
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from tests.web.test_asgi import get, make_app, problem


def test_requirements_answer_403_naming_what_is_missing(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    app = make_app(iam)
    analyst = local_issuer.mint(groups=["sales-east"])
    assert get(app, "/sales", analyst).status_code == 200
    assert get(app, "/traces/checkout", analyst).json() == {"project": "checkout"}
    denied = get(app, "/traces/payments", analyst)
    assert denied.status_code == 403
    body = problem(denied)
    assert body["code"] == "trace_scope_required" and body["requirement"] == "trace:read"
    admin_only = get(app, "/admin", analyst)
    assert admin_only.status_code == 403
    assert problem(admin_only)["code"] == "role_required"
    assert admin_only.headers["www-authenticate"] == (
        'Bearer realm="iamscope", error="insufficient_scope", scope="role:admin"'
    )
    nobody = local_issuer.mint(groups=["marketing"])
    assert problem(get(app, "/sales", nobody))["code"] == "permission_required"
    assert get(app, "/admin", local_issuer.mint(groups=["admins"])).json() == {"admin": True}


def test_a_decorator_refusal_is_the_request_s_one_audit_event(
    iam: IAMScope, local_issuer: LocalIssuer, sink: ListSink
) -> None:
    app = make_app(iam)
    token = local_issuer.mint(groups=["sales-east"])
    for _ in range(2):  # a miss, then a cache hit: both end as one deny
        denied = get(app, "/admin", token)
        assert denied.status_code == 403
        (refused,) = [e for e in sink.events if e["decision_id"] == problem(denied)["decision_id"]]
        assert refused["decision"] == "deny" and refused["code"] == "role_required"
        assert refused["roles"] == ["analyst"]
    assert [e["decision"] for e in sink.events] == ["deny", "deny"]


def test_a_listing_requirement_cannot_pretend_to_narrow_by_environment() -> None:
    with pytest.raises(ValueError, match="cannot narrow by environment"):
        require(trace="write", project="*", environment="production")


def test_without_the_middleware_a_requirement_asks_for_credentials() -> None:
    @require(permission="sales:read")
    async def sales(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/sales", sales)])
    response = get(app, "/sales")
    assert response.status_code == 401
    body = problem(response)
    assert body["code"] == "token_missing" and len(body["decision_id"]) == 22
