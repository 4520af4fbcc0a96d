"""RowsManager: every Django query shape carries the request's row plan, for every
persona of the inventory, against a brute-force answer (SQLite, in a process of its
own because Django's settings are configured once per process)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests._script import run_json_script
from tests.integrations._inventory import PERSONAS, Expected

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json

import django
from django.conf import settings

settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=["tests.integrations.django_rows"],
    ROOT_URLCONF="tests.integrations.django_rows.urls",
    ALLOWED_HOSTS=["localhost"],
    USE_TZ=True,
    DEBUG_PROPAGATE_EXCEPTIONS=True,  # a failure shows its traceback, not a 500 page
)
django.setup()

import httpx
from django.core.wsgi import get_wsgi_application
from django.db import connection

from iamscope import IAMScopeWSGIMiddleware
from iamscope.errors import AccessDenied
from iamscope.testing import LocalIssuer
from tests._script import run_json_script
from tests.integrations._inventory import ACCOUNTS, PERSONAS, SALES, inventory_iam
from tests.integrations.django_rows.inventory import run_inventory
from tests.integrations.django_rows.models import Account, Sale

with connection.schema_editor() as editor:
    editor.create_model(Account)
    editor.create_model(Sale)
# Filled in plain SQL: the rows exist whatever anyone may see.
with connection.cursor() as cursor:
    cursor.executemany(
        "INSERT INTO django_rows_account (id, name) VALUES (%s, %s)",
        [(a["id"], a["name"]) for a in ACCOUNTS],
    )
    cursor.executemany(
        "INSERT INTO django_rows_sale (id, region_code, account_id, amount) "
        "VALUES (%s, %s, %s, %s)",
        [(s["id"], s["region"], s["account_id"], s["amount"]) for s in SALES],
    )

results = {"outside": run_inventory()}
with LocalIssuer() as issuer:
    iam = inventory_iam(issuer)
    app = IAMScopeWSGIMiddleware(get_wsgi_application(), iam)
    try:
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url="http://localhost") as http:
            for persona, (groups, _, _) in PERSONAS.items():
                token = issuer.mint(groups=groups)
                answer = http.get("/inventory", headers={"authorization": "Bearer " + token})
                results[persona] = answer.json() if answer.status_code == 200 else answer.text
            east = "Bearer " + issuer.mint(groups=["sales-east"])
            results["writes"] = http.get("/writes", headers={"authorization": east}).json()
    finally:
        iam.close()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def answers() -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the script configures its own settings
    results: dict[str, Any] = run_json_script(SCRIPT, env)
    return results


def expected(persona: str) -> dict[str, Any]:
    e = Expected(persona)
    return {
        "all": e.sales,
        "values_list": e.sales,
        "count": e.count,
        "sum": e.total,
        "group by": e.by_region,
        "filter narrows": e.west,
        "get": e.sales,
        "in_bulk": e.sales,
        "exists": bool(e.sales),
        "for_access": e.sales,
        "subquery": e.sales,
        "exists subquery": e.accounts_with_sales,
        "union": e.sales,
        "accounts": e.accounts,
        "related manager": e.joined,
        "prefetch": e.joined,
        "prefetch object": e.joined,
        "forward fk": e.sale_accounts,
        "select_related": e.sales,
        "update rowcount": e.count,
        "delete count": e.count,
    }


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_django_query_shape_sees_exactly_the_plan(
    answers: dict[str, Any], persona: str
) -> None:
    assert answers[persona] == expected(persona)


def test_outside_a_request_django_sees_nothing(answers: dict[str, Any]) -> None:
    assert answers["outside"] == {**expected("unbound"), "accounts": []}


def test_instance_writes_stay_inside_the_plan(answers: dict[str, Any]) -> None:
    assert answers["writes"] == {
        "touch mine": "ok",
        "move mine west": "denied rows:sales",
        "create east": "ok",
        "create west": "denied rows:sales",
        "overwrite hidden": "denied rows:sales",
        "delete mine": "ok",
        "delete hidden": "denied rows:sales",
        "update amount": "ok",
        "update region": "refused",
        "bulk_update region": "refused",
        "bulk_create east": "ok",
        "bulk_create west": "denied rows:sales",
    }
