"""The Django and trace-query examples, under the reference policy and a local issuer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iamscope import IAMScope
from iamscope.config import load_config
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer
from tests._http import get
from tests._script import run_json_script

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "examples" / "policy" / "iamscope.yaml"


def reference_iam(issuer: LocalIssuer) -> IAMScope:
    """The reference config with its ``corp`` issuer swapped for the local one.

    The ``ci`` issuer stays: a binding names it, and the policy is checked against the
    issuers it will serve with. It is never contacted, since no token names it.
    """
    issuers = [
        issuer.issuer_config("corp") if known.name == "corp" else known
        for known in load_config(REFERENCE).issuers
    ]
    return IAMScope(issuers, PolicyStore(REFERENCE, issuers=issuers), hash_key=b"k" * 32)


# --- Django, in a subprocess ---------------------------------------------------------------

# Django's settings are configured once per process and tests/web/test_wsgi.py has already
# configured them, so the example project runs in a process of its own and reports back.
DJANGO_SCRIPT = """
import json

import httpx

from examples.django_app.wsgi import create_application
from iamscope.testing import LocalIssuer
from tests.test_examples_more import reference_iam

CALLS = {
    "east_whoami": ("/whoami", ["sales-east"]),
    "east_sales": ("/sales", ["sales-east"]),
    "west_sales": ("/sales", ["sales-west"]),
    "admin_sales": ("/sales", ["admins"]),
    "unmapped_sales": ("/sales", ["marketing"]),
    "no_token": ("/sales", None),
}

results = {}
with LocalIssuer() as issuer:
    iam = reference_iam(issuer)
    transport = httpx.WSGITransport(app=create_application(iam))
    try:
        with httpx.Client(transport=transport, base_url="http://localhost") as http:
            for label, (path, groups) in CALLS.items():
                headers = {}
                if groups is not None:
                    headers["authorization"] = "Bearer " + issuer.mint(groups=groups)
                answer = http.get(path, headers=headers)
                results[label] = {
                    "status": answer.status_code,
                    "type": answer.headers["content-type"],
                    "challenge": answer.headers.get("www-authenticate"),
                    "body": answer.json(),
                }
    finally:
        iam.close()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def django_answers() -> dict[str, dict[str, Any]]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "examples.django_app.settings",
        # wsgi.py's module-level `application` is built from these, as in a deployment.
        "IAMSCOPE_CONFIG": str(REFERENCE),
        "IAMSCOPE_HASH_KEY": "example-key",
    }
    answers: dict[str, dict[str, Any]] = run_json_script(DJANGO_SCRIPT, env)
    return answers


def row_ids(answer: dict[str, Any]) -> list[str]:
    return [row["id"] for row in answer["body"]["rows"]]


def test_django_whoami_names_roles_and_owner(django_answers: dict[str, Any]) -> None:
    answer = django_answers["east_whoami"]
    assert answer["status"] == 200
    assert answer["body"] == {"roles": ["analyst"], "owner": "sales"}


def test_django_sales_rows_follow_the_region_attribute(django_answers: dict[str, Any]) -> None:
    east = django_answers["east_sales"]
    assert east["status"] == 200 and row_ids(east) == ["east-1", "east-2"]
    assert east["body"]["rows"][0] == {"id": "east-1", "region": "east", "amount": 1200}
    assert row_ids(django_answers["west_sales"]) == ["west-1"]
    # `rows: {sales: all}` keeps every row, the NULL region included.
    assert row_ids(django_answers["admin_sales"]) == [
        "east-1",
        "east-2",
        "west-1",
        "north-1",
        "unassigned-1",
    ]


def test_django_refuses_a_caller_without_the_permission(django_answers: dict[str, Any]) -> None:
    denied = django_answers["unmapped_sales"]
    assert denied["status"] == 403
    assert denied["type"] == "application/problem+json"
    assert denied["body"]["code"] == "permission_required"
    assert "rows" not in denied["body"]


def test_django_refuses_a_request_without_a_token(django_answers: dict[str, Any]) -> None:
    missing = django_answers["no_token"]
    assert missing["status"] == 401
    assert missing["body"]["code"] == "token_missing"
    assert missing["challenge"] == 'Bearer realm="iamscope"'


# --- trace_api, in-process -----------------------------------------------------------------

