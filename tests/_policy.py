"""The small policy most tests run against: an analyst role with a row rule on
``$region`` and a trace read grant, an admin, and ten more analyst teams."""

from __future__ import annotations

from typing import Any

POLICY: dict[str, Any] = {
    "version": "v1",
    "attributes": {"region": {"multi": True}},
    "roles": {
        "analyst": {
            "permissions": ["sales:read"],
            "rows": {"sales": {"region": "$region"}},
            "traces": [{"project": "checkout", "actions": ["read"]}],
        },
        "admin": {"permissions": ["*"]},
    },
    "bindings": [
        {
            "groups": ["sales-east"],
            "roles": ["analyst"],
            "attributes": {"region": ["east"]},
            "owner": "sales",
        },
        {"groups": ["admins"], "roles": ["admin"], "owner": "platform"},
    ]
    + [
        {"groups": [f"team-{i}"], "roles": ["analyst"], "attributes": {"region": [f"r{i}"]}}
        for i in range(10)
    ],
}
