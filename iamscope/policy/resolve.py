"""Compiling a policy into indexes, and resolving a ``Principal`` into an ``Access``.

Resolution cost grows with the principal's groups and the number of distinct claim
paths bindings use, not with the number of bindings: bindings are indexed by group,
by (claim path, value) and by issuer. Results are interned twice: by the exact set of
matched bindings (the fast path), then by content, so identities with the same roles
and attribute values share one ``Access`` object.

Deny by default throughout: no binding, no role; no role, no permission, no rows
(``NONE``), no trace grant. A rule that needs an attribute the principal lacks grants
nothing and the decision records ``attribute_missing``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from iamscope.policy.access import Access, AttributeValue
from iamscope.policy.model import SINGLE_VALUED_CLAIMS, AttributeSpec, Binding, Policy, RoleRows
from iamscope.policy.rows import ALL, NONE, And, AttrRef, Cmp, Condition, Not, Or, RowPlan, Scalar
from iamscope.policy.traces import TraceScope
from iamscope.tokens.claims import lookup
from iamscope.tokens.principal import Principal

__all__ = ["CompiledPolicy"]

CLAIM_PRIORITY = -(2**31)  # values read from the token lose to any binding's value


class _RoleSet(NamedTuple):
    names: frozenset[str]
    permissions: frozenset[str]
    traces: TraceScope
    datasets: tuple[tuple[str, tuple[RoleRows, ...]], ...]


class CompiledPolicy:
    """A policy ready to resolve principals. Thread-safe; shared by every request."""

    def __init__(self, policy: Policy, *, intern_limit: int = 100_000) -> None:
        self.policy = policy
        self.version = policy.version
        # Index entries carry whether the binding needs a full check once found: a binding
        # selected only by group needs none (the index lookup was the check).
        self._by_group: dict[str, list[tuple[Binding, bool]]] = {}
        self._by_claim: dict[tuple[str, str], list[tuple[Binding, bool]]] = {}
        self._by_issuer: dict[str | None, list[Binding]] = {}
        for b in policy.bindings:
            if b.groups:
                check = b.issuer is not None or bool(b.claims)
                for group in b.groups:
                    self._by_group.setdefault(group, []).append((b, check))
            elif b.claims:
                path = min(b.claims)  # any one claim narrows; the rest is checked per match
                check = b.issuer is not None or len(b.claims) > 1
                for value in b.claims[path]:
                    self._by_claim.setdefault((path, value), []).append((b, check))
            else:
                self._by_issuer.setdefault(b.issuer, []).append(b)
        # A grant's plan depends only on the values of the attributes it references:
        # memoise it by those values (few distinct ones: regions, accounts), so a new
        # identity usually costs a dict lookup per dataset, not a tree rebuild.
        self._refs: dict[int, tuple[str, ...]] = {
            id(grant): tuple(sorted({n for rule in grant.rules for n in _refs(rule)}))
            for role in policy.roles.values()
            for grant in role.rows.values()
        }
        self._plans: dict[tuple[Any, ...], tuple[RowPlan, frozenset[str]]] = {}
        self._role_sets: dict[tuple[str, ...], _RoleSet] = {}
        self._claim_paths = tuple(sorted({path for path, _ in self._by_claim}))
        self._claim_attributes = tuple(
            (spec, spec.claim) for spec in policy.attributes.values() if spec.claim is not None
        )
        #: "binding:<label>" by binding index, the provenance of the attribute values it
        #: sets; filled as bindings first match (formatting it each time cost ~5 % of a
        #: cold resolution; up front, memory for every binding of a large policy).
        self._sources: dict[int, str] = {}
        self._intern_limit = intern_limit
        self._by_match: dict[tuple[Any, ...], Access] = {}
        self._by_content: dict[tuple[Any, ...], Access] = {}
        self._lock = threading.Lock()

    # --- matching --------------------------------------------------------------------

    def matching(self, principal: Principal) -> list[Binding]:
        """Bindings that match ``principal``, in policy order."""
        found: dict[int, Binding] = {}
        by_group = self._by_group
        for group in principal.groups:
            for b, check in by_group.get(group, ()):
                if not check or _matches(b, principal):
                    found[b.index] = b
        for path in self._claim_paths:
            for value in _claim_strings(principal.claims, path):
                for b, check in self._by_claim.get((path, value), ()):
                    if not check or _matches(b, principal):
                        found[b.index] = b
        for b in self._by_issuer.get(None, ()):
            found[b.index] = b
        for b in self._by_issuer.get(principal.issuer, ()):
            found[b.index] = b
        return [found[i] for i in sorted(found)]

    # --- resolution ------------------------------------------------------------------

    def resolve(self, principal: Principal) -> Access:
        matched = self.matching(principal)
        claimed = tuple(
            (spec.name, _attribute_claim(principal, path, spec))
            for spec, path in self._claim_attributes
            if spec.issuer is None or spec.issuer == principal.issuer
        )
        key = (tuple(b.index for b in matched), claimed)
        access = self._by_match.get(key)
        if access is None:
            access = self._intern(self._build(matched, claimed))
            with self._lock:
                if len(self._by_match) >= self._intern_limit:
                    self._by_match.clear()  # bounded; a miss only costs a rebuild
                self._by_match[key] = access
        return access

    def _intern(self, access: Access) -> Access:
        key = (
            access.roles,
            access.owner,
            access.missing,
            tuple(sorted((n, a.typed, a.sources) for n, a in access.attributes.items())),
        )
        with self._lock:
            shared = self._by_content.get(key)
            if shared is not None:
                return shared
            if len(self._by_content) >= self._intern_limit:
                self._by_content.clear()
            self._by_content[key] = access
        return access

    def _build(
        self, matched: list[Binding], claimed: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> Access:
        names: dict[str, None] = {}
        valued = False  # (one pass: a generator per check costs a cold resolution 0.3 µs)
        for b in matched:
            for r in b.roles:
                names[r] = None
            valued = valued or bool(b.attributes)
        role_set = self._role_set(tuple(names))
        if valued or any(values for _, values in claimed):
            attributes, conflicts = _attributes(
                self.policy.attributes, matched, dict(claimed), self._sources
            )
        else:
            attributes, conflicts = {}, []
        missing: set[str] = set(conflicts)
        rows: dict[str, RowPlan] = {}
        for dataset, grants in role_set.datasets:
            if len(grants) == 1:
                rows[dataset] = self._single_plan(grants[0], attributes, missing)
            else:
                rows[dataset] = _plan(grants, attributes, self.policy.attributes, missing)
        return Access(
            roles=role_set.names,
            permissions=role_set.permissions,
            rows=MappingProxyType(rows),
            traces=role_set.traces,
            owner=_owner(matched),
            policy_version=self.version,
            attributes=MappingProxyType(attributes),
            missing=frozenset(missing),
        )

    def _role_set(self, names: tuple[str, ...]) -> _RoleSet:
        """What a set of roles grants regardless of attributes; memoised, since far fewer
        role sets than binding sets occur."""
        found = self._role_sets.get(names)
        if found is not None:
            return found
        roles = [self.policy.roles[r] for r in names]
        by_dataset: dict[str, list[RoleRows]] = {}
        for role in roles:
            for dataset, grant in role.rows.items():
                by_dataset.setdefault(dataset, []).append(grant)
        # By identity: hashing a grant's fields costs more than the duplicates ever would.
        traces = {id(t): t for role in roles for t in role.traces}
        found = _RoleSet(
            frozenset(names),
            frozenset().union(*(role.permissions for role in roles)),
            TraceScope(tuple(traces.values())),
            tuple((d, tuple(g)) for d, g in by_dataset.items()),
        )
        with self._lock:
            if len(self._role_sets) >= self._intern_limit:
                self._role_sets.clear()
            self._role_sets[names] = found
        return found

    def _single_plan(
        self, grant: RoleRows, attributes: Mapping[str, AttributeValue], missing: set[str]
    ) -> RowPlan:
        refs = self._refs[id(grant)]
        if len(refs) == 1:
            attr = attributes.get(refs[0])
            key: tuple[Any, ...] = (id(grant), attr.typed if attr is not None else None)
        else:
            key = (id(grant), *[a.typed if (a := attributes.get(n)) else None for n in refs])
        memo = self._plans.get(key)
        if memo is None:
            lacking: set[str] = set()
            memo = (_plan([grant], attributes, self.policy.attributes, lacking), frozenset(lacking))
            with self._lock:
                if len(self._plans) >= self._intern_limit:
                    self._plans.clear()
                self._plans[key] = memo
        missing.update(memo[1])
        return memo[0]

    # --- explanation -----------------------------------------------------------------

    def explain(self, principal: Principal) -> dict[str, Any]:
        """Access.explain() plus every binding's verdict for this principal and why."""
        found = self.matching(principal)
        matched = {b.index for b in found}
        verdicts = []
        for b in self.policy.bindings:
            verdicts.append(
                {
                    "binding": b.label,
                    "matched": b.index in matched,
                    "why": "matched" if b.index in matched else _why_not(b, principal),
                }
            )
        return {
            **self.resolve(principal).explain(),
            "bindings": [b.label for b in found],
            "binding_verdicts": verdicts,
        }


