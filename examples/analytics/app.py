"""The analytics example (contract 8), and the demo's app.

    IAMSCOPE_CONFIG=iamscope.yaml uvicorn examples.analytics.app:app

    GET /whoami        any authenticated principal: who, roles, permissions, row plans,
                       trace scope, owner, with where each value came from
    GET /sales         permission sales:read: the rows the caller may see
    GET /traces        trace read scope: the trace summaries the caller may see (?project=)
    GET /admin/policy  permission policy:admin: the policy in force
    GET /health        public

``IAMSCOPE_RELOAD=2`` checks the policy file every 2 seconds and takes a change once the
file has stopped changing (unset or 0: no reload). The lines iamscope adds to this app
are marked ``# iamscope``.
"""

from __future__ import annotations

import math
import os
import sqlite3
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from examples.analytics.data import create_database
from iamscope import ConfigError, IAMScope, IAMScopeMiddleware, current, require  # iamscope
from iamscope.policy import to_sql  # iamscope

SALES_COLUMNS = ("region", "account", "amount", "day")  # what a row plan may filter on


def whoami(request: Request) -> JSONResponse:
    access = current()  # iamscope
    decision = request.scope["iamscope.decision"]
    principal = decision.principal
    assert access is not None and principal is not None  # the middleware let us in
    return JSONResponse(
        {
            "principal": {
                "issuer": principal.issuer,
                "subject": principal.subject,
                "kind": principal.kind,
                "groups": sorted(principal.groups),
            },
            **access.explain(),
        }
    )


@require(permission="sales:read")  # iamscope
def sales(request: Request) -> JSONResponse:
    access = current()
    assert access is not None
    where, params = to_sql(access.rows_for("sales"), SALES_COLUMNS)  # iamscope
    db: sqlite3.Connection = request.app.state.db
    rows = db.execute(
        f"SELECT region, account, amount, day FROM sales WHERE {where} ORDER BY id",  # noqa: S608 - the fragment is rendered with parameters
        params,
    ).fetchall()
    by_region: dict[str, int] = {}
    for region, *_ in rows:
        by_region[region] = by_region.get(region, 0) + 1
    return JSONResponse(
        {
            "count": len(rows),
            "by_region": dict(sorted(by_region.items())),
            "rows": [
                dict(zip(("region", "account", "amount", "day"), r, strict=True)) for r in rows[:20]
            ],
        }
    )


@require(trace="read", project="*")  # iamscope: some trace read scope; rows filtered below
def traces(request: Request) -> JSONResponse:
    access = current()
    assert access is not None
    db: sqlite3.Connection = request.app.state.db
    columns = ("trace_id", "project", "environment", "service", "root", "duration_ms")
    records = [dict(zip(columns, r, strict=True)) for r in db.execute("SELECT * FROM traces")]
    visible = access.traces.filter(records, "read")  # iamscope
    project = request.query_params.get("project")
    if project is not None:
        visible = [r for r in visible if r["project"] == project]
    return JSONResponse(
        {
            "count": len(visible),
            "projects": sorted({r["project"] for r in visible}),
            "traces": visible,
        }
    )


@require(permission="policy:admin")  # iamscope
def admin_policy(request: Request) -> JSONResponse:
    iam: IAMScope = request.app.state.iam
    policy = iam.policy.current
    return JSONResponse({"version": policy.version, "generation": iam.policy.generation})


def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def reload_interval(environ: Any = os.environ) -> float:
    """Seconds between policy file checks from ``IAMSCOPE_RELOAD`` (0: never)."""
    text = environ.get("IAMSCOPE_RELOAD", "").strip()
    try:
        seconds = float(text) if text else 0.0
    except ValueError:
        seconds = math.nan
    if not (0 <= seconds < math.inf):
        raise ConfigError(f"IAMSCOPE_RELOAD must be seconds between checks, not {text!r}")
    return seconds


def create_app(iam: IAMScope | None = None, db: sqlite3.Connection | None = None) -> Any:
    """The app behind the middleware; ``IAMSCOPE_CONFIG`` names the config by default."""
    iam = iam or IAMScope.from_config(public_paths=("/health",))  # iamscope
    if interval := reload_interval():
        iam.policy.watch(interval)  # iamscope: hot reload, once the file has settled
    inner = Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/sales", sales),
            Route("/traces", traces),
            Route("/admin/policy", admin_policy),
            Route("/health", health),
        ]
    )
    inner.state.db = db or create_database()
    inner.state.iam = iam
    return IAMScopeMiddleware(inner, iam)  # iamscope


class _Lazy:
    """``app`` for uvicorn: built on first use, so importing this module needs no config."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


app = _Lazy()
