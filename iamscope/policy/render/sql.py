"""Row plans as parameterised SQL WHERE fragments, and the operand checks every renderer shares.

:func:`to_sql` turns a :class:`~iamscope.policy.rows.RowPlan` into ``(sql, params)`` for a
DB-API driver: SQLite's ``sqlite3`` (``qmark`` / ``named``) and PostgreSQL's psycopg
(``format`` / ``pyformat``). Values only ever travel as parameters; identifiers come only
from the caller's allow-list and are always double-quoted.

The ``checked_*`` functions below are the single definition of which leaves a renderer
may express. The SQLAlchemy and Python renderers call them too, so all three refuse the
same plans with the same :class:`~iamscope.policy.rows.UnsupportedPlan`, and a plan one
renderer accepts means the same rows in every other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal, TypeAlias, overload

from iamscope.policy.rows import (
    And,
    AttrRef,
    Cmp,
    Condition,
    Not,
    Or,
    RowPlan,
    Scalar,
    UnsupportedPlan,
)

__all__ = [
    "ParamStyle",
    "allowed_columns",
    "checked_column",
    "checked_items",
    "checked_null_test",
    "checked_scalar",
    "checked_values",
    "quote_identifier",
    "to_sql",
]

ParamStyle: TypeAlias = Literal["qmark", "named", "format", "pyformat"]

TRUE_SQL = "1 = 1"
FALSE_SQL = "1 = 0"

SCALAR_OPS: Mapping[str, str] = {
    "eq": "=",
    "ne": "<>",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
}

_PARAM_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- checks shared by every renderer ----------------------------------------------------


def checked_text(text: str, what: str) -> str:
    """Refuse text no engine stores faithfully.

    PostgreSQL rejects NUL in text and identifiers, and C-level SQLite APIs stop at it;
    a lone surrogate cannot be encoded as UTF-8, so drivers fail on it while the Python
    renderer would not. Refusing both everywhere keeps the renderers in agreement.
    """
    if "\x00" in text:
        raise UnsupportedPlan(f"{what} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsupportedPlan(f"{what} is not valid Unicode text") from None
    return text


def checked_column(cmp: Cmp) -> str:
    """The leaf's column name, refused if it is not a usable identifier."""
    if not isinstance(cmp.column, str) or not cmp.column:
        raise UnsupportedPlan(f"column name must be a non-empty string, not {cmp.column!r}")
    return checked_text(cmp.column, f"column name {cmp.column!r}")


def _refuse_reference(cmp: Cmp) -> None:
    if isinstance(cmp.value, AttrRef):
        # A reference left in a plan means resolution did not bind it; rendering it any
        # other way than refusing would guess at what the principal may see.
        raise UnsupportedPlan(f"{cmp.column} {cmp.op} {cmp.value}: unresolved attribute reference")


def _kind(value: Scalar) -> type:
    """``str`` for text, ``float`` for every number (bool included: engines store it as 0/1)."""
    return str if isinstance(value, str) else float


def _checked_scalar_value(cmp: Cmp, value: object) -> Scalar:
    if isinstance(value, AttrRef):
        raise UnsupportedPlan(f"{cmp.column} {cmp.op} {value}: unresolved attribute reference")
    if isinstance(value, str):
        return checked_text(value, f"value for {cmp.column}")
    if isinstance(value, float) and not math.isfinite(value):
        # NaN is NULL to SQLite, greater than every number to PostgreSQL and unequal to
        # itself in Python; infinities differ by engine too. No answer is shared.
        raise UnsupportedPlan(f"{cmp.column} {cmp.op}: {value} is not a comparable number")
    if isinstance(value, int | float):
        return value
    raise UnsupportedPlan(
        f"{cmp.column} {cmp.op}: operand must be a str, int, float or bool, "
        f"not {type(value).__name__}"
    )


def checked_scalar(cmp: Cmp) -> Scalar:
    """The one scalar operand of ``eq``, ``ne``, ``lt``, ``le``, ``gt`` or ``ge``."""
    _refuse_reference(cmp)
    if cmp.op not in SCALAR_OPS:
        raise UnsupportedPlan(f"operator {cmp.op!r} does not take one scalar")
    return _checked_scalar_value(cmp, cmp.value)


