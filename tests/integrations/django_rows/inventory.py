"""Every Django query shape of the inventory, each answered as row ids or a count."""

from __future__ import annotations

import contextlib
from typing import Any

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Sum
from django.db.models.functions import Coalesce

from tests.integrations._inventory import SALES
from tests.integrations.django_rows.models import Account, Sale


class Rollback(Exception):
    pass


def _in_rollback(work: Any) -> Any:
    """Run ``work`` in a transaction that is always rolled back; return its answer."""
    answer: list[Any] = []
    try:
        with transaction.atomic():
            answer.append(work())
            raise Rollback
    except Rollback:
        pass
    return answer[0]


def _get_all() -> list[int]:
    found = []
    for row in SALES:
        with contextlib.suppress(Sale.DoesNotExist):
            found.append(Sale.objects.get(pk=row["id"]).id)
    return found


def run_inventory() -> dict[str, Any]:
    out: dict[str, Any] = {}
    sales = Sale.objects
    out["all"] = sorted(s.id for s in sales.all())
    out["values_list"] = sorted(sales.values_list("id", flat=True))
    out["count"] = sales.count()
    out["sum"] = sales.aggregate(total=Coalesce(Sum("amount"), 0))["total"]
    out["group by"] = sorted(
        [g["region"], g["n"]]
        for g in sales.values("region").annotate(n=Count("id")).order_by()
        if g["region"] is not None
    )
    out["filter narrows"] = sorted(sales.filter(region="west").values_list("id", flat=True))
    out["get"] = _get_all()
    out["in_bulk"] = sorted(sales.in_bulk([r["id"] for r in SALES]))
    out["exists"] = sales.exists()
    out["for_access"] = sorted(Sale.plain.for_access("sales").values_list("id", flat=True))
    out["subquery"] = sorted(
        sales.filter(id__in=Sale.objects.values("id")).values_list("id", flat=True)
    )
    out["exists subquery"] = sorted(
        Account.objects.filter(Exists(Sale.objects.filter(account_id=OuterRef("pk")))).values_list(
            "id", flat=True
        )
    )
    out["union"] = sorted(
        i for (i,) in sales.values_list("id").union(sales.filter(amount__gt=0).values_list("id"))
    )
    out["accounts"] = sorted(a.id for a in Account.objects.all())
    out["related manager"] = sorted(s.id for a in Account.objects.all() for s in a.sales.all())
    out["prefetch"] = sorted(
        s.id for a in Account.objects.prefetch_related("sales") for s in a.sales.all()
    )
    out["prefetch object"] = sorted(
        s.id
        for a in Account.objects.prefetch_related(Prefetch("sales", to_attr="loaded"))
        for s in a.loaded
    )
    out["forward fk"] = sorted(_forward_accounts())
    out["select_related"] = sorted(s.id for s in sales.select_related("account"))
    out["update rowcount"] = _in_rollback(lambda: sales.update(account_id=F("account_id")))
    out["delete count"] = _in_rollback(lambda: sales.all().delete()[1].get("django_rows.Sale", 0))
    return out


def _forward_accounts() -> list[int]:
    """``sale.account`` goes through the base manager, the filtered one here."""
    seen = []
    for sale in Sale.objects.all():
        with contextlib.suppress(Account.DoesNotExist):
            seen.append(sale.account.id)
    return seen


def _outcome(work: Any) -> str:
    from iamscope.errors import AccessDenied

    try:
        _in_rollback(work)
    except AccessDenied as exc:
        return f"denied {exc.requirement}"
    return "ok"


def run_writes() -> dict[str, str]:
    """Instance writes under the caller's plan (the test calls it as the east analyst)."""
    east = next(r for r in SALES if r["region"] == "east")
    west = next(r for r in SALES if r["region"] == "west")

    def move_mine_west() -> None:
        sale = Sale.objects.get(pk=east["id"])
        sale.region = "west"
        sale.save()

    def touch_mine() -> None:
        sale = Sale.objects.get(pk=east["id"])
        sale.amount = 1
        sale.save()

    def overwrite_hidden() -> None:  # a west row's pk, written blind with east values
        Sale(id=west["id"], region="east", account_id=1, amount=1).save()

    return {
        "touch mine": _outcome(touch_mine),
        "move mine west": _outcome(move_mine_west),
        "create east": _outcome(lambda: Sale.objects.create(region="east", account_id=1)),
        "create west": _outcome(lambda: Sale.objects.create(region="west", account_id=1)),
        "overwrite hidden": _outcome(overwrite_hidden),
        "delete mine": _outcome(lambda: Sale.objects.get(pk=east["id"]).delete()),
        "delete hidden": _outcome(lambda: Sale(id=west["id"], account_id=1).delete()),
        "update amount": _outcome(lambda: Sale.objects.update(amount=1)),
        "update region": _unsupported(lambda: Sale.objects.update(region="west")),
        "bulk_update region": _unsupported(move_all_west),
        "bulk_create east": _outcome(
            lambda: Sale.objects.bulk_create([Sale(region="east", account_id=1)])
        ),
        "bulk_create west": _outcome(
            lambda: Sale.objects.bulk_create([Sale(region="west", account_id=1)])
        ),
    }


def create_many(region: str) -> None:
    Sale.objects.bulk_create([Sale(region=region, account_id=1), Sale(region="east", account_id=1)])


def move_all_west() -> None:
    sales = list(Sale.objects.all())
    for sale in sales:
        sale.region = "west"
    Sale.objects.bulk_update(sales, ["region"])


def _unsupported(work: Any) -> str:
    from iamscope.errors import PlanUnsupported

    try:
        _in_rollback(work)
    except PlanUnsupported:
        return "refused"
    return "ran"
