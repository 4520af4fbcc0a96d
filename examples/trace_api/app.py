"""A trace-query API: every answer is cut to the caller's trace scope.

    IAMSCOPE_CONFIG=examples/policy/iamscope.yaml IAMSCOPE_HASH_KEY=... \
        uvicorn examples.trace_api.app:create_app --factory

``GET /traces?project=&environment=``  summaries the caller may read, optionally narrowed
``GET /traces/{trace_id}``             one summary; 404 when missing *or* out of scope
``GET /projects``                      projects the caller may read (``*``: every project)
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import IAMScope, IAMScopeMiddleware
from iamscope.policy import Access

# Stands in for the tracing backend's index of trace summaries.
TRACES: tuple[dict[str, Any], ...] = (
    {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "project": "checkout",
        "environment": "production",
        "service": "checkout-api",
        "duration_ms": 182,
        "root_span": "POST /cart/checkout",
    },
    {
        "trace_id": "a3ce929d0e0e47364bf92f3577b34da6",
        "project": "checkout",
        "environment": "production",
        "service": "cart",
        "duration_ms": 41,
        "root_span": "GET /cart",
    },
    {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "project": "checkout",
        "environment": "production",
        "service": "checkout-api",
        "duration_ms": 2310,
        "root_span": "POST /cart/checkout",
    },
    {
        "trace_id": "8448eb211c80319c0af7651916cd43dd",
        "project": "checkout",
        "environment": "staging",
        "service": "checkout-api",
        "duration_ms": 95,
        "root_span": "POST /cart/checkout",
    },
    {
        "trace_id": "b7ad6b7169203331b7ad6b7169203331",
        "project": "checkout",
        "environment": "staging",
        "service": "cart",
        "duration_ms": 12,
        "root_span": "GET /cart",
    },
    {
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "project": "payments",
        "environment": "production",
        "service": "payments-gateway",
        "duration_ms": 640,
        "root_span": "POST /charges",
    },
    {
        "trace_id": "d269b633813fc60c5b8efff798038103",
        "project": "payments",
        "environment": "production",
        "service": "fraud-check",
        "duration_ms": 88,
        "root_span": "score",
    },
    {
        "trace_id": "eee19b7ec3c1b1745b8efff798038103",
        "project": "payments",
        "environment": "staging",
        "service": "payments-gateway",
        "duration_ms": 702,
        "root_span": "POST /charges",
    },
    {
        "trace_id": "c3c1b174eee19b7ed269b633813fc60c",
        "project": "payments",
        "environment": "staging",
        "service": "refunds",
        "duration_ms": 230,
        "root_span": "POST /refunds",
    },
    {
        "trace_id": "1f3c5a7e9b2d4f6081a3c5e7092b4d6f",
        "project": "search",
        "environment": "production",
        "service": "search-api",
        "duration_ms": 37,
        "root_span": "GET /search",
    },
    {
        "trace_id": "81a3c5e7092b4d6f1f3c5a7e9b2d4f60",
        "project": "search",
        "environment": "production",
        "service": "indexer",
        "duration_ms": 5120,
        "root_span": "reindex",
    },
    {
        "trace_id": "9b2d4f6081a3c5e71f3c5a7e092b4d6f",
        "project": "search",
        "environment": "staging",
        "service": "search-api",
        "duration_ms": 44,
        "root_span": "GET /search",
    },
)

# One body for "no such trace" and "not yours": a difference would reveal that a trace
# exists in a project the caller cannot read.
NOT_FOUND = {"code": "trace_not_found", "detail": "no such trace"}


def _access(request: Request) -> Access:
    access: Access | None = request.state.access
    assert access is not None  # the middleware refused the request otherwise
    return access


def _readable(request: Request) -> list[dict[str, Any]]:
    """Scope first, query second: a query parameter can only narrow, never widen."""
    return _access(request).traces.filter(TRACES, "read")


async def list_traces(request: Request) -> JSONResponse:
    traces = _readable(request)
    for name in ("project", "environment"):
        wanted = request.query_params.get(name)
        if wanted:  # absent or empty: not narrowed on this dimension
            traces = [t for t in traces if t[name] == wanted]
    return JSONResponse({"traces": traces})


async def get_trace(request: Request) -> JSONResponse:
    trace_id = request.path_params["trace_id"]
    for trace in _readable(request):
        if trace["trace_id"] == trace_id:
            return JSONResponse(trace)
    return JSONResponse(NOT_FOUND, status_code=404)


async def list_projects(request: Request) -> JSONResponse:
    return JSONResponse({"projects": sorted(_access(request).traces.projects("read"))})


def create_app(iam: IAMScope | None = None) -> Starlette:
    routes = [
        Route("/traces", list_traces),
        Route("/traces/{trace_id}", get_trace),
        Route("/projects", list_projects),
    ]
    # The line iamscope adds to an existing Starlette app:
    iam = iam or IAMScope.from_config()  # IAMSCOPE_CONFIG names the config file
    return Starlette(routes=routes, middleware=[Middleware(IAMScopeMiddleware, iamscope=iam)])