CHECKOUT_PRODUCTION = [
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "a3ce929d0e0e47364bf92f3577b34da6",
    "0af7651916cd43dd8448eb211c80319c",
]
PAYMENTS_TRACE = "5b8efff798038103d269b633813fc60c"
MISSING_TRACE = "ffffffffffffffffffffffffffffffff"


@pytest.fixture
def trace_api(local_issuer: LocalIssuer) -> Iterator[Any]:
    from examples.trace_api.app import create_app

    iam = reference_iam(local_issuer)
    yield create_app(iam)
    iam.close()


def trace_ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [trace["trace_id"] for trace in answer.json()["traces"]]


def test_analyst_sees_only_checkout_production(trace_api: Any, local_issuer: LocalIssuer) -> None:
    analyst = local_issuer.mint(groups=["sales-east"])
    answer = get(trace_api, "/traces", analyst)
    assert trace_ids(answer) == CHECKOUT_PRODUCTION
    assert {(t["project"], t["environment"]) for t in answer.json()["traces"]} == {
        ("checkout", "production")
    }
    both = get(trace_api, "/traces?project=checkout&environment=production", analyst)
    assert trace_ids(both) == CHECKOUT_PRODUCTION
    assert trace_ids(get(trace_api, "/traces?project=&environment=", analyst)) == (
        CHECKOUT_PRODUCTION
    )


def test_query_parameters_narrow_but_never_widen(trace_api: Any, local_issuer: LocalIssuer) -> None:
    analyst = local_issuer.mint(groups=["sales-east"])
    assert trace_ids(get(trace_api, "/traces?project=payments", analyst)) == []
    assert trace_ids(get(trace_api, "/traces?environment=staging", analyst)) == []
    admin = local_issuer.mint(groups=["admins"])
    assert trace_ids(get(trace_api, "/traces?project=payments&environment=staging", admin)) == [
        "eee19b7ec3c1b1745b8efff798038103",
        "c3c1b174eee19b7ed269b633813fc60c",
    ]


def test_out_of_scope_trace_is_indistinguishable_from_a_missing_one(
    trace_api: Any, local_issuer: LocalIssuer
) -> None:
    analyst = local_issuer.mint(groups=["sales-east"])
    hidden = get(trace_api, f"/traces/{PAYMENTS_TRACE}", analyst)
    missing = get(trace_api, f"/traces/{MISSING_TRACE}", analyst)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    assert hidden.headers["content-type"] == missing.headers["content-type"]
    assert hidden.json() == {"code": "trace_not_found", "detail": "no such trace"}
    # The same caller does get a trace inside the scope, and an admin gets the hidden one.
    own = get(trace_api, f"/traces/{CHECKOUT_PRODUCTION[0]}", analyst)
    assert own.status_code == 200 and own.json()["root_span"] == "POST /cart/checkout"
    admin = local_issuer.mint(groups=["admins"])
    shown = get(trace_api, f"/traces/{PAYMENTS_TRACE}", admin)
    assert shown.status_code == 200 and shown.json()["service"] == "payments-gateway"


def test_admin_sees_every_project(trace_api: Any, local_issuer: LocalIssuer) -> None:
    admin = local_issuer.mint(groups=["admins"])
    answer = get(trace_api, "/traces", admin)
    assert len(trace_ids(answer)) == 12
    assert {t["project"] for t in answer.json()["traces"]} == {"checkout", "payments", "search"}
    assert get(trace_api, "/projects", admin).json() == {"projects": ["*"]}


def test_projects_lists_the_read_scope(trace_api: Any, local_issuer: LocalIssuer) -> None:
    analyst = local_issuer.mint(groups=["sales-east"])
    assert get(trace_api, "/projects", analyst).json() == {"projects": ["checkout"]}
    # Authenticated but bound to no role: an empty scope, not an error.
    nobody = local_issuer.mint(groups=["marketing"])
    assert get(trace_api, "/projects", nobody).json() == {"projects": []}
    assert trace_ids(get(trace_api, "/traces", nobody)) == []


@pytest.mark.parametrize("path", ["/traces", f"/traces/{PAYMENTS_TRACE}", "/projects"])
def test_trace_api_needs_a_token(trace_api: Any, path: str) -> None:
    answer = get(trace_api, path)
    assert answer.status_code == 401
    assert answer.json()["code"] == "token_missing"
    assert "traces" not in answer.json()
