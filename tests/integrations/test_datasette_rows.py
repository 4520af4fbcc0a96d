"""Datasette behind iamscope, over real HTTP (uvicorn on loopback): every persona of the
inventory on every Datasette route that can show rows, counting what each sees against
a brute-force answer. Zero rows outside the plan on any path."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from iamscope import IAMScopeMiddleware
from iamscope.errors import PlanUnsupported
from iamscope.integrations.datasette import (
    PUBLIC_PREFIXES,
    DatasetteRows,
    TableRule,
    datasette_app,
    filtered_copy,
)
from iamscope.policy import ALL, Cmp, RowPlan
from iamscope.testing import LocalIssuer
from tests._http import get
from tests.integrations._inventory import ACCOUNTS, PERSONAS, SALES, Expected, inventory_iam

DB = "inv"
TABLES = {"sales": TableRule("sales", permission="sales:read"), "accounts": "accounts"}
METADATA = {
    "databases": {
        DB: {
            "queries": {
                "big": "select id from sales where amount > :min order by id",
                # Schema-qualified: reads the snapshot's main.sales, filtered like the rest.
                "qualified": "select id from main.sales order by id",
                "reset": {"sql": "update sales set amount = 0", "write": True},
            }
        }
    }
}


def make_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT,
                            account_id INTEGER REFERENCES accounts(id), amount INTEGER);
        CREATE TABLE secrets (id INTEGER PRIMARY KEY, note TEXT);
        INSERT INTO secrets VALUES (1, 'no one is served this table');
        CREATE VIEW by_region AS SELECT region, count(*) AS n FROM sales GROUP BY region;
        CREATE VIRTUAL TABLE sales_fts USING fts5(region, content='sales', content_rowid='id');
        """
    )
    db.executemany("INSERT INTO accounts VALUES (:id, :name)", ACCOUNTS)
    db.executemany("INSERT INTO sales VALUES (:id, :region, :account_id, :amount)", SALES)
    db.execute("INSERT INTO sales_fts(sales_fts) VALUES ('rebuild')")
    db.commit()
    db.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalIssuer]]:
    path = tmp_path_factory.mktemp("datasette") / f"{DB}.db"
    make_database(path)
    with LocalIssuer() as issuer:
        iam = inventory_iam(issuer, public_prefixes=PUBLIC_PREFIXES)
        app = datasette_app(iam, path, TABLES, metadata=METADATA)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        while not uv.started and thread.is_alive():
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}", issuer
        finally:
            uv.should_exit = True
            thread.join(timeout=10)
            iam.close()


class Browser:
    """One persona's HTTP client; every answer is checked never to be a server error."""

    def __init__(self, base: str, token: str | None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base, headers=headers, timeout=30)

    def get(self, path: str) -> httpx.Response:
        answer = self.http.get(path)
        assert answer.status_code < 500, (path, answer.status_code, answer.text[:300])
        return answer

    def json(self, path: str) -> Any:
        """The JSON body of a 200, or None for a refusal (403/404, or 400 for a query
        on a table that is not in the caller's snapshot)."""
        answer = self.get(path)
        return answer.json() if answer.status_code == 200 else None


def ids_of(rows: Any) -> list[int]:
    return sorted(int(r["id"]) for r in rows or [])


