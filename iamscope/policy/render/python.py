"""Row plans as Python predicates over rows held in memory, with SQL's NULL semantics.

:func:`to_predicate` compiles a :class:`~iamscope.policy.rows.RowPlan` once into nested
closures; calling the result on a row (a mapping from column name to value) answers
whether the row is visible. It keeps exactly the rows the SQL renderers keep:

* ``None`` is SQL NULL. A comparison with it is *unknown*, ``NOT`` of unknown is
  unknown, AND / OR follow Kleene's three-valued logic, and a row is kept only when the
  condition is TRUE, never when it is unknown.
* ``x IN ()`` is FALSE and ``x NOT IN ()`` TRUE for every row, NULLs included, as
  :func:`~iamscope.policy.render.sql.to_sql` renders them.
* A plan is refused with :class:`~iamscope.policy.rows.UnsupportedPlan` for the same
  reasons as in the SQL renderers (the operand checks are shared).

Two things a database would reject are errors here too, never a silent answer:

* A row without a column the plan reads raises ``KeyError``, as SQL fails on an
  unknown column. It is a fault of the rows, not of the plan, so it is not an
  ``UnsupportedPlan``. Every column is read before the condition is evaluated, so the
  error does not depend on which branch happens to decide the row.
* A row value whose kind differs from the operand's (text against a number) raises
  ``UnsupportedPlan``: SQLite would coerce one side, PostgreSQL would raise, Python
  would call them unequal, so no answer is shared. bool counts as a number, since
  databases hand booleans back as 0/1. A NaN row value is refused for the same reason.

Text ordering is by code point, as SQLite's BINARY and PostgreSQL's "C" collation order.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any

from iamscope.policy.render.conditions import ConditionRenderer, checked_column
from iamscope.policy.rows import Cmp, Condition, RowPlan, Scalar, UnsupportedPlan

__all__ = ["Predicate", "to_predicate"]

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]
# A compiled condition answers True, False or None (SQL's unknown).
_Eval = Callable[[Row], bool | None]

_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_TEXT: tuple[type, ...] = (str,)
_NUMBER: tuple[type, ...] = (int, float, Decimal)  # bool is an int


def _always(answer: bool) -> Predicate:
    def predicate(row: Row) -> bool:
        return answer

    return predicate


def _kinds_of(operand: Scalar) -> tuple[type, ...]:
    return _TEXT if isinstance(operand, str) else _NUMBER


def _refused(column: str, value: object, kinds: tuple[type, ...]) -> UnsupportedPlan:
    """Why a row value cannot be compared the way the databases would compare it."""
    if isinstance(value, kinds):  # the kind is right, so it is a NaN
        return UnsupportedPlan(f"column {column!r} holds NaN, which databases compare differently")
    wanted = "text" if kinds is _TEXT else "a number"
    return UnsupportedPlan(
        f"column {column!r} holds a {type(value).__name__} where the plan compares {wanted}"
    )


def _scalar_leaf(key: str, op: str, operand: Scalar) -> _Eval:
    compare = _COMPARE[op]
    kinds = _kinds_of(operand)

    def evaluate(row: Row) -> bool | None:
        value = row[key]
        if value is None:
            return None
        # `value != value` is only true for NaN: NULL to SQLite, the largest number to
        # PostgreSQL. Checked inline: this is the per-row path.
        if not isinstance(value, kinds) or value != value:
            raise _refused(key, value, kinds)
        return compare(value, operand)

    return evaluate


def _membership_leaf(key: str, negate: bool, values: tuple[Scalar, ...]) -> _Eval:
    members = frozenset(values)
    kinds = _kinds_of(values[0])

    def evaluate(row: Row) -> bool | None:
        value = row[key]
        if value is None:
            # The values are never NULL, so a non-NULL value's answer is never unknown.
            return None
        if not isinstance(value, kinds) or value != value:
            raise _refused(key, value, kinds)
        return (value in members) is not negate

    return evaluate


def _null_leaf(key: str, is_null: bool) -> _Eval:
    if is_null:
        return lambda row: row[key] is None
    return lambda row: row[key] is not None


def _all_of(items: tuple[_Eval, ...]) -> _Eval:
    def evaluate(row: Row) -> bool | None:
        answer: bool | None = True
        for item in items:
            value = item(row)
            if value is None:
                answer = None
            elif not value:
                return False  # FALSE AND unknown is FALSE
        return answer

    return evaluate


def _any_of(items: tuple[_Eval, ...]) -> _Eval:
    def evaluate(row: Row) -> bool | None:
        answer: bool | None = False
        for item in items:
            value = item(row)
            if value is None:
                answer = None
            elif value:
                return True  # TRUE OR unknown is TRUE
        return answer

    return evaluate


def _negation(item: _Eval) -> _Eval:
    def evaluate(row: Row) -> bool | None:
        value = item(row)
        return None if value is None else not value

    return evaluate


class _Compiler(ConditionRenderer[str, _Eval]):
    """Compiles a condition into closures over row keys, remembering every key it reads."""

    def __init__(self, columns: Mapping[str, str] | None) -> None:
        self.columns = columns
        self.keys: set[str] = set()

    def column(self, cmp: Cmp) -> str:
        name = checked_column(cmp)
        if self.columns is None:
            key = name
        elif name in self.columns:
            key = self.columns[name]
        else:
            raise UnsupportedPlan(f"column {name!r} is not in the allowed columns")
        self.keys.add(key)
        return key

    def scalar(self, column: str, op: str, value: Scalar) -> _Eval:
        return _scalar_leaf(column, op, value)

    def membership(self, column: str, negate: bool, values: tuple[Scalar, ...]) -> _Eval:
        return _membership_leaf(column, negate, values)

    def null_test(self, column: str, is_null: bool) -> _Eval:
        return _null_leaf(column, is_null)

    def constant(self, value: bool) -> _Eval:
        return lambda row: value

    def all_of(self, items: tuple[_Eval, ...]) -> _Eval:
        return _all_of(items)

    def any_of(self, items: tuple[_Eval, ...]) -> _Eval:
        return _any_of(items)

    def negation(self, item: _Eval, node: Condition) -> _Eval:
        return _negation(item)


def _kept_when_true(evaluate: _Eval, keys: set[str], single_leaf: bool) -> Predicate:
    if single_leaf or not keys:
        return lambda row: evaluate(row) is True
    # Short-circuiting may skip a branch; reading every key first makes a missing
    # column fail on every row, as it would in SQL, not only on rows that reach it.
    read_all = operator.itemgetter(*sorted(keys))

    def predicate(row: Row) -> bool:
        read_all(row)
        return evaluate(row) is True

    return predicate


def to_predicate(
    plan: RowPlan, *, columns: Collection[str] | Mapping[str, str] | None = None
) -> Predicate:
    """Compile ``plan`` into ``predicate(row) -> bool``: True keeps the row.

    ``columns``, when given, is an allow-list as in
    :func:`~iamscope.policy.render.sql.to_sql`: a plan reading any other column is
    refused, and a mapping renames plan columns to row keys.
    """
    if isinstance(columns, str):
        raise TypeError("columns must be a collection of column names, not one string")
    if columns is not None and not isinstance(columns, Mapping):
        columns = {name: name for name in columns}
    if plan.kind == "all":
        return _always(True)
    if plan.kind == "none":
        return _always(False)
    if plan.kind == "filter" and plan.condition is not None:
        compiler = _Compiler(columns)
        evaluate = compiler.condition(plan.condition)
        return _kept_when_true(evaluate, compiler.keys, isinstance(plan.condition, Cmp))
    raise UnsupportedPlan(f"unknown row plan kind {plan.kind!r}")
