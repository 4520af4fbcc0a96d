"""Row plans as parameterised SQL WHERE fragments.

:func:`to_sql` turns a :class:`~iamscope.policy.rows.RowPlan` into ``(sql, params)`` for a
DB-API driver: SQLite's ``sqlite3`` (``qmark`` / ``named``) and PostgreSQL's psycopg
(``format`` / ``pyformat``). Values only ever travel as parameters; identifiers come only
from the caller's allow-list and are always double-quoted. The operand checks and the
walk are :mod:`iamscope.policy.render.conditions`', shared with every other renderer.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Literal, TypeAlias, overload

from iamscope.policy.render.conditions import (
    SCALAR_OPS,
    ConditionRenderer,
    checked_column,
    checked_text,
)
from iamscope.policy.rows import And, Cmp, Condition, Or, RowPlan, Scalar, UnsupportedPlan

__all__ = [
    "FALSE_SQL",
    "TRUE_SQL",
    "ParamStyle",
    "allowed_columns",
    "quote_identifier",
    "to_sql",
]

ParamStyle: TypeAlias = Literal["qmark", "named", "format", "pyformat"]

TRUE_SQL = "1 = 1"
FALSE_SQL = "1 = 0"

_PARAM_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- identifiers and parameters ---------------------------------------------------------


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (standard SQL; SQLite and PostgreSQL).

    Quoting always, rather than only when needed, means a column called ``select`` or
    ``Region`` keeps its exact spelling and is never read as a keyword.
    """
    if not isinstance(name, str) or not name:
        raise UnsupportedPlan(f"identifier must be a non-empty string, not {name!r}")
    checked_text(name, f"identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def allowed_columns(columns: Collection[str] | Mapping[str, str]) -> Mapping[str, str]:
    """The caller's column allow-list as plan column → SQL column, in the shapes every
    SQL renderer accepts (names, or a mapping that renames)."""
    if isinstance(columns, str):
        # A str is a Collection[str] of its characters: almost certainly a caller's slip.
        raise TypeError("columns must be a collection of column names, not one string")
    if isinstance(columns, Mapping):
        return columns
    return {name: name for name in columns}


class _Params:
    """Collects parameter values and writes the placeholder for each in one DB-API style."""

    def __init__(self, style: ParamStyle, prefix: str) -> None:
        if style not in ("qmark", "named", "format", "pyformat"):
            raise ValueError(f"unknown param_style {style!r}")
        if not _PARAM_PREFIX.fullmatch(prefix):
            raise ValueError(f"param_prefix must be a plain identifier, not {prefix!r}")
        self.style = style
        self.prefix = prefix
        self.values: list[Any] = []

    def add(self, value: Scalar) -> str:
        name = f"{self.prefix}{len(self.values)}"
        self.values.append(value)
        if self.style == "qmark":
            return "?"
        if self.style == "format":
            return "%s"
        if self.style == "named":
            return f":{name}"
        return f"%({name})s"

    def escape(self, sql: str) -> str:
        # psycopg parses every % in the query text, quoted identifiers included.
        return sql.replace("%", "%%") if self.style in ("format", "pyformat") else sql

    def result(self) -> list[Any] | dict[str, Any]:
        if self.style in ("qmark", "format"):
            return self.values
        return {f"{self.prefix}{i}": value for i, value in enumerate(self.values)}


# --- rendering --------------------------------------------------------------------------


class _Renderer(ConditionRenderer[str, str]):
    def __init__(self, columns: Mapping[str, str], params: _Params, alias: str | None) -> None:
        self.columns = columns
        self.params = params
        self.qualifier = "" if alias is None else params.escape(quote_identifier(alias)) + "."

    def column(self, cmp: Cmp) -> str:
        name = checked_column(cmp)
        if name not in self.columns:
            raise UnsupportedPlan(f"column {name!r} is not in the allowed columns")
        return self.qualifier + self.params.escape(quote_identifier(self.columns[name]))

    def scalar(self, column: str, op: str, value: Scalar) -> str:
        return f"{column} {SCALAR_OPS[op]} {self.params.add(value)}"

    def membership(self, column: str, negate: bool, values: tuple[Scalar, ...]) -> str:
        placeholders = ", ".join(self.params.add(value) for value in values)
        return f"{column} {'NOT IN' if negate else 'IN'} ({placeholders})"

    def null_test(self, column: str, is_null: bool) -> str:
        return f"{column} {'IS NULL' if is_null else 'IS NOT NULL'}"

    def constant(self, value: bool) -> str:
        return TRUE_SQL if value else FALSE_SQL

    def all_of(self, items: tuple[str, ...]) -> str:
        return "(" + " AND ".join(items) + ")"

    def any_of(self, items: tuple[str, ...]) -> str:
        return "(" + " OR ".join(items) + ")"

    def negation(self, item: str, node: Condition) -> str:
        # And / Or already bring their own parentheses.
        return f"NOT {item}" if isinstance(node, And | Or) else f"NOT ({item})"


@overload
def to_sql(
    plan: RowPlan,
    columns: Collection[str] | Mapping[str, str],
    *,
    param_style: Literal["qmark", "format"] = ...,
    table_alias: str | None = ...,
    param_prefix: str = ...,
) -> tuple[str, list[Any]]: ...


@overload
def to_sql(
    plan: RowPlan,
    columns: Collection[str] | Mapping[str, str],
    *,
    param_style: Literal["named", "pyformat"],
    table_alias: str | None = ...,
    param_prefix: str = ...,
) -> tuple[str, dict[str, Any]]: ...


@overload
def to_sql(
    plan: RowPlan,
    columns: Collection[str] | Mapping[str, str],
    *,
    param_style: ParamStyle,
    table_alias: str | None = ...,
    param_prefix: str = ...,
) -> tuple[str, list[Any] | dict[str, Any]]: ...


def to_sql(
    plan: RowPlan,
    columns: Collection[str] | Mapping[str, str],
    *,
    param_style: ParamStyle = "qmark",
    table_alias: str | None = None,
    param_prefix: str = "iamscope_",
) -> tuple[str, list[Any] | dict[str, Any]]:
    """Render ``plan`` as a WHERE fragment and its parameters.

    ``columns`` is the allow-list: plan column names that may appear, either as a
    collection (used as they are) or a mapping from plan name to the table's real column
    name. A plan reading any other column is refused. ``table_alias`` qualifies every
    column (``"s"."region"``). Parameters are a list for ``qmark`` / ``format`` and a dict
    for ``named`` / ``pyformat``, whose keys are ``param_prefix`` plus a counter: give each
    fragment its own prefix when several go into one query.

    ALL renders as ``1 = 1`` and NONE as ``1 = 0``, so the fragment always fits after
    ``WHERE``. Comparisons keep SQL's NULL semantics, which the Python predicate renderer
    mirrors. Text ordering (``lt`` … ``ge`` on strings) follows the database collation;
    it matches the Python renderer under SQLite's default BINARY and PostgreSQL's "C".

    Raises :class:`UnsupportedPlan` for anything it cannot render exactly: an unresolved
    ``AttrRef``, an unknown operator or plan kind, a column outside ``columns``, an
    operand of the wrong shape, an empty And / Or, a NaN, or text containing NUL.
    """
    params = _Params(param_style, param_prefix)
    renderer = _Renderer(allowed_columns(columns), params, table_alias)
    if plan.kind == "all":
        return TRUE_SQL, params.result()
    if plan.kind == "none":
        return FALSE_SQL, params.result()
    if plan.kind == "filter" and plan.condition is not None:
        return renderer.condition(plan.condition), params.result()
    raise UnsupportedPlan(f"unknown row plan kind {plan.kind!r}")
