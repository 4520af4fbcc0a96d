"""Datasette over the analytics example's data, with iamscope as its access layer.

    IAMSCOPE_CONFIG=examples/policy/iamscope.yaml IAMSCOPE_HASH_KEY=... \\
        uvicorn examples.datasette.app:app

The reference policy decides everything: an analyst browses only the sales of their
regions — on every page, export, facet, count and canned query — an admin sees all of
them and may run SQL, the CI deployer (no ``sales:read``) sees no table at all, and the
``traces`` table, which the policy does not name, is served to no one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from examples.analytics.data import create_database
from iamscope import IAMScope
from iamscope.integrations.datasette import PUBLIC_PREFIXES, TableRule, datasette_app

#: Where the data lives; by default a generated copy of the analytics example's data.
DATABASE_ENV = "IAMSCOPE_DATASETTE_DB"
DEFAULT_DATABASE = Path(tempfile.gettempdir()) / "iamscope-datasette-analytics.db"

# The lines iamscope adds: which table is which policy dataset, and what it needs.
TABLES = {"sales": TableRule("sales", permission="sales:read")}

METADATA: dict[str, Any] = {
    "title": "Acme analytics",
    "description": "Sales by region, behind iamscope: each caller sees their plan's rows.",
    "databases": {
        "analytics": {
            "queries": {
                "sales_by_region": {
                    "title": "Sales by region",
                    "sql": "SELECT region, count(*) AS sales, round(sum(amount), 2) AS total"
                    " FROM sales GROUP BY region ORDER BY region",
                }
            }
        }
    },
}


def build_database(path: Path) -> Path:
    """The analytics data (400 sales over four regions, trace summaries) as a file."""
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        create_database(str(partial)).close()
        partial.replace(path)  # never serve a half-written file
    return path


def create_app(iam: IAMScope | None = None, database: str | Path | None = None) -> Any:
    """The Datasette app behind iamscope; ``IAMSCOPE_CONFIG`` names the config by default."""
    iam = iam or IAMScope.from_config(public_prefixes=PUBLIC_PREFIXES)  # iamscope
    path = Path(database or os.environ.get(DATABASE_ENV) or build_database(DEFAULT_DATABASE))
    return datasette_app(iam, path, TABLES, name="analytics", metadata=METADATA)  # iamscope


def __getattr__(name: str) -> Any:
    """``app`` for uvicorn, built when first asked for: importing needs no config."""
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
