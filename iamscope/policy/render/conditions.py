"""What every renderer shares: which leaves a row condition may have, and one walk over it.

The ``checked_*`` functions are the single definition of which operands a renderer may
express; :class:`ConditionRenderer` walks a condition once for every target (SQL,
SQLAlchemy, PostgreSQL RLS, Python), calling them in one order, so all renderers refuse
the same plans with the same :class:`~iamscope.policy.rows.UnsupportedPlan`, and a plan
one renderer accepts means the same rows in every other. A target gives only its leaves
(a column, a comparison, a membership, a NULL test, a constant) and its connectives.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Generic, TypeVar

from iamscope.policy.rows import And, AttrRef, Cmp, Condition, Not, Or, Scalar, UnsupportedPlan

__all__ = [
    "SCALAR_OPS",
    "ConditionRenderer",
    "checked_column",
    "checked_items",
    "checked_null_test",
    "checked_scalar",
    "checked_text",
    "checked_values",
]

SCALAR_OPS: Mapping[str, str] = {
    "eq": "=",
    "ne": "<>",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
}

Col = TypeVar("Col")  # a target's column: a quoted name, a row key, a column expression
Out = TypeVar("Out")  # what a target renders a condition to


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


class ConditionRenderer(ABC, Generic[Col, Out]):
    """One walk over a row condition; a target supplies its leaves and connectives.

    Operands are checked before the column, and the column before an empty ``IN`` list
    is answered by a constant: never skip a check, whatever the shortcut.
    """

    def condition(self, node: Condition) -> Out:
        if isinstance(node, Cmp):
            return self.comparison(node)
        if isinstance(node, And):
            return self.all_of(tuple(self.condition(item) for item in checked_items(node)))
        if isinstance(node, Or):
            return self.any_of(tuple(self.condition(item) for item in checked_items(node)))
        if isinstance(node, Not):
            return self.negation(self.condition(node.item), node.item)
        raise UnsupportedPlan(f"not a row condition: {type(node).__name__}")

    def comparison(self, cmp: Cmp) -> Out:
        if cmp.op in SCALAR_OPS:
            value = checked_scalar(cmp)
            return self.scalar(self.column(cmp), cmp.op, value)
        if cmp.op in ("in", "not_in"):
            values = checked_values(cmp)
            column = self.column(cmp)
            if not values:
                # `x IN (v1, ..., vn)` is `x = v1 OR ... OR x = vn`; with no values that is
                # the empty OR, FALSE for every row, NULL x included (SQLite's `NULL IN ()`
                # is 0), and `NOT IN ()` is TRUE for every row. So constants are exact,
                # also under NOT, and PostgreSQL, which has no `IN ()`, gets valid SQL.
                return self.constant(cmp.op == "not_in")
            return self.membership(column, cmp.op == "not_in", values)
        if cmp.op == "is_null":
            is_null = checked_null_test(cmp)
            return self.null_test(self.column(cmp), is_null)
        raise UnsupportedPlan(f"unknown operator {cmp.op!r} on column {cmp.column!r}")

    # --- a target's leaves -----------------------------------------------------------

    @abstractmethod
    def column(self, cmp: Cmp) -> Col:
        """The leaf's column, refused when it is not in the caller's allow-list."""

    @abstractmethod
    def scalar(self, column: Col, op: str, value: Scalar) -> Out:
        """``column <op> value`` for an operator of :data:`SCALAR_OPS`."""

    @abstractmethod
    def membership(self, column: Col, negate: bool, values: tuple[Scalar, ...]) -> Out:
        """``column [NOT] IN values``; ``values`` is never empty."""

    @abstractmethod
    def null_test(self, column: Col, is_null: bool) -> Out:
        """``column IS [NOT] NULL``."""

    @abstractmethod
    def constant(self, value: bool) -> Out:
        """TRUE or FALSE for every row."""

    # --- a target's connectives ------------------------------------------------------

    @abstractmethod
    def all_of(self, items: tuple[Out, ...]) -> Out: ...

    @abstractmethod
    def any_of(self, items: tuple[Out, ...]) -> Out: ...

    @abstractmethod
    def negation(self, item: Out, node: Condition) -> Out:
        """NOT ``item``; ``node`` is the condition it was rendered from."""
