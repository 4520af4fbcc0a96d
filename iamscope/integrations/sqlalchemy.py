"""Row plans on every ORM statement a SQLAlchemy Session runs, without the app asking.

:func:`enforce_rows` listens on a Session, a sessionmaker or the Session class (also
their async forms) and, for the mapped classes it is given, adds the current request's
row plan to every ORM statement:

* ``SELECT`` — direct, joined, aliased, through relationships (lazy, joined, selectin
  and subquery eager loads), ``Session.get``, ``select(func.count()).select_from(Sale)``,
  deferred column loads and refreshes — through ``with_loader_criteria`` added in the
  ``do_orm_execute`` event (SQLAlchemy's documented way to add global criteria);
* ORM ``UPDATE`` / ``DELETE`` statements — the same criteria limit their rows; an
  ``UPDATE`` assigning a column the plan reads (it could move rows out of the plan) and
  a bulk ``UPDATE`` by primary key (which ignores loader criteria) are refused unless
  the plan is ``ALL``;
* the unit of work — a flush that would insert, change or delete an instance outside
  the plan raises :class:`~iamscope.errors.AccessDenied` before any SQL is sent, and so
  does an ORM bulk ``INSERT`` whose rows are outside it.

The plan comes from ``access()`` (default :func:`iamscope.current`, the request's
``Access``). No ``Access`` means the plan ``NONE``: outside a request nothing is
visible, never everything. A plan the renderer cannot express raises
:class:`~iamscope.errors.PlanUnsupported` when the statement runs.

What it cannot see: SQL strings (``text()``, ``exec_driver_sql``), Core statements on a
protected ``Table`` (refused unless the plan is ``ALL``, since the ORM criteria cannot
reach them), and work done on another connection. For those, PostgreSQL row-level
security (:mod:`iamscope.policy.render.rls`) holds in the database itself.

A Session's identity map outlives a statement: an instance loaded under one plan is
returned by ``Session.get`` (and many-to-one attribute access) under another without
any SQL, so no hook can see it. Use a Session per request — the usual pattern, and the
only safe one. As a guard, a Session that holds instances is bound to the plan they
were loaded under: a statement under a different plan raises until the Session is
closed or ``expunge_all()`` empties it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria
from sqlalchemy.sql import util as sql_util

from iamscope.engine.decision import current
from iamscope.errors import AccessDenied, PlanUnsupported
from iamscope.policy.access import Access
from iamscope.policy.render.python import to_predicate
from iamscope.policy.render.sqlalchemy import to_sqlalchemy
from iamscope.policy.rows import NONE, RowPlan, columns_of

__all__ = ["RowEnforcement", "enforce_rows"]

#: A Session, a sessionmaker, the Session class, or an AsyncSession / async_sessionmaker.
Target = Session | sessionmaker[Any] | type[Session] | Any
#: Where the plans come from; the default reads the request's ContextVar.
AccessSource = Callable[[], Access | None]

_SESSION_KEY = "iamscope.row_plans"
_MISSING = object()


@functools.lru_cache(maxsize=4096)
def _criteria(entity: type, plan: RowPlan) -> Any:
    """The loader option, rendered once per (class, plan): plans are shared across
    requests, and an option is immutable, so one object serves every statement."""
    return with_loader_criteria(entity, to_sqlalchemy(plan, entity), include_aliases=True)


@functools.lru_cache(maxsize=4096)
def _predicate(entity: type, plan: RowPlan) -> Callable[[Mapping[str, Any]], bool]:
    return to_predicate(plan, columns=_attributes(entity))


def _attributes(entity: type) -> tuple[str, ...]:
    return tuple(inspect(entity).column_attrs.keys())


def _sync_target(target: Target) -> Session | sessionmaker[Any] | type[Session]:
    """Async sessions run their ORM work on a sync Session: listen there."""
    if isinstance(target, Session | sessionmaker) or target is Session:
        return target
    # The asyncio extension needs greenlet; it is loaded already if the app uses it.
    aio: Any = sys.modules.get("sqlalchemy.ext.asyncio")
    if aio is not None and isinstance(target, aio.AsyncSession):
        return target.sync_session  # type: ignore[no-any-return]
    if aio is not None and isinstance(target, aio.async_sessionmaker):
        # Events on the class would reach every session in the process; a per-maker
        # sync class keeps the rule to this maker's sessions.
        maker: Any = target
        base = maker.kw.get("sync_session_class", Session)
        own = type(f"IAMScope{base.__name__}", (base,), {})
        maker.configure(sync_session_class=own)
        return own
    if isinstance(target, type) and issubclass(target, Session):
        return target
    raise TypeError(f"cannot enforce rows on {target!r}: not a Session or sessionmaker")


@dataclass
class RowEnforcement:
    """The listeners :func:`enforce_rows` installed; :meth:`remove` takes them away."""

    target: Session | sessionmaker[Any] | type[Session]
    datasets: Mapping[type, str]
    access: AccessSource
    _tables: Mapping[Table, type] = field(default_factory=dict)

    def plans(self) -> tuple[RowPlan, ...]:
        """The current plan of each dataset, in a fixed order (NONE outside a request)."""
        access = self.access()
        if access is None:
            return tuple(NONE for _ in self.datasets)
        return tuple(access.rows_for(name) for name in self.datasets.values())

    def remove(self) -> None:
        event.remove(self.target, "do_orm_execute", self._on_execute)
        event.remove(self.target, "before_flush", self._on_flush)

    def _protected(self, cls: type | None) -> type | None:
        """The protected class ``cls`` is, or inherits from (the criteria reach mapped
        subclasses too, so the write checks must)."""
        for base in cls.__mro__ if cls is not None else ():
            if base in self.datasets:
                return base
        return None

    def _plan(self, entity: type, plans: tuple[RowPlan, ...]) -> RowPlan:
        return plans[list(self.datasets).index(entity)]

    def _restricted(
        self, state: ORMExecuteState, plans: tuple[RowPlan, ...]
    ) -> tuple[type, RowPlan] | None:
        """The protected class a DML statement writes and its plan, unless that is ALL."""
        entity = self._protected(_entity_of(state))
        if entity is None:
            return None
        plan = self._plan(entity, plans)
        return None if plan.kind == "all" else (entity, plan)

    # --- listeners -----------------------------------------------------------------

    def _bind(self, session: Session) -> tuple[RowPlan, ...]:
        """The plans for this statement, and the Session bound to them (see module doc)."""
        plans = self.plans()
        seen = session.info.setdefault(_SESSION_KEY, plans)
        if seen != plans and not session.identity_map and not session.new:
            # Nothing loaded under the old plan is left (a closed or cleared Session):
            # the Session may serve the new plan.
            session.info[_SESSION_KEY] = seen = plans
        if seen != plans:
            raise AccessDenied(
                "this Session already ran under another row plan; its identity map could "
                "return rows the current plan does not allow (use a Session per request)",
                requirement="rows:session",
            )
        return plans

    def _on_execute(self, state: ORMExecuteState) -> None:
        plans = self._bind(state.session)
        if not state.is_orm_statement:
            self._refuse_core(state, plans)
            return
        if state.is_insert:
            self._check_insert(state, plans)
            return
        if state.is_update or state.is_delete:
            self._check_change(state, plans)
        elif not state.is_select:
            return
        options = [
            _criteria(entity, plan)
            for entity, plan in zip(self.datasets, plans, strict=True)
            if plan.kind != "all"
        ]
        if options:
            state.statement = state.statement.options(*options)

    def _refuse_core(self, state: ORMExecuteState, plans: tuple[RowPlan, ...]) -> None:
        """A Core statement (no ORM entity) on a protected table cannot carry ORM criteria."""
        statement: Any = state.statement
        found = sql_util.find_tables(
            statement, include_aliases=True, include_joins=True, include_crud=True
        )
        by_entity = dict(zip(self.datasets, plans, strict=True))
        for table in found:
            entity = self._tables.get(table) if isinstance(table, Table) else None
            if entity is not None and by_entity[entity].kind != "all":
                raise PlanUnsupported(
                    f"a Core statement on {table.name!r} cannot carry the row plan of "
                    f"{self.datasets[entity]!r}; query the mapped class instead"
                )

    def _check_change(self, state: ORMExecuteState, plans: tuple[RowPlan, ...]) -> None:
        """ORM UPDATE/DELETE: the criteria limit the rows, but two forms escape them."""
        target = self._restricted(state, plans)
        if target is None:
            return
        entity, plan = target
        dataset = self.datasets[entity]
        if state.is_executemany:
            # "Bulk UPDATE by primary key" writes the rows its parameters name and
            # ignores loader criteria: a west row's key would reach the west row.
            raise PlanUnsupported(
                f"a bulk UPDATE/DELETE by primary key on {dataset!r} cannot carry the row "
                "plan; use update(...).where(...) or change loaded objects"
            )
        if state.is_update and plan.condition is not None:
            assigned = _assigned(entity, state.statement)
            if assigned is None or assigned & columns_of(plan.condition):
                # SET region = 'west' would move visible rows out of the plan (what
                # PostgreSQL's WITH CHECK refuses); the new values cannot be checked here.
                raise PlanUnsupported(
                    f"an UPDATE of {dataset!r} assigning a column its row plan reads cannot "
                    "be checked; change loaded objects instead (each flush is checked)"
                )

    def _check_insert(self, state: ORMExecuteState, plans: tuple[RowPlan, ...]) -> None:
        target = self._restricted(state, plans)
        if target is None:
            return
        entity, plan = target
        rows = state.parameters
        if not rows:
            raise PlanUnsupported(
                f"an INSERT into {self.datasets[entity]!r} without parameter rows cannot be "
                "checked against the row plan"
            )
        keep = _predicate(entity, plan)
        for row in [rows] if isinstance(rows, Mapping) else rows:
            if not keep(_full_row(entity, plan, row)):
                raise _outside(self.datasets[entity])

    def _on_flush(self, session: Session, context: Any, instances: Any) -> None:
        changed = [
            (obj, entity)
            for obj in [*session.new, *session.dirty, *session.deleted]
            if (entity := self._protected(type(obj))) is not None
        ]
        if not changed:
            return
        plans = self._bind(session)
        for obj, entity in changed:
            plan = self._plan(entity, plans)
            if plan.kind == "all":
                continue
            row = {key: getattr(obj, key) for key in _attributes(entity)}
            if not _predicate(entity, plan)(row):
                raise _outside(self.datasets[entity])


def _entity_of(state: ORMExecuteState) -> type | None:
    mapper = state.bind_mapper
    return mapper.class_ if mapper is not None else None


def _assigned(entity: type, statement: Any) -> set[str] | None:
    """Attribute names an UPDATE assigns, or None when they cannot be read.

    SQLAlchemy keeps the SET clause in ``_values`` (no public accessor in 2.x); were that
    to change, None makes the caller refuse rather than skip the check.
    """
    values: Any = getattr(statement, "_values", _MISSING)
    if values is _MISSING:
        return None
    mapper: Any = inspect(entity)
    # Each attribute under both its names: a key may be an attribute, a column or a name.
    by_name = {}
    for prop in mapper.column_attrs:
        by_name[prop.key] = prop.key
        for column in prop.columns:
            by_name[column.name] = prop.key
            by_name[column.key] = prop.key
    names = set()
    for key in values or ():
        name = key if isinstance(key, str) else getattr(key, "key", None)
        if name not in by_name:
            return None  # an assignment we cannot place: refuse rather than guess
        names.add(by_name[name])
    return names


def _full_row(entity: type, plan: RowPlan, row: Mapping[str, Any]) -> Mapping[str, Any]:
    """Columns the plan reads but the INSERT leaves out take the column default, which
    the ORM cannot know here: refuse rather than guess."""
    if plan.condition is not None:
        for name in columns_of(plan.condition):
            if name not in row:
                raise PlanUnsupported(
                    f"an INSERT row without {name!r} cannot be checked against the row plan"
                )
    return row


def _outside(dataset: str) -> AccessDenied:
    return AccessDenied(
        f"a write would leave a row of {dataset!r} outside the caller's row plan",
        requirement=f"rows:{dataset}",
    )


def enforce_rows(
    target: Target,
    datasets: Mapping[type, str] | Iterable[tuple[type, str]],
    *,
    access: AccessSource = current,
) -> RowEnforcement:
    """Apply the current row plan to every ORM statement ``target``'s sessions run.

    ``datasets`` maps ORM classes to policy dataset names (``{Sale: "sales"}``); a
    plan's columns are the class's attribute names. ``target`` is a Session, a
    sessionmaker, the Session class (every session in the process), or their async
    forms. Returns a handle whose ``remove()`` uninstalls the listeners.
    """
    mapping = dict(datasets)
    for entity in mapping:
        if not isinstance(entity, type) or inspect(entity, raiseerr=False) is None:
            raise TypeError(f"{entity!r} is not an ORM mapped class")
    tables: dict[Table, type] = {}
    for entity in mapping:
        mapper: Any = inspect(entity)
        for table in mapper.tables:
            if isinstance(table, Table):
                tables[table] = entity
    enforcement = RowEnforcement(_sync_target(target), mapping, access, tables)
    event.listen(enforcement.target, "do_orm_execute", enforcement._on_execute)
    event.listen(enforcement.target, "before_flush", enforcement._on_flush)
    return enforcement
