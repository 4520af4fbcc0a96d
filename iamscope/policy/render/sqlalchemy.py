"""Row plans as SQLAlchemy 2.x boolean expressions, for ``select(...).where(...)``.

:func:`to_sqlalchemy` builds the expression from SQLAlchemy Core constructs: values are
bound parameters and identifiers are quoted by the dialect.
It accepts exactly the plans :func:`~iamscope.policy.render.sql.to_sql` accepts (the
operand checks and the walk are shared) and means the same rows.

SQLAlchemy is the optional extra ``iamscope[sqlalchemy]``; only this module imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Boolean,
    ColumnElement,
    Float,
    FromClause,
    String,
    and_,
    bindparam,
    false,
    inspect,
    not_,
    or_,
    true,
)

from iamscope.policy.render.conditions import ConditionRenderer, checked_column
from iamscope.policy.rows import Cmp, Condition, RowPlan, Scalar, UnsupportedPlan

__all__ = ["to_sqlalchemy"]

Columns = Mapping[str, ColumnElement[Any]] | FromClause


def _bound(value: Scalar) -> BindParameter[Any]:
    """``value`` as a parameter typed by its own Python type, never by the column's.

    A column-typed parameter is converted to the column's type: PostgreSQL dialects that
    render bind casts (psycopg2, asyncpg) write ``%(p)s::INTEGER`` for an INTEGER column,
    and the cast rounds a bound 10.5 to 10, so ``amount = 10.5`` would match a row.
    Typing by value keeps the comparison exact (PostgreSQL compares integer with float,
    text with varchar), and a real mismatch (text against a date column) fails loudly.
    Integers bind as BIGINT so that large ones do not overflow an INTEGER cast.
    """
    if isinstance(value, bool):
        return bindparam(None, value, type_=Boolean())
    if isinstance(value, int):
        return bindparam(None, value, type_=BigInteger())
    if isinstance(value, float):
        return bindparam(None, value, type_=Float())
    return bindparam(None, value, type_=String())


def _scalar_comparison(column: ColumnElement[Any], op: str, value: Scalar) -> ColumnElement[bool]:
    bound = _bound(value)
    if op == "eq":
        return column == bound
    if op == "ne":
        return column != bound
    if op == "lt":
        return column < bound
    if op == "le":
        return column <= bound
    if op == "gt":
        return column > bound
    return column >= bound


Expression = ColumnElement[bool]


class _Builder(ConditionRenderer[ColumnElement[Any], Expression]):
    def __init__(self, columns: Columns) -> None:
        self.columns = columns

    def column(self, cmp: Cmp) -> ColumnElement[Any]:
        name = checked_column(cmp)
        columns = self.columns
        found = columns.c.get(name) if isinstance(columns, FromClause) else columns.get(name)
        if found is None:
            raise UnsupportedPlan(f"column {name!r} is not in the allowed columns")
        return found

    def scalar(self, column: ColumnElement[Any], op: str, value: Scalar) -> Expression:
        return _scalar_comparison(column, op, value)

    def membership(
        self, column: ColumnElement[Any], negate: bool, values: tuple[Scalar, ...]
    ) -> Expression:
        bound = [_bound(value) for value in values]
        return column.not_in(bound) if negate else column.in_(bound)

    def null_test(self, column: ColumnElement[Any], is_null: bool) -> Expression:
        return column.is_(None) if is_null else column.is_not(None)

    def constant(self, value: bool) -> Expression:
        # Exact under SQL semantics (see conditions): the empty OR is FALSE for every row,
        # NULLs included, whatever SQLAlchemy's own empty-IN rendering would do.
        return true() if value else false()

    def all_of(self, items: tuple[Expression, ...]) -> Expression:
        return and_(*items)

    def any_of(self, items: tuple[Expression, ...]) -> Expression:
        return or_(*items)

    def negation(self, item: Expression, node: Condition) -> Expression:
        # SQLAlchemy may fold NOT into the comparison (NOT a = b becomes a != b); under
        # three-valued logic each such rewrite is exact, NULL rows stay unknown.
        return not_(item)


def _orm_columns(entity: type) -> Mapping[str, ColumnElement[Any]] | None:
    """An ORM mapped class as a mapping of its column attributes (attribute names)."""
    mapper: Any = inspect(entity, raiseerr=False)
    if mapper is None or not hasattr(mapper, "column_attrs"):
        return None
    return {key: getattr(entity, key) for key in mapper.column_attrs.keys()}  # noqa: SIM118


def to_sqlalchemy(plan: RowPlan, columns: Columns | type) -> ColumnElement[bool]:
    """Render ``plan`` as a boolean SQLAlchemy expression.

    ``columns`` is the allow-list: a Table or other FromClause (any of its columns, by
    key), an ORM mapped class (its column attributes, by attribute name), or a mapping
    from plan column name to a column expression. ALL is ``true()`` and NONE
    ``false()``. Raises :class:`UnsupportedPlan` for the same plans as
    :func:`~iamscope.policy.render.sql.to_sql`.
    """
    if isinstance(columns, type):
        mapped = _orm_columns(columns)
        if mapped is None:
            raise TypeError(f"{columns.__name__} is not an ORM mapped class")
        columns = mapped
    if plan.kind == "all":
        return true()
    if plan.kind == "none":
        return false()
    if plan.kind == "filter" and plan.condition is not None:
        return _Builder(columns).condition(plan.condition)
    raise UnsupportedPlan(f"unknown row plan kind {plan.kind!r}")
