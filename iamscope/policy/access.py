"""``Access``: what a principal may do and see. Immutable; shared by identical identities."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iamscope.policy.rows import NONE, And, AttrRef, Cmp, Condition, Not, RowPlan, Scalar
from iamscope.policy.traces import TraceScope

__all__ = ["Access", "AttributeValue", "describe_plan", "permission_matches"]


@dataclass(frozen=True, slots=True)
class AttributeValue:
    """A resolved attribute: its values and, for each, where it came from."""

    values: tuple[Scalar, ...]
    sources: tuple[str, ...]  # "binding:<label>" or "claim:<path>", one per value
    #: ((type, value), ...): a key that tells 1, 1.0 and True apart, built once.
    typed: tuple[tuple[type, Scalar], ...] = field(repr=False, compare=False)

    @classmethod
    def of(cls, values: tuple[Scalar, ...], sources: tuple[str, ...]) -> AttributeValue:
        return cls(values, sources, tuple((type(v), v) for v in values))


def permission_matches(granted: str, wanted: str) -> bool:
    """``*`` matches all; ``sales:*`` matches ``sales:read`` and ``sales:x:y``; else equality."""
    if granted == "*" or granted == wanted:
        return True
    return granted.endswith(":*") and wanted.startswith(granted[:-1])


@dataclass(frozen=True, slots=True, eq=False)
class Access:
    roles: frozenset[str]
    permissions: frozenset[str]
    rows: Mapping[str, RowPlan]
    traces: TraceScope
    owner: str | None
    policy_version: str
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    #: Attributes a row rule needed but the principal lacks (each rule was dropped).
    missing: frozenset[str] = frozenset()
    #: Per-request permission answers, memoised on the shared object.
    _can: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def can(self, permission: str) -> bool:
        """Whether a granted permission (with ``*`` wildcards) covers ``permission``."""
        answer = self._can.get(permission)
        if answer is None:
            answer = any(permission_matches(g, permission) for g in self.permissions)
            if len(self._can) < 1024:
                self._can[permission] = answer
        return answer

    def rows_for(self, dataset: str) -> RowPlan:
        """The row plan for ``dataset``; a dataset no role mentions is ``NONE``."""
        return self.rows.get(dataset, NONE)

    def explain(self) -> dict[str, Any]:
        """Roles, permissions, attribute provenance, plans, trace scope, owner and why."""
        return {
            "policy_version": self.policy_version,
            "roles": sorted(self.roles),
            "permissions": sorted(self.permissions),
            "attributes": {
                name: [{"value": v, "source": s} for v, s in zip(a.values, a.sources, strict=True)]
                for name, a in sorted(self.attributes.items())
            },
            "attribute_missing": sorted(self.missing),
            "rows": {name: describe_plan(plan) for name, plan in sorted(self.rows.items())},
            "traces": self.traces.explain(),
            "owner": self.owner,
        }


def describe_plan(plan: RowPlan) -> str:
    """A readable, SQL-like rendering for explanations (not for execution)."""
    if plan.condition is None:
        return plan.kind
    return _describe(plan.condition)


def _describe(c: Condition) -> str:
    if isinstance(c, Cmp):
        symbol = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
        if c.op == "is_null":
            return f"{c.column} IS {'' if c.value else 'NOT '}NULL"
        if isinstance(c.value, AttrRef):
            return f"{c.column} {c.op} {c.value}"
        if c.op in ("in", "not_in"):
            values = c.value if isinstance(c.value, tuple) else (c.value,)
            word = "IN" if c.op == "in" else "NOT IN"
            return f"{c.column} {word} ({', '.join(repr(v) for v in values)})"
        return f"{c.column} {symbol[c.op]} {c.value!r}"
    if isinstance(c, Not):
        return f"NOT ({_describe(c.item)})"
    joiner = " AND " if isinstance(c, And) else " OR "
    return "(" + joiner.join(_describe(i) for i in c.items) + ")"
