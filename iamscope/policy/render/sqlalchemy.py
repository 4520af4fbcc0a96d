"""Row plans as SQLAlchemy 2.x boolean expressions, for ``select(...).where(...)``.

:func:`to_sqlalchemy` builds the expression from SQLAlchemy Core constructs: values are
bound parameters and identifiers are quoted by the dialect.
It accepts exactly the plans :func:`~iamscope.policy.render.sql.to_sql` accepts (the
operand checks are shared) and means the same rows.

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

from iamscope.policy.render.sql import (
    checked_column,
    checked_items,
    checked_null_test,
    checked_scalar,
    checked_values,
)
from iamscope.policy.rows import And, Cmp, Condition, Not, Or, RowPlan, Scalar, UnsupportedPlan

__all__ = ["to_sqlalchemy"]

Columns = Mapping[str, ColumnElement[Any]] | FromClause


def _column(columns: Columns, cmp: Cmp) -> ColumnElement[Any]:
    name = checked_column(cmp)
    found = columns.c.get(name) if isinstance(columns, FromClause) else columns.get(name)
    if found is None:
        raise UnsupportedPlan(f"column {name!r} is not in the allowed columns")
    return found


def _comparison(columns: Columns, cmp: Cmp) -> ColumnElement[bool]:
    op = cmp.op
    if op in ("eq", "ne", "lt", "le", "gt", "ge"):
        return _scalar_comparison(_column(columns, cmp), op, checked_scalar(cmp))
    if op in ("in", "not_in"):
        values = checked_values(cmp)
        column = _column(columns, cmp)  # checked even when the list is empty: never skip
        if not values:
            # Exact under SQL semantics (see render.sql): the empty OR is FALSE for every
            # row, NULLs included, whatever SQLAlchemy's own empty-IN rendering would do.
            return false() if op == "in" else true()
        bound = [_bound(value) for value in values]
        return column.in_(bound) if op == "in" else column.not_in(bound)
    if op == "is_null":
        is_null = checked_null_test(cmp)
        column = _column(columns, cmp)
        return column.is_(None) if is_null else column.is_not(None)
    raise UnsupportedPlan(f"unknown operator {op!r} on column {cmp.column!r}")


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


def _condition(columns: Columns, node: Condition) -> ColumnElement[bool]:
    if isinstance(node, Cmp):
        return _comparison(columns, node)
    if isinstance(node, And):
        return and_(*(_condition(columns, item) for item in checked_items(node)))
    if isinstance(node, Or):
        return or_(*(_condition(columns, item) for item in checked_items(node)))
    if isinstance(node, Not):
        # SQLAlchemy may fold NOT into the comparison (NOT a = b becomes a != b); under
        # three-valued logic each such rewrite is exact, NULL rows stay unknown.
        return not_(_condition(columns, node.item))
    raise UnsupportedPlan(f"not a row condition: {type(node).__name__}")


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
        return _condition(columns, plan.condition)
    raise UnsupportedPlan(f"unknown row plan kind {plan.kind!r}")