def see_everything(b: Browser) -> dict[str, Any]:
    """What one persona sees on every route that can show rows."""
    out: dict[str, Any] = {}
    out["table json"] = ids_of(b.json(f"/{DB}/sales.json?_shape=array&_size=max"))
    page = b.json(f"/{DB}/sales.json")
    out["table count"] = page["filtered_table_rows_count"] if page else 0
    html = b.get(f"/{DB}/sales")
    out["table html"] = sorted(
        {int(i) for i in re.findall(rf'href="/{DB}/sales/(\d+)"', html.text)}
    )
    for label, query in (("csv", "_size=max"), ("csv stream", "_stream=on")):
        answer = b.get(f"/{DB}/sales.csv?{query}")
        rows = csv.DictReader(io.StringIO(answer.text)) if answer.status_code == 200 else []
        out[label] = ids_of(rows)
    facets = b.json(f"/{DB}/sales.json?_facet=region")
    results = facets["facet_results"]["region"]["results"] if facets else []
    out["facet"] = sorted([f["value"], f["count"]] for f in results if f["value"] is not None)
    out["filter narrows"] = ids_of(b.json(f"/{DB}/sales.json?_shape=array&region=west"))
    out["paginated"] = paginate(b)
    out["row pages"] = [
        r["id"] for r in SALES if b.get(f"/{DB}/sales/{r['id']}.json").status_code == 200
    ]
    out["linked counts"] = linked_counts(b)
    labels = b.json(f"/{DB}/sales.json?_shape=array&_labels=on&_size=max")
    out["labels"] = sorted({r["account_id"]["value"] for r in labels or []})
    database = b.json(f"/{DB}.json")
    out["database page"] = {t["name"]: t["count"] for t in database["tables"]}
    index = b.json("/.json")
    out["index page"] = index[DB]["table_rows_sum"]
    view = b.json(f"/{DB}/by_region.json?_shape=array")
    out["view"] = sorted([r["region"], r["n"]] for r in view or [] if r["region"] is not None)
    out["canned"] = ids_of(b.json(f"/{DB}/big.json?min=4000&_shape=array"))
    out["canned qualified"] = ids_of(b.json(f"/{DB}/qualified.json?_shape=array"))
    out["sql"] = ids_of(b.json(f"/{DB}.json?sql=select+id+from+sales&_shape=array"))
    out["_where"] = ids_of(b.json(f"/{DB}/sales.json?_shape=array&_size=max&_where=id>0"))
    return out


def paginate(b: Browser) -> list[int]:
    seen: list[int] = []
    url: str | None = f"/{DB}/sales.json?_sort=amount&_size=5"
    while url:
        page = b.json(url)
        if page is None:
            break
        seen += [row[0] for row in page["rows"]]
        url = page.get("next_url")
    return sorted(seen)


def linked_counts(b: Browser) -> list[list[int]]:
    """The "links from other tables" counts on each account's row page."""
    counts = []
    for account in ACCOUNTS:
        row = b.json(f"/{DB}/accounts/{account['id']}.json?_extras=foreign_key_tables")
        for link in (row or {}).get("foreign_key_tables", []):
            if link["other_table"] == "sales" and link["count"]:
                counts.append([account["id"], link["count"]])
    return counts


def expected(persona: str) -> dict[str, Any]:
    e = Expected(persona)
    rows = [r for r in SALES if r["id"] in e.sales]
    per_account: dict[int, int] = {}
    for r in rows:
        per_account[r["account_id"]] = per_account.get(r["account_id"], 0) + 1
    tables = {}
    if e.accounts:
        tables["accounts"] = len(e.accounts)
    if e.sales:
        tables["sales"] = e.count
    unrestricted = persona == "admin"
    return {
        "table json": e.sales,
        "table count": e.count,
        "table html": e.sales,
        "csv": e.sales,
        "csv stream": e.sales,
        "facet": e.by_region,
        "filter narrows": e.west,
        "paginated": e.sales,
        "row pages": e.sales,
        "linked counts": sorted([k, v] for k, v in per_account.items()) if e.accounts else [],
        "labels": e.accounts_with_sales,
        "database page": tables,
        "index page": sum(tables.values()),
        "view": e.by_region,
        "canned": [r["id"] for r in rows if r["amount"] is not None and r["amount"] > 4000],
        "canned qualified": e.sales,
        "sql": e.sales if unrestricted else [],
        "_where": e.sales if unrestricted else [],  # Datasette asks for execute-sql
    }


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_datasette_route_shows_exactly_the_plan(
    server: tuple[str, LocalIssuer], persona: str
) -> None:
    base, issuer = server
    browser = Browser(base, issuer.mint(groups=PERSONAS[persona][0]))
    assert see_everything(browser) == expected(persona)


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_tables_the_policy_does_not_name_are_never_served(
    server: tuple[str, LocalIssuer], persona: str
) -> None:
    base, issuer = server
    b = Browser(base, issuer.mint(groups=PERSONAS[persona][0]))
    for path in (f"/{DB}/secrets.json", f"/{DB}/sales_fts.json", f"/{DB}/secrets/1.json"):
        assert b.json(path) is None, path
    assert "secrets" not in b.get(f"/{DB}").text
    assert b.get(f"/{DB}.db").status_code in (403, 404)  # no download of any database
    assert b.get("/_internal.json").status_code in (403, 404)  # Datasette's own catalog
    assert b.get(f"/{DB}/reset").status_code == 403  # a writable canned query
    admin = persona == "admin"
    sql = b.get(f"/{DB}.json?sql=select+note+from+secrets")
    assert sql.status_code == (400 if admin else 403)  # admin: no such table in the snapshot


