"""Row plans: what rows of a dataset an identity may see, as data every renderer reads.

A plan is three-way: :data:`ALL`, :data:`NONE`, or a filter over a closed set of
operators. Conditions are immutable trees of :class:`Cmp` leaves under :class:`And`,
:class:`Or` and :class:`Not`. In a policy's *templates* a leaf's operand may be an
:class:`AttrRef` (``$region``); resolution binds every reference to the principal's
values, so a plan handed to a renderer never contains one (renderers refuse it).

Comparisons follow SQL semantics, NULLs included: ``region = 'east'`` is unknown (not
true) when ``region`` is NULL, and ``NOT`` of unknown is still unknown. The Python
predicate renderer implements the same three-valued logic so that every renderer
returns the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from iamscope.errors import PlanUnsupported

__all__ = [
    "ALL",
    "COMPARISONS",
    "NONE",
    "And",
    "AttrRef",
    "Cmp",
    "Condition",
    "Not",
    "Or",
    "RowPlan",
    "Scalar",
    "UnsupportedPlan",
    "columns_of",
]

Scalar: TypeAlias = str | int | float | bool

CmpOp = Literal["eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "is_null"]
COMPARISONS: tuple[CmpOp, ...] = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "is_null")


#: A renderer met a shape or operator it cannot express. Never skipped or widened.
UnsupportedPlan = PlanUnsupported


@dataclass(frozen=True, slots=True)
class AttrRef:
    """``$name`` in a policy template: the principal's value(s) of attribute ``name``."""

    name: str

    def __str__(self) -> str:
        return f"${self.name}"


@dataclass(frozen=True, slots=True)
class Cmp:
    """``column <op> value``.

    ``in`` / ``not_in`` take a tuple of scalars; ``is_null`` takes ``True`` (IS NULL) or
    ``False`` (IS NOT NULL); the others take one scalar.
    """

    op: CmpOp
    column: str
    value: Scalar | tuple[Scalar, ...] | AttrRef


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Condition: TypeAlias = Cmp | And | Or | Not


@dataclass(frozen=True, slots=True)
class RowPlan:
    """``kind`` is ``"all"``, ``"none"`` or ``"filter"`` (then ``condition`` is set)."""

    kind: Literal["all", "none", "filter"]
    condition: Condition | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("all", "none", "filter"):
            raise ValueError(f"unknown row plan kind {self.kind!r}")
        if (self.kind == "filter") != (self.condition is not None):
            raise ValueError("a filter plan needs a condition; all/none plans take none")

    @staticmethod
    def where(condition: Condition) -> RowPlan:
        return RowPlan("filter", condition)


ALL = RowPlan("all")
NONE = RowPlan("none")


def columns_of(condition: Condition) -> frozenset[str]:
    """Every column a condition reads."""
    if isinstance(condition, Cmp):
        return frozenset({condition.column})
    if isinstance(condition, Not):
        return columns_of(condition.item)
    return frozenset().union(*(columns_of(item) for item in condition.items))