# --- pure helpers ------------------------------------------------------------------------


def _claim_strings(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    value = lookup(claims, path)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, bool):
        return ("true" if value else "false",)
    if isinstance(value, int):
        return (str(value),)
    if isinstance(value, list | tuple) and path not in SINGLE_VALUED_CLAIMS:
        # A list of one-string claim would let one token match bindings the loader
        # proved exclusive (no tie check between them): it matches nothing instead.
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _typed(values: tuple[Scalar, ...]) -> tuple[Any, ...]:
    """Values with their types: 1, 1.0 and True are equal in Python, not in a database."""
    return tuple((type(v), v) for v in values)


def _attribute_claim(principal: Principal, path: str, spec: AttributeSpec) -> tuple[str, ...]:
    """Attribute values from a claim, failing closed: an empty string, a non-string
    element, or several values for a single-valued attribute all mean "missing" (a
    rule using it then grants nothing), never a value that could widen a NOT or NE."""
    value = lookup(principal.claims, path)
    if isinstance(value, str):
        values: tuple[Any, ...] = (value,)
    elif isinstance(value, list | tuple):
        values = tuple(value)
    else:
        return ()
    if not values or not all(isinstance(v, str) and v for v in values):
        return ()
    if not spec.multi and len(values) != 1:
        return ()
    return values