def test_arbitrary_sql_is_refused_in_datasette_s_own_format(
    server: tuple[str, LocalIssuer],
) -> None:
    base, issuer = server
    b = Browser(base, issuer.mint(groups=["sales-east"]))
    page = b.get(f"/{DB}?sql=select+count(*)+from+sales")
    assert page.status_code == 403 and "<title>Forbidden</title>" in page.text
    assert b.get("/-/permissions").status_code == 403  # other callers' checks stay private


def test_static_assets_are_public_and_data_needs_a_token(server: tuple[str, LocalIssuer]) -> None:
    base, _ = server
    anonymous = Browser(base, None)
    assert anonymous.get("/-/static/app.css").status_code == 200
    for path in ("/", f"/{DB}", f"/{DB}/sales.json", f"/{DB}/sales/4.json"):
        answer = anonymous.get(path)
        assert answer.status_code == 401 and answer.json()["code"] == "token_missing"


def test_the_actor_carries_roles_and_no_raw_subject(server: tuple[str, LocalIssuer]) -> None:
    base, issuer = server
    actor = Browser(base, issuer.mint(sub="alice@example.com", groups=["sales-east"])).json(
        "/-/actor.json"
    )["actor"]
    assert actor["roles"] == ["analyst"] and len(actor["id"]) == 32
    assert "alice" not in str(actor)


EAST_URL = f"/{DB}/sales.json?_shape=array&_size=max"


@contextlib.contextmanager
def in_process(tmp_path: Path, **settings: Any) -> Iterator[tuple[Path, LocalIssuer, Any]]:
    """A fresh database, a local issuer and an IAMScope trusting it, for in-process calls."""
    path = tmp_path / f"{DB}.db"
    make_database(path)
    with LocalIssuer() as issuer:
        iam = inventory_iam(issuer, **settings)
        try:
            yield path, issuer, iam
        finally:
            iam.close()


def test_a_changed_source_is_served_from_a_fresh_snapshot(tmp_path: Path) -> None:
    with in_process(tmp_path, public_prefixes=PUBLIC_PREFIXES) as (path, issuer, iam):
        app = datasette_app(iam, path, TABLES)
        east = issuer.mint(groups=["sales-east"])
        assert ids_of(get(app, EAST_URL, east).json()) == Expected("east").sales
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO sales VALUES (100, 'east', 1, 5), (101, 'west', 1, 5)")
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert ids_of(get(app, EAST_URL, east).json()) == [*Expected("east").sales, 100]


def test_a_plan_the_snapshot_cannot_render_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    make_database(path)
    plans = {"sales": RowPlan.where(Cmp("eq", "no_such_column", "east")), "accounts": ALL}
    source, target = sqlite3.connect(path), sqlite3.connect(":memory:")
    with pytest.raises(PlanUnsupported):
        filtered_copy(source, target, plans)
    source.close()
    target.close()