def checked_values(cmp: Cmp) -> tuple[Scalar, ...]:
    """The tuple operand of ``in`` / ``not_in``: scalars of one kind (text or numbers).

    Mixed kinds are refused: SQLite would coerce ``'1'`` to ``1`` through column
    affinity, PostgreSQL would raise, and Python would compare them unequal.
    """
    _refuse_reference(cmp)
    if cmp.op not in ("in", "not_in"):
        raise UnsupportedPlan(f"operator {cmp.op!r} does not take a list of values")
    if not isinstance(cmp.value, tuple):
        raise UnsupportedPlan(
            f"{cmp.column} {cmp.op}: operand must be a tuple, not {type(cmp.value).__name__}"
        )
    values = tuple(_checked_scalar_value(cmp, item) for item in cmp.value)
    if len({_kind(item) for item in values}) > 1:
        raise UnsupportedPlan(f"{cmp.column} {cmp.op}: values mix text and numbers")
    return values


def checked_null_test(cmp: Cmp) -> bool:
    """The operand of ``is_null``: exactly ``True`` (IS NULL) or ``False`` (IS NOT NULL)."""
    _refuse_reference(cmp)
    if cmp.op != "is_null":
        raise UnsupportedPlan(f"operator {cmp.op!r} is not a NULL test")
    if not isinstance(cmp.value, bool):
        # 0, 1 or "yes" might be meant as a flag, or as a value compared by mistake.
        raise UnsupportedPlan(f"{cmp.column} is_null: operand must be True or False")
    return cmp.value


def checked_items(node: And | Or) -> tuple[Condition, ...]:
    """The children of an And / Or, refused when there are none.

    An empty And is logically TRUE. A resolver that produced one has most likely lost its
    conditions, and rendering it as TRUE would turn that bug into "every row"; ALL and
    NONE exist for the plans that mean everything or nothing. Empty Or is refused too,
    so the two stay symmetric.
    """
    if not isinstance(node.items, tuple) or not node.items:
        raise UnsupportedPlan(
            f"an empty {type(node).__name__} is refused: ALL or NONE say every row or none"
        )
    return node.items


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


class _Renderer:
    def __init__(self, columns: Mapping[str, str], params: _Params, alias: str | None) -> None:
        self.columns = columns
        self.params = params
        self.qualifier = "" if alias is None else params.escape(quote_identifier(alias)) + "."

    def column(self, cmp: Cmp) -> str:
        name = checked_column(cmp)
        if name not in self.columns:
            raise UnsupportedPlan(f"column {name!r} is not in the allowed columns")
        return self.qualifier + self.params.escape(quote_identifier(self.columns[name]))

    def condition(self, node: Condition) -> str:
        if isinstance(node, Cmp):
            return self.comparison(node)
        if isinstance(node, And):
            return "(" + " AND ".join(self.condition(item) for item in checked_items(node)) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.condition(item) for item in checked_items(node)) + ")"
        if isinstance(node, Not):
            return f"NOT {self.condition_in_parens(node.item)}"
        raise UnsupportedPlan(f"not a row condition: {type(node).__name__}")

    def condition_in_parens(self, node: Condition) -> str:
        sql = self.condition(node)
        # And / Or already bring their own parentheses.
        return sql if isinstance(node, And | Or) else f"({sql})"

    def comparison(self, cmp: Cmp) -> str:
        if cmp.op in SCALAR_OPS:
            value = checked_scalar(cmp)
            return f"{self.column(cmp)} {SCALAR_OPS[cmp.op]} {self.params.add(value)}"
        if cmp.op in ("in", "not_in"):
            return self.membership(cmp)
        if cmp.op == "is_null":
            test = "IS NULL" if checked_null_test(cmp) else "IS NOT NULL"
            return f"{self.column(cmp)} {test}"
        raise UnsupportedPlan(f"unknown operator {cmp.op!r} on column {cmp.column!r}")

    def membership(self, cmp: Cmp) -> str:
        values = checked_values(cmp)
        column = self.column(cmp)  # checked even when the list is empty: never skip a check
        if not values:
            # `x IN (v1, ..., vn)` is `x = v1 OR ... OR x = vn`; with no values that is the
            # empty OR, FALSE for every row, NULL x included (SQLite's `NULL IN ()` is 0),
            # and `NOT IN ()` is TRUE for every row. So constants are exact, also under NOT,
            # and PostgreSQL, which has no `IN ()` syntax, gets valid SQL.
            return FALSE_SQL if cmp.op == "in" else TRUE_SQL
        placeholders = ", ".join(self.params.add(value) for value in values)
        keyword = "IN" if cmp.op == "in" else "NOT IN"
        return f"{column} {keyword} ({placeholders})"


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
