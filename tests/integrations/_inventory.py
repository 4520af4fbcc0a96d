"""The data-path inventory shared by the integration tests: one policy, one data set,
personas, and what each persona may see, written out by hand in plain Python (never
through an iamscope renderer) so that a renderer or hook that widens a plan fails."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from iamscope import IAMScope
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer

POLICY: dict[str, Any] = {
    "version": "inventory-1",
    "attributes": {"region": {"multi": True}},
    "roles": {
        "analyst": {
            "permissions": ["sales:read"],
            "rows": {"sales": {"region": "$region"}, "accounts": "all"},
        },
        # An OR of an AND with <> and >=, and an IS NULL: NULL handling on every path.
        "auditor": {
            "permissions": ["sales:read"],
            "rows": {
                "sales": [{"amount": {"ge": 4000}, "region": {"ne": "north"}}, {"region": None}],
                "accounts": "all",
            },
        },
        "admin": {"permissions": ["*"], "rows": {"sales": "all", "accounts": "all"}},
    },
    "bindings": [
        {"groups": ["sales-east"], "roles": ["analyst"], "attributes": {"region": ["east"]}},
        {"groups": ["sales-west"], "roles": ["analyst"], "attributes": {"region": ["west"]}},
        # Bound to the role but given no region: the rule grants nothing.
        {"groups": ["analysts-no-region"], "roles": ["analyst"]},
        {"groups": ["auditors"], "roles": ["auditor"]},
        {"groups": ["admins"], "roles": ["admin"]},
    ],
}

REGIONS = ("east", "west", "north", None)
ACCOUNTS = [{"id": i, "name": f"account-{i}"} for i in range(1, 5)]
SALES = [
    {
        "id": i,
        "region": REGIONS[i % 4],
        "account_id": 1 + (i * 7) % 4,
        # Every fifth amount is unknown; the others straddle the auditor's 4000 line.
        "amount": None if i % 5 == 0 else (i * 613) % 9000,
    }
    for i in range(1, 49)
]

Row = Mapping[str, Any]


def _auditor(row: Row) -> bool:
    big = row["amount"] is not None and row["amount"] >= 4000
    return (big and row["region"] is not None and row["region"] != "north") or row["region"] is None


#: persona → (groups, or None for "no request at all"; sales rule; may see accounts)
PERSONAS: dict[str, tuple[list[str] | None, Callable[[Row], bool], bool]] = {
    "east": (["sales-east"], lambda r: r["region"] == "east", True),
    "west": (["sales-west"], lambda r: r["region"] == "west", True),
    "east+west": (["sales-east", "sales-west"], lambda r: r["region"] in ("east", "west"), True),
    "auditor": (["auditors"], _auditor, True),
    "admin": (["admins"], lambda r: True, True),
    "no-region": (["analysts-no-region"], lambda r: False, True),
    "unbound": (["marketing"], lambda r: False, False),
}


def visible_sales(persona: str) -> list[int]:
    """The ids a persona may see, by brute force over every row."""
    keep = PERSONAS[persona][1]
    return sorted(row["id"] for row in SALES if keep(row))


def visible_accounts(persona: str) -> list[int]:
    return [a["id"] for a in ACCOUNTS] if PERSONAS[persona][2] else []


def inventory_iam(issuer: LocalIssuer, **settings: Any) -> IAMScope:
    return IAMScope([issuer.issuer_config()], PolicyStore(POLICY), hash_key=b"k" * 32, **settings)


class Expected:
    """The figures every query shape is checked against, for one persona."""

    def __init__(self, persona: str) -> None:
        self.sales = visible_sales(persona)
        self.accounts = visible_accounts(persona)
        rows = [r for r in SALES if r["id"] in self.sales]
        self.count = len(rows)
        self.total = sum(r["amount"] or 0 for r in rows)
        regions: dict[str, int] = {}
        for r in rows:
            if r["region"] is not None:
                regions[r["region"]] = regions.get(r["region"], 0) + 1
        self.by_region = sorted([k, v] for k, v in regions.items())
        self.west = [r["id"] for r in rows if r["region"] == "west"]
        # A sale reached from its account needs both visible.
        self.joined = self.sales if self.accounts else []
        self.accounts_with_sales = sorted({r["account_id"] for r in rows} & set(self.accounts))
        self.sale_accounts = sorted(r["account_id"] for r in rows) if self.accounts else []