def test_sqlite_s_own_tables_tell_nothing_about_hidden_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    make_database(path)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE logins (id INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT)")
        db.execute("INSERT INTO logins (who) VALUES ('a'), ('b')")
        db.execute("CREATE INDEX sales_region ON sales(region)")
        db.execute("ANALYZE")
    plans = {"sales": RowPlan.where(Cmp("eq", "region", "east")), "accounts": ALL}
    source, target = sqlite3.connect(path), sqlite3.connect(":memory:")
    filtered_copy(source, target, plans)
    assert target.execute("SELECT count(*) FROM sqlite_stat1").fetchone() == (0,)
    assert target.execute("SELECT count(*) FROM sqlite_sequence").fetchone() == (0,)
    tables = {name for (name,) in target.execute("SELECT name FROM sqlite_master")}
    assert "logins" not in tables and "secrets" not in tables and "sales_fts" not in tables
    assert not [t for t in tables if t.startswith("sales_fts")]  # the index's shadow tables
    assert target.execute("SELECT DISTINCT region FROM sales").fetchall() == [("east",)]
    source.close()
    target.close()


class CountingRows(DatasetteRows):
    """Counts snapshot builds (an injection point, not a patch)."""

    builds = 0

    async def _build(self, key: Any) -> Any:
        self.builds += 1
        return await super()._build(key)


def test_snapshots_are_shared_bounded_and_built_once(tmp_path: Path) -> None:
    with in_process(tmp_path, public_prefixes=PUBLIC_PREFIXES) as (path, issuer, iam):
        rows = CountingRows(path, TABLES, max_snapshots=2)
        app = IAMScopeMiddleware(rows, iam)

        async def many(groups: list[str], n: int) -> list[list[int]]:
            transport = httpx.ASGITransport(app=app)
            token = {"authorization": f"Bearer {issuer.mint(groups=groups)}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                calls = (http.get(EAST_URL, headers=token) for _ in range(n))
                answers = await asyncio.gather(*calls)
            return [ids_of(a.json()) for a in answers]

        try:
            # Ten callers at once, one plan: one snapshot, built once.
            assert asyncio.run(many(["sales-east"], 10)) == [Expected("east").sales] * 10
            assert rows.builds == 1
            # Another identity with the same plans shares it.
            assert asyncio.run(many(["sales-east"], 1)) == [Expected("east").sales]
            assert rows.builds == 1
            for persona in ("west", "auditor", "east", "west"):
                groups = PERSONAS[persona][0]
                assert asyncio.run(many(groups, 1)) == [Expected(persona).sales]
            assert len(rows._instances) == 2  # the least recently used went out
            assert rows.builds == 5  # east and west were built again after eviction
        finally:
            rows.close()


def test_a_warning_when_static_assets_would_need_a_token(tmp_path: Path) -> None:
    with (
        in_process(tmp_path) as (path, _, iam),
        pytest.warns(UserWarning, match="public_prefixes=PUBLIC_PREFIXES"),
    ):
        datasette_app(iam, path, TABLES)


def test_a_write_still_in_the_write_ahead_log_is_seen(tmp_path: Path) -> None:
    with in_process(tmp_path, public_prefixes=PUBLIC_PREFIXES) as (path, issuer, iam):
        writer = sqlite3.connect(path)  # kept open: its writes stay in -wal, uncheckpointed
        writer.execute("PRAGMA journal_mode=WAL")
        app = datasette_app(iam, path, TABLES)
        east = issuer.mint(groups=["sales-east"])
        try:
            assert ids_of(get(app, EAST_URL, east).json()) == Expected("east").sales
            before = path.stat().st_mtime_ns, path.stat().st_size
            writer.execute("INSERT INTO sales VALUES (100, 'east', 1, 5)")
            writer.commit()
            assert (path.stat().st_mtime_ns, path.stat().st_size) == before  # only -wal moved
            assert ids_of(get(app, EAST_URL, east).json()) == [*Expected("east").sales, 100]
        finally:
            writer.close()
