"""Contract 7 through the real middlewares (ASGI, WSGI, FastAPI): one audit event per
request, carrying its final decision; allowed cache hits summarised by default."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.responses import JSONResponse

from iamscope import IAMScope, IAMScopeMiddleware, IAMScopeWSGIMiddleware, require
from iamscope.errors import RoleRequired
from iamscope.policy import Access
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from iamscope.web.fastapi import requires
from tests.web._engine import engine
from tests.web.test_asgi import get, make_app


def fastapi_app(iam: IAMScope) -> Any:
    api = FastAPI()

    @api.get("/admin")
    async def admin(access: Access = Depends(requires(roles=["admin"]))) -> Any:
        return {"admin": True}

    @api.get("/sales")
    async def sales(access: Access = Depends(requires(permission="sales:read"))) -> Any:
        return {"ok": True}

    api.add_middleware(IAMScopeMiddleware, iamscope=iam)
    return api


def wsgi_app(iam: IAMScope) -> Any:
    """A plain WSGI app: ``require(...)`` raises, the middleware answers."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/admin":
            require(roles=["admin"]).check(environ["iamscope.access"])
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    return IAMScopeWSGIMiddleware(app, iam)


def wsgi_get(app: Any, path: str, token: str) -> httpx.Response:
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        return client.get(path, headers={"authorization": f"Bearer {token}"})


def call(kind: str, iam: IAMScope, path: str, token: str) -> httpx.Response:
    if kind == "asgi":
        return get(make_app(iam), path, token)
    if kind == "fastapi":
        return get(fastapi_app(iam), path, token)
    return wsgi_get(wsgi_app(iam), path, token)


SHELLS = ["asgi", "fastapi", "wsgi"]


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("audit_hits", [1.0, "summary"])
def test_a_late_refusal_is_the_request_s_one_event(
    kind: str, audit_hits: float | str, local_issuer: LocalIssuer
) -> None:
    sink = ListSink()
    iam = engine(local_issuer, sink, audit_hits=audit_hits)
    analyst = local_issuer.mint(groups=["sales-east"])
    answers = [call(kind, iam, "/admin", analyst) for _ in range(3)]  # a miss, then hits
    iam.close()  # reports the summary, if any
    assert [a.status_code for a in answers] == [403, 403, 403]
    # Three denials, each under its answer's id; no allow for them, not even summarised.
    assert [(e["decision"], e["code"]) for e in sink.events] == [("deny", "role_required")] * 3
    assert [e["decision_id"] for e in sink.events] == [a.json()["decision_id"] for a in answers]
    assert [e["cache"] for e in sink.events] == ["miss", "hit", "hit"]


@pytest.mark.parametrize("kind", SHELLS)
def test_allowed_requests_are_one_event_each_or_one_summary(
    kind: str, local_issuer: LocalIssuer
) -> None:
    sink = ListSink()
    iam = engine(local_issuer, sink, summary_interval=3600)
    assert iam.audit_hits == "summary"  # the default: hits summarised
    analyst = local_issuer.mint(groups=["sales-east"])
    path = "/" if kind == "wsgi" else "/sales"
    for _ in range(4):
        assert call(kind, iam, path, analyst).status_code == 200
    # The first decision for the token is an event at once; the hits wait for the summary.
    assert [(e["decision"], e["cache"], e["count"]) for e in sink.events] == [("allow", "miss", 1)]
    iam.flush_audit()  # now, not at the end of the interval
    assert [(e["decision"], e["cache"], e["count"]) for e in sink.events[1:]] == [
        ("allow", "hit", 3)
    ]
    assert sink.events[1]["path"] == path
    assert call(kind, iam, path, analyst).status_code == 200
    iam.close()  # reports what came after the flush, once
    assert [(e["cache"], e["count"]) for e in sink.events[2:]] == [("hit", 1)]


@pytest.mark.parametrize("kind", SHELLS)
def test_every_hit_audited_is_one_allow_per_request(kind: str, local_issuer: LocalIssuer) -> None:
    sink = ListSink()
    iam = engine(local_issuer, sink, audit_hits=1.0)
    analyst = local_issuer.mint(groups=["sales-east"])
    path = "/" if kind == "wsgi" else "/sales"
    for _ in range(3):
        assert call(kind, iam, path, analyst).status_code == 200
    iam.close()
    assert [(e["decision"], e["cache"]) for e in sink.events] == [
        ("allow", "miss"),
        ("allow", "hit"),
        ("allow", "hit"),
    ]
    assert len({e["decision_id"] for e in sink.events}) == 3


def test_a_refusal_raised_after_the_answer_started_leaves_the_request_allowed(
    local_issuer: LocalIssuer,
) -> None:
    """Too late to answer: the request is what was sent, and its one event says allow."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse({"partial": True})(scope, receive, send)
        raise RoleRequired("too late", requirement="role:admin")

    sink = ListSink()
    iam = engine(local_issuer, sink, audit_hits=1.0)
    answer = get(IAMScopeMiddleware(app, iam), "/late", local_issuer.mint(groups=["sales-east"]))
    iam.close()
    assert answer.status_code == 200
    assert [e["decision"] for e in sink.events] == ["allow"]
