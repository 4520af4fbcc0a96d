"""iamscope as the access layer of a Datasette instance: every data path, one plan.

Datasette reaches rows through many paths — table pages, row pages, facets, counts on
the index and database pages, "links from other tables" on a row page, label
expansion, JSON and CSV exports, canned queries, the SQL editor — and a filter added to
one of them leaves the others open. So the plan is not added to Datasette's queries:
each distinct set of row plans gets its own **filtered snapshot** of the database, an
in-memory SQLite copy (``Connection.backup``) from which every row outside the plan
has been deleted and every table the policy does not name has been dropped, served by
its own Datasette instance. Whatever query Datasette, a plugin or a canned query runs,
the rows outside the plan are not there to be read; primary keys, foreign keys and
indexes stay exactly as in the source.

    app = datasette_app(iam, "sales.db", {"sales": "sales"})   # table → policy dataset
    # uvicorn module:app   (the IAMScope with public_prefixes=PUBLIC_PREFIXES)

* identity: :class:`~iamscope.IAMScopeMiddleware` verifies the token; the Datasette
  actor is ``{"id": <user.hash>, "roles": [...]}`` (no raw subject);
* permissions from roles: a table may name a permission (``TableRule("sales",
  permission="sales:read")``) without which its plan is ``NONE``; a table whose plan
  is ``NONE`` is not in the snapshot at all (404, like a table that does not exist);
* arbitrary SQL (``execute-sql``) only when every table's plan is ``ALL``; canned
  queries run on the snapshot; writable canned queries, database downloads and every
  permission this module does not know are refused (Datasette's own 403 page);
* static assets (``PUBLIC_PREFIXES``) are public;
* outside the plan nothing is visible, a missing attribute included (``NONE``).

Snapshots are shared by every identity with the same plans (at most ``max_snapshots``,
least recently used first out) and rebuilt when the source file changes (the size or
modification time of the file or of its write-ahead log). The cost is memory — one copy
of the permitted rows per distinct plan set — which suits Datasette's usual published,
read-only databases; for large or fast-changing data, PostgreSQL row-level security
(:mod:`iamscope.policy.render.rls`) keeps the rule in the database instead.

Written against Datasette 0.65 (``permission_allowed``, ``actor_from_request``,
``Database(memory_name=...)``, ``add_database``/``remove_database``); a newer major
version is refused at import rather than trusted blindly.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import sqlite3
import warnings
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasette
from datasette import hookimpl
from datasette.app import Datasette
from datasette.database import Database
from datasette.plugins import pm

from iamscope.engine.decision import current
from iamscope.engine.engine import IAMScope
from iamscope.policy.access import Access
from iamscope.policy.render.sql import quote_identifier, to_sql
from iamscope.policy.rows import NONE, RowPlan
from iamscope.web.asgi import IAMScopeMiddleware

__all__ = ["PUBLIC_PREFIXES", "DatasetteRows", "TableRule", "datasette_app", "filtered_copy"]

#: Datasette's static assets: give them to ``IAMScope(public_prefixes=...)``.
PUBLIC_PREFIXES = ("/-/static/", "/-/static-plugins/")

_VERSION = tuple(int(p) for p in datasette.__version__.split(".")[:2] if p.isdigit())
if _VERSION[:1] != (0,) or _VERSION < (0, 64):
    # The hooks and Database API this module relies on are those of 0.64/0.65; 1.0
    # changes permissions and adds write APIs this module would not see.
    raise ImportError(
        f"iamscope.integrations.datasette supports Datasette 0.64-0.65, not {datasette.__version__}"
    )

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TableRule:
    """A table's policy dataset, and the permission needed to see any of it."""

    dataset: str
    permission: str | None = None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What the hooks need to know about one managed Datasette instance."""

    database: str
    unrestricted: bool  # every table's plan is ALL: arbitrary SQL is allowed


#: The Datasette instances this module built; the hooks leave every other one alone.
_MANAGED: weakref.WeakKeyDictionary[Datasette, _Snapshot] = weakref.WeakKeyDictionary()


# --- the snapshot ----------------------------------------------------------------------


def _tables(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT name, coalesce(sql, '') FROM sqlite_master "
        "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return [(str(name), str(sql)) for name, sql in rows]


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    info = conn.execute(f"PRAGMA main.table_info({quote_identifier(table)})")
    return [str(row[1]) for row in info]


def _names(conn: sqlite3.Connection, kind: str) -> list[str]:
    found = conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
    return [str(name) for (name,) in found.fetchall()]


def filtered_copy(
    source: sqlite3.Connection, target: sqlite3.Connection, plans: Mapping[str, RowPlan]
) -> None:
    """Copy ``source`` into ``target``, then keep only what ``plans`` allow.

    Tables ``plans`` does not name, and tables whose plan is NONE, are dropped (virtual
    tables such as full-text indexes first: their shadow tables hold copies of the rows);
    views that no longer work and all triggers are dropped. A filter plan deletes every
    row for which its condition is not TRUE (NULL is not TRUE). Raises
    :class:`~iamscope.errors.PlanUnsupported` for a plan that cannot be rendered over
    the table's columns, before anything is served.
    """
    source.backup(target)
    target.execute("PRAGMA foreign_keys = OFF")  # deleting parents must not cascade
    for name in _names(target, "trigger"):
        target.execute(f"DROP TRIGGER {quote_identifier(name)}")
    for virtual_first in (True, False):
        for name, sql in _tables(target):
            is_virtual = sql.upper().startswith("CREATE VIRTUAL TABLE")
            if is_virtual == virtual_first and plans.get(name, NONE).kind == "none":
                target.execute(f"DROP TABLE IF EXISTS {quote_identifier(name)}")
    for name, _ in _tables(target):
        plan = plans[name]
        if plan.kind == "filter":
            condition, params = to_sql(plan, _columns(target, name))
            # Identifiers quoted, values bound: to_sql's fragment carries no literal input.
            delete = f"DELETE FROM {quote_identifier(name)} WHERE NOT ifnull(({condition}), 0)"  # noqa: S608
            target.execute(delete, params)
    _drop_broken_views(target)
    _scrub_statistics(target, plans)
    target.commit()


def _scrub_statistics(conn: sqlite3.Connection, plans: Mapping[str, RowPlan]) -> None:
    """SQLite's own tables describe the source: ANALYZE statistics hold row counts per
    index, and AUTOINCREMENT's counter the highest id ever used. Both would tell a caller
    about rows outside the plan."""
    internal = set(_names(conn, "table"))
    for stats in ("sqlite_stat1", "sqlite_stat4"):
        if stats in internal:
            conn.execute(f"DELETE FROM {stats}")  # noqa: S608 - a fixed name
    if "sqlite_sequence" in internal:
        kept = [name for name, plan in plans.items() if plan.kind == "all"]
        marks = ", ".join("?" for _ in kept) or "NULL"
        conn.execute(f"DELETE FROM sqlite_sequence WHERE name NOT IN ({marks})", kept)  # noqa: S608


def _drop_broken_views(conn: sqlite3.Connection) -> None:
    for name in _names(conn, "view"):
        try:
            conn.execute(f"SELECT * FROM {quote_identifier(name)} LIMIT 0").fetchall()  # noqa: S608
        except sqlite3.Error:
            conn.execute(f"DROP VIEW {quote_identifier(name)}")


# --- the router ------------------------------------------------------------------------


class DatasetteRows:
    """An ASGI app: each request is served by the Datasette instance of its row plans.

    Put it behind :class:`~iamscope.IAMScopeMiddleware` (or use :func:`datasette_app`):
    the plans come from :func:`iamscope.current`.
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        tables: Mapping[str, str | TableRule],
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        max_snapshots: int = 32,
    ) -> None:
        self.path = Path(database)
        self.name = name or self.path.stem
        self.rules = {
            table: rule if isinstance(rule, TableRule) else TableRule(rule)
            for table, rule in sorted(tables.items())
        }
        self.metadata = dict(metadata or {})
        self.settings = dict(settings or {})
        self.max_snapshots = max_snapshots
        self._instances: collections.OrderedDict[tuple[RowPlan, ...], _Instance] = (
            collections.OrderedDict()
        )
        self._building: dict[tuple[RowPlan, ...], asyncio.Lock] = {}
        self._generation: tuple[int, ...] | None = None
        _register_hooks()

    def plans(self, access: Access | None) -> tuple[RowPlan, ...]:
        """The effective plan of each table (sorted by name) for ``access``."""
        return tuple(_plan(rule, access) for rule in self.rules.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        instance = await self._instance(self.plans(current()))
        await instance.app(scope, receive, send)

    def close(self) -> None:
        while self._instances:
            _, instance = self._instances.popitem()
            instance.close()

    # --- instances ---------------------------------------------------------------

    def _source_generation(self) -> tuple[int, ...]:
        """The source's size and time, and its write-ahead log's: in WAL mode a write
        lands in ``-wal`` and the main file changes only at the next checkpoint."""
        stat = self.path.stat()
        wal = self.path.with_name(self.path.name + "-wal")
        log = wal.stat() if wal.exists() else None
        return stat.st_mtime_ns, stat.st_size, *((log.st_mtime_ns, log.st_size) if log else ())

    async def _instance(self, key: tuple[RowPlan, ...]) -> _Instance:
        generation = self._source_generation()
        if generation != self._generation:
            self.close()  # the source changed: every snapshot is stale
            self._generation = generation
        found = self._instances.get(key)
        if found is None:
            lock = self._building.setdefault(key, asyncio.Lock())
            async with lock:  # one build per plan set, however many requests wait
                found = self._instances.get(key)
                if found is None:
                    found = await self._build(key)
                    self._instances[key] = found
                    while len(self._instances) > self.max_snapshots:
                        self._instances.popitem(last=False)[1].close()
            self._building.pop(key, None)
        self._instances.move_to_end(key)
        return found

    async def _build(self, key: tuple[RowPlan, ...]) -> _Instance:
        plans = dict(zip(self.rules, key, strict=True))
        memory_name = f"iamscope-{secrets.token_hex(8)}"
        keeper = await asyncio.to_thread(self._snapshot, memory_name, plans)
        ds = Datasette(metadata=self.metadata, settings=self.settings)
        ds.remove_database("_memory")  # an empty scratch database is one more SQL surface
        ds.add_database(Database(ds, memory_name=memory_name, is_mutable=False), name=self.name)
        _MANAGED[ds] = _Snapshot(self.name, all(p.kind == "all" for p in key))
        await ds.invoke_startup()
        return _Instance(ds, ds.app(), keeper)

    def _snapshot(self, memory_name: str, plans: Mapping[str, RowPlan]) -> sqlite3.Connection:
        # The keeper connection holds the shared in-memory database alive.
        keeper = sqlite3.connect(
            f"file:{memory_name}?mode=memory&cache=shared", uri=True, check_same_thread=False
        )
        try:
            source = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                filtered_copy(source, keeper, plans)
            finally:
                source.close()
        except BaseException:
            keeper.close()
            raise
        return keeper

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


@dataclass
class _Instance:
    datasette: Datasette
    app: Any
    keeper: sqlite3.Connection

    def close(self) -> None:
        """Let the snapshot go. A request still being served keeps its connections,
        its hooks (the instance stays managed until it is collected) and its threads
        (an executor's workers exit when it is collected): nothing in flight breaks."""
        self.keeper.close()


def _plan(rule: TableRule, access: Access | None) -> RowPlan:
    if access is None:
        return NONE
    if rule.permission is not None and not access.can(rule.permission):
        return NONE
    return access.rows_for(rule.dataset)


def datasette_app(
    iam: IAMScope,
    database: str | os.PathLike[str],
    tables: Mapping[str, str | TableRule],
    **options: Any,
) -> IAMScopeMiddleware:
    """A Datasette for ``database`` behind ``iam``: ``tables`` maps each table to serve
    to its policy dataset (a name or a :class:`TableRule`); other tables are not served.
    ``options`` go to :class:`DatasetteRows` (``name``, ``metadata``, ``settings``,
    ``max_snapshots``)."""
    missing = [p for p in PUBLIC_PREFIXES if p not in iam.public_prefixes]
    if missing:
        # Not an error: a deployment may serve the assets elsewhere. But say so.
        warnings.warn(
            f"Datasette's static assets {missing} need a token; build the IAMScope with "
            "public_prefixes=PUBLIC_PREFIXES to serve them publicly",
            stacklevel=2,
        )
    return IAMScopeMiddleware(DatasetteRows(database, tables, **options), iam)


# --- Datasette plugin hooks ------------------------------------------------------------

#: Permissions granted to any authenticated caller of a managed instance.
_VIEW = frozenset({"view-instance", "view-database", "view-table"})


def _register_hooks() -> None:
    if not pm.is_registered(_Hooks):
        pm.register(_Hooks, name="iamscope")


class _Hooks:
    """Datasette plugin hooks (registered once, acting only on managed instances)."""

    @staticmethod
    @hookimpl(tryfirst=True)  # type: ignore[untyped-decorator]
    def actor_from_request(datasette: Datasette, request: Any) -> dict[str, Any] | None:
        if datasette not in _MANAGED:
            return None
        decision = request.scope.get("iamscope.decision")
        access = current()
        if decision is None or access is None:
            return None
        attributes = decision.attributes or {}
        return {"id": str(attributes.get("user.hash", "")), "roles": sorted(access.roles)}

    @staticmethod
    @hookimpl(trylast=True)  # type: ignore[untyped-decorator]  # last: Datasette keeps its answer
    def permission_allowed(
        datasette: Datasette, actor: Any, action: str, resource: Any
    ) -> bool | Callable[[], Awaitable[bool]] | None:
        snapshot = _MANAGED.get(datasette)
        if snapshot is None:
            return None
        # The request's Access decides, never the actor dict (a plugin or cookie can
        # set that); the rows themselves are already limited by the snapshot.
        access = current()
        if access is None:
            return False
        if action == "view-database":
            return bool(resource == snapshot.database)
        if action in _VIEW:
            return True
        if action == "execute-sql":
            return bool(snapshot.unrestricted)
        if action == "view-query":
            return _read_only_query(datasette, resource, actor)
        if action in ("permissions-debug", "debug-menu"):
            return access.can("policy:admin")
        return False  # downloads, writes, and whatever a later version adds


def _read_only_query(
    datasette: Datasette, resource: Any, actor: Any
) -> Callable[[], Awaitable[bool]]:
    async def inner() -> bool:
        database, name = resource
        query = await datasette.get_canned_query(database, name, actor)
        # A writable canned query would change the snapshot, not the source.
        return query is not None and not query.get("write")

    return inner