def _matches(b: Binding, principal: Principal) -> bool:
    if b.issuer is not None and b.issuer != principal.issuer:
        return False
    if b.groups and b.groups.isdisjoint(principal.groups):
        return False
    return all(
        not values.isdisjoint(_claim_strings(principal.claims, path))
        for path, values in b.claims.items()
    )


def _why_not(b: Binding, principal: Principal) -> str:
    if b.issuer is not None and b.issuer != principal.issuer:
        return f"issuer is {principal.issuer!r}, binding wants {b.issuer!r}"
    if b.groups and b.groups.isdisjoint(principal.groups):
        return "in none of the groups " + ", ".join(sorted(b.groups))
    for path, values in b.claims.items():
        if values.isdisjoint(_claim_strings(principal.claims, path)):
            return f"claim {path!r} is not one of " + ", ".join(sorted(values))
    return "matched"  # pragma: no cover - callers ask only for unmatched bindings


def _attributes(
    specs: Mapping[str, AttributeSpec],
    matched: list[Binding],
    claimed: Mapping[str, tuple[str, ...]],
    sources: dict[int, str],
) -> tuple[dict[str, AttributeValue], list[str]]:
    # multi-valued: (type, value) → (value, first source)
    merged: dict[str, dict[tuple[type, Scalar], tuple[Scalar, str]]] = {}
    single: dict[str, list[tuple[int, tuple[Scalar, ...], str]]] = {}
    for name, from_token in claimed.items():
        if not from_token:
            continue
        source = f"claim:{specs[name].claim}"
        if specs[name].multi:
            into = merged.setdefault(name, {})
            for text in from_token:
                into.setdefault((str, text), (text, source))
        else:
            single.setdefault(name, []).append((CLAIM_PRIORITY, from_token, source))

    for b in matched:
        if b.attributes:
            known = sources.get(b.index)
            source = (
                known if known is not None else sources.setdefault(b.index, f"binding:{b.label}")
            )
            for name, given in b.attributes.items():
                if specs[name].multi:  # inlined: the common case, once per binding
                    into = merged.setdefault(name, {})
                    for value in given:
                        into.setdefault((type(value), value), (value, source))
                else:
                    single.setdefault(name, []).append((b.priority, given, source))
    out: dict[str, AttributeValue] = {}
    for name, values in merged.items():
        pairs = list(values.values())
        out[name] = AttributeValue(
            tuple([v for v, _ in pairs]), tuple([src for _, src in pairs]), tuple(values)
        )
    conflicts = []
    for name, found in single.items():
        top = max(p for p, _, _ in found)
        best = {_typed(vals): (vals, source) for p, vals, source in found if p == top}
        if len(best) > 1:
            conflicts.append(name)  # an unresolvable tie: fail closed, as if missing
            continue
        ((winner, source),) = best.values()
        out[name] = AttributeValue(winner[:1], (source,), _typed(winner[:1]))
    return out, conflicts


