"""Views: who the caller is, and the sales rows the caller's row plan keeps.

The middleware (see wsgi.py) has already refused requests without a valid token, so a
view only decides what the authenticated caller may see.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from opentelemetry import trace

from iamscope import current, require
from iamscope.policy import Access, to_predicate

# In a real project these come from the database; the row plan would then be rendered
# as SQL (iamscope.policy.to_sql) rather than applied in Python.
SALES: tuple[dict[str, Any], ...] = (
    {"id": "east-1", "region": "east", "amount": 1200},
    {"id": "east-2", "region": "east", "amount": 800},
    {"id": "west-1", "region": "west", "amount": 950},
    {"id": "north-1", "region": "north", "amount": 400},
    {"id": "unassigned-1", "region": None, "amount": 60},  # NULL: only "all" plans keep it
)
# An allow-list: a policy rule on any other column is refused instead of read blindly.
SALES_COLUMNS = ("region", "amount")


def _access() -> Access:
    access = current()
    assert access is not None  # the middleware refused the request otherwise
    return access


def whoami(request: HttpRequest) -> JsonResponse:
    access = _access()
    # A span of the app's own: under OpenTelemetry it carries the caller's identity.
    with trace.get_tracer(__name__).start_as_current_span("whoami.lookup"):
        return JsonResponse({"roles": sorted(access.roles), "owner": access.owner})


@require(permission="sales:read")
def sales(request: HttpRequest) -> JsonResponse:
    visible = to_predicate(_access().rows_for("sales"), columns=SALES_COLUMNS)
    return JsonResponse({"rows": [row for row in SALES if visible(row)]})