def _owner(matched: list[Binding]) -> str | None:
    owners = [b for b in matched if b.owner is not None]
    if not owners:
        return None
    top = max(b.priority for b in owners)
    return next(b.owner for b in owners if b.priority == top)


def _plan(
    grants: Sequence[RoleRows],
    attributes: Mapping[str, AttributeValue],
    specs: Mapping[str, AttributeSpec],
    missing: set[str],
) -> RowPlan:
    if any(g.all for g in grants):
        return ALL
    rules: dict[Condition, None] = {}
    for grant in grants:
        for template in grant.rules:
            bound = _bind(template, attributes, specs, missing)
            if bound is not None:
                rules[bound] = None
    if not rules:
        return NONE
    items = tuple(rules)
    return RowPlan.where(items[0] if len(items) == 1 else Or(items))


def _bind(
    c: Condition,
    attributes: Mapping[str, AttributeValue],
    specs: Mapping[str, AttributeSpec],
    missing: set[str],
) -> Condition | None:
    """The template with every ``$attr`` replaced, or None when one is missing."""
    if isinstance(c, Cmp):
        if not isinstance(c.value, AttrRef):
            return c
        name = c.value.name
        attr = attributes.get(name)
        if attr is None:
            missing.add(name)
            return None
        return _bind_cmp(c, attr.values, specs[name].multi)
    if isinstance(c, Not):
        item = _bind(c.item, attributes, specs, missing)
        return None if item is None else Not(item)
    items = [_bind(i, attributes, specs, missing) for i in c.items]
    if any(i is None for i in items):
        return None
    bound = tuple(i for i in items if i is not None)
    return And(bound) if isinstance(c, And) else Or(bound)


def _refs(c: Condition) -> set[str]:
    """Names of the attributes a template references."""
    if isinstance(c, Cmp):
        return {c.value.name} if isinstance(c.value, AttrRef) else set()
    if isinstance(c, Not):
        return _refs(c.item)
    return set().union(*(_refs(i) for i in c.items))


def _bind_cmp(c: Cmp, values: tuple[Scalar, ...], multi: bool) -> Cmp:
    if c.op in ("in", "not_in"):
        return Cmp(c.op, c.column, values)
    if multi and c.op == "eq":
        return Cmp("in", c.column, values)
    if multi and c.op == "ne":
        return Cmp("not_in", c.column, values)
    return Cmp(c.op, c.column, values[0])
