"""Loading a policy (contract 3) with precise errors: file, line, key, "did you mean".

Accepts the ``policy`` section of a config file, a policy file of its own (YAML or
JSON), or a plain dict. Every rule that can be checked before a request arrives is
checked here: unknown keys, undefined roles, undeclared attributes, operators and
operand shapes, multi-valued attributes used where one value is needed, and
single-valued ties that no priority resolves. Lint findings (roles never bound,
bindings that can never match) are returned as warnings, not errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from iamscope._yaml import (
    did_you_mean,
    item_line,
    key_text,
    parse_text,
    read_text,
    reject_huge_integers,
    shown,
)
from iamscope.errors import ConfigError, PlanUnsupported
from iamscope.policy.model import (
    SINGLE_VALUED_CLAIMS,
    AttributeSpec,
    Binding,
    Policy,
    Role,
    RoleRows,
)
from iamscope.policy.render.conditions import checked_scalar, checked_values
from iamscope.policy.rows import COMPARISONS, And, AttrRef, Cmp, Condition, Not, Or, Scalar
from iamscope.policy.traces import ACTIONS, WILDCARD, TraceGrant
from iamscope.tokens.issuer import IssuerConfig

__all__ = ["load_policy", "policy_from_mapping", "policy_from_text"]

_POLICY_KEYS = ("version", "attributes", "roles", "bindings")
_ATTRIBUTE_KEYS = ("multi", "claim", "issuer")
_ROLE_KEYS = ("permissions", "rows", "traces")
_BINDING_KEYS = ("name", "groups", "issuer", "claims", "roles", "attributes", "owner", "priority")
_TRACE_KEYS = ("project", "environments", "services", "actions")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@/-]*")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PERMISSION = re.compile(r"\*|[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*(:\*)?")
_COMBINATORS = ("and", "or", "not")
# Operators that compare with one value: a multi-valued attribute cannot feed them.
_ORDERING = ("lt", "le", "gt", "ge")


class _Ctx:
    """Where we are, for error messages: the file, and the line of the nearest enclosing
    part that has one (a value that is not a mapping carries no line of its own)."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.near: int | None = None

    def at(self, node: Any, key: str | None = None) -> None:
        self.near = _line(node, key) or self.near

    def fail(self, message: str, node: Any = None, key: str | None = None) -> ConfigError:
        line = _line(node, key) or self.near
        return ConfigError(message, source=self.source, line=line, key=key)


def _line(node: Any, key: str | None) -> int | None:
    lines = getattr(node, "lines", None)
    if key is not None and isinstance(lines, dict) and key in lines:
        return int(lines[key])
    line = getattr(node, "line", None)
    return int(line) if isinstance(line, int) else None


def _mapping(
    ctx: _Ctx, node: Any, what: str, allowed: Sequence[str] | None = None
) -> Mapping[str, Any]:
    if not isinstance(node, Mapping):
        raise ctx.fail(f"{what} must be a mapping", node)
    if allowed is not None:
        for key in node:
            if key not in allowed:
                raise ctx.fail(
                    f"unknown {what} key {shown(key)}{did_you_mean(key, allowed)}",
                    node,
                    key_text(key),
                )
    return node


def _strings(ctx: _Ctx, node: Any, parent: Any, key: str) -> tuple[str, ...]:
    if isinstance(node, str):
        return (node,)
    if isinstance(node, list) and all(isinstance(v, str) for v in node):
        return tuple(node)
    raise ctx.fail(f"{key!r} must be a string or a list of strings", parent, key)


def load_policy(
    source: str | Path | Mapping[str, Any],
    *,
    issuers: Iterable[IssuerConfig] | None = None,
) -> Policy:
    """A policy from a file (its own, or a config file's ``policy`` section) or a dict."""
    if isinstance(source, Mapping):
        return policy_from_mapping(source, issuers=issuers)
    return policy_from_text(read_text(Path(source)), str(source), issuers=issuers)


def policy_from_text(
    text: str, source: str | None, *, issuers: Iterable[IssuerConfig] | None = None
) -> Policy:
    """A policy from a file's text (its own, or a config file's ``policy`` section):
    hot reload parses exactly the bytes it saw settle, not a second read."""
    data = parse_text(text, source)
    if not (isinstance(data, Mapping) and "policy" in data and "roles" not in data):
        return policy_from_mapping(data, issuers=issuers, source=source)
    try:  # a config file's policy section
        return policy_from_mapping(data["policy"], issuers=issuers, source=source)
    except ConfigError as exc:
        line = getattr(data, "lines", {}).get("policy")
        if exc.line is not None or line is None:
            raise
        raise ConfigError(exc.detail, source=source, line=line, key=exc.key) from None


def policy_from_mapping(
    data: Any,
    *,
    issuers: Iterable[IssuerConfig] | None = None,
    source: str | None = None,
) -> Policy:
    if source is None:  # a file's integers were bounded as its text was read
        reject_huge_integers(data, what="policy")
    try:
        return _policy(data, issuers, source)
    except RecursionError:
        raise ConfigError("policy is nested too deeply", source=source) from None


def _policy(data: Any, issuers: Iterable[IssuerConfig] | None, source: str | None) -> Policy:
    ctx = _Ctx(source)
    ctx.at(data)
    data = _mapping(ctx, data, "policy", _POLICY_KEYS)
    version = data.get("version")
    if not isinstance(version, str) or not version:
        # A YAML number would be read as one: 1.10 becomes "1.1".
        raise ctx.fail(
            "'version' must be a quoted string such as \"2026-11-22.1\"", data, "version"
        )
    ctx.at(data, "attributes")
    attributes = _attributes(ctx, data.get("attributes") or {})
    ctx.at(data, "roles")
    roles = _roles(ctx, data.get("roles") or {}, attributes)
    ctx.at(data, "bindings")
    issuer_list = tuple(issuers) if issuers is not None else None
    bindings = _bindings(ctx, data.get("bindings") or [], roles, attributes, issuer_list)
    _check_ties(ctx, bindings, attributes, issuer_list)
    warnings = _lint(roles, bindings, issuer_list)
    return Policy(
        version, MappingProxyType(attributes), MappingProxyType(roles), bindings, source, warnings
    )


# --- attributes ----------------------------------------------------------------------


def _attributes(ctx: _Ctx, node: Any) -> dict[str, AttributeSpec]:
    node = _mapping(ctx, node, "attributes")
    out = {}
    for name, spec in node.items():
        ctx.at(node, key_text(name))
        if not isinstance(name, str) or not _COLUMN.fullmatch(name):
            raise ctx.fail(
                f"attribute name {shown(name)} must be an identifier", node, key_text(name)
            )
        spec = _mapping(
            ctx, spec if spec is not None else {}, f"attribute {name!r}", _ATTRIBUTE_KEYS
        )
        multi = spec.get("multi", False)
        if not isinstance(multi, bool):
            raise ctx.fail(f"attribute {name!r}: 'multi' must be true or false", spec, "multi")
        claim = spec.get("claim")
        if claim is not None and not isinstance(claim, str):
            raise ctx.fail(f"attribute {name!r}: 'claim' must be a claim path", spec, "claim")
        issuer = spec.get("issuer")
        if issuer is not None and (not isinstance(issuer, str) or claim is None):
            raise ctx.fail(
                f"attribute {name!r}: 'issuer' names the issuer whose 'claim' is read",
                spec,
                "issuer",
            )
        out[name] = AttributeSpec(name, multi, claim, issuer)
    return out


# --- roles ---------------------------------------------------------------------------


def _roles(ctx: _Ctx, node: Any, attributes: Mapping[str, AttributeSpec]) -> dict[str, Role]:
    node = _mapping(ctx, node, "roles")
    out = {}
    for name, spec in node.items():
        ctx.at(node, key_text(name))
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ctx.fail(f"role name {shown(name)} is not a valid name", node, key_text(name))
        spec = _mapping(ctx, spec if spec is not None else {}, f"role {name!r}", _ROLE_KEYS)
        permissions = _strings(ctx, spec.get("permissions", []), spec, "permissions")
        for permission in permissions:
            if not _PERMISSION.fullmatch(permission):
                raise ctx.fail(
                    f"role {name!r}: permission {permission!r} is not 'name[:action]', "
                    "'name:*' or '*'",
                    spec,
                    "permissions",
                )
        rows = _role_rows(ctx, spec.get("rows") or {}, attributes, name)
        traces = _traces(ctx, spec.get("traces") or [], spec, name)
        out[name] = Role(name, frozenset(permissions), MappingProxyType(rows), traces)
    return out


def _role_rows(
    ctx: _Ctx, node: Any, attributes: Mapping[str, AttributeSpec], role: str
) -> dict[str, RoleRows]:
    node = _mapping(ctx, node, f"role {role!r} rows")
    out = {}
    for dataset, spec in node.items():
        if not isinstance(dataset, str) or not _COLUMN.fullmatch(dataset):
            raise ctx.fail(
                f"dataset name {shown(dataset)} must be an identifier", node, key_text(dataset)
            )
        if spec == "all":
            out[dataset] = RoleRows(all=True)
        elif spec == "none" or spec == []:
            out[dataset] = RoleRows()
        elif isinstance(spec, Mapping):
            out[dataset] = RoleRows(rules=(_rule(ctx, spec, attributes),))
        elif isinstance(spec, list) and all(isinstance(r, Mapping) for r in spec):
            out[dataset] = RoleRows(rules=tuple(_rule(ctx, r, attributes) for r in spec))
        else:
            raise ctx.fail(
                f"rows for {dataset!r} must be 'all', 'none', a rule or a list of rules",
                node,
                dataset,
            )
    return out


def _rule(ctx: _Ctx, node: Mapping[str, Any], attributes: Mapping[str, AttributeSpec]) -> Condition:
    """A rule mapping: each key a column (or and/or/not), all ANDed."""
    if not node:
        raise ctx.fail("an empty row rule would match every row; write 'all'", node)
    items: list[Condition] = []
    for key, value in node.items():
        if key in _COMBINATORS:
            items.append(_combinator(ctx, node, key, value, attributes))
        elif isinstance(key, str) and _COLUMN.fullmatch(key):
            items.extend(_column(ctx, node, key, value, attributes))
        else:
            raise ctx.fail(
                f"{shown(key)} is neither a column name nor one of {list(_COMBINATORS)}"
                f"{did_you_mean(key, _COMBINATORS)}",
                node,
                key_text(key),
            )
    return items[0] if len(items) == 1 else And(tuple(items))


def _combinator(
    ctx: _Ctx, node: Any, key: str, value: Any, attributes: Mapping[str, AttributeSpec]
) -> Condition:
    if key == "not":
        if not isinstance(value, Mapping):
            raise ctx.fail("'not' takes one rule", node, key)
        return Not(_rule(ctx, value, attributes))
    if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) for v in value):
        raise ctx.fail(f"{key!r} takes a non-empty list of rules", node, key)
    parts = tuple(_rule(ctx, v, attributes) for v in value)
    return And(parts) if key == "and" else Or(parts)


def _column(
    ctx: _Ctx, node: Any, column: str, value: Any, attributes: Mapping[str, AttributeSpec]
) -> list[Condition]:
    if isinstance(value, Mapping):
        if not value:
            raise ctx.fail(f"column {column!r} has no operator", node, column)
        return [
            _literal_checked(ctx, value, _operator(ctx, value, column, op, operand, attributes))
            for op, operand in value.items()
        ]
    if value is None:
        return [Cmp("is_null", column, True)]
    if isinstance(value, list):
        return [_literal_checked(ctx, node, Cmp("in", column, _scalars(ctx, node, column, value)))]
    cmp = Cmp("eq", column, _operand(ctx, node, column, value, attributes, "eq"))
    return [_literal_checked(ctx, node, cmp)]


def _literal_checked(ctx: _Ctx, node: Any, cmp: Condition) -> Condition:
    """Refuse at load time what every renderer would refuse on every request."""
    if not isinstance(cmp, Cmp) or isinstance(cmp.value, AttrRef) or cmp.op == "is_null":
        return cmp
    try:
        if cmp.op in ("in", "not_in"):
            checked_values(cmp)
        else:
            checked_scalar(cmp)
    except PlanUnsupported as exc:
        raise ctx.fail(f"{cmp.column}: {exc.message}", node, cmp.column) from None
    return cmp


def _operator(
    ctx: _Ctx,
    node: Mapping[str, Any],
    column: str,
    op: Any,
    operand: Any,
    attributes: Mapping[str, AttributeSpec],
) -> Condition:
    if op not in COMPARISONS:
        raise ctx.fail(
            f"unknown operator {shown(op)} on {column!r}{did_you_mean(op, COMPARISONS)}",
            node,
            key_text(op),
        )
    if op == "is_null":
        if not isinstance(operand, bool):
            raise ctx.fail(f"'is_null' on {column!r} takes true or false", node, op)
        return Cmp("is_null", column, operand)
    if op in ("in", "not_in"):
        if isinstance(operand, list):
            return Cmp(op, column, _scalars(ctx, node, column, operand))
        return Cmp(op, column, _operand(ctx, node, column, operand, attributes, op))
    return Cmp(op, column, _operand(ctx, node, column, operand, attributes, op))


def _scalars(ctx: _Ctx, node: Any, column: str, values: list[Any]) -> tuple[Scalar, ...]:
    for v in values:
        if not _is_scalar(v) or (isinstance(v, str) and v.startswith("$")):
            raise ctx.fail(
                f"values for {column!r} must be literals (no lists of $refs)", node, column
            )
    return tuple(values)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _operand(
    ctx: _Ctx,
    node: Any,
    column: str,
    value: Any,
    attributes: Mapping[str, AttributeSpec],
    op: str,
) -> Scalar | AttrRef:
    if isinstance(value, str) and value.startswith("$$"):
        return value[1:]  # "$$x" is the literal "$x"
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        spec = attributes.get(name)
        if spec is None:
            raise ctx.fail(
                f"attribute {value!r} is used on {column!r} but not declared"
                f"{did_you_mean(name, list(attributes))}",
                node,
                column,
            )
        if spec.multi and op in _ORDERING:
            raise ctx.fail(
                f"{op!r} on {column!r} needs one value, but {value!r} is multi-valued", node, column
            )
        return AttrRef(name)
    if value is None or not _is_scalar(value):
        raise ctx.fail(f"the value for {column!r} must be a literal or a $attribute", node, column)
    if op in ("in", "not_in"):
        raise ctx.fail(f"{op!r} on {column!r} takes a list or a $attribute", node, column)
    return value  # type: ignore[no-any-return]


# --- trace grants ----------------------------------------------------------------------


def _traces(ctx: _Ctx, node: Any, parent: Any, role: str) -> tuple[TraceGrant, ...]:
    if not isinstance(node, list):
        raise ctx.fail(f"role {role!r}: 'traces' must be a list of grants", parent, "traces")
    grants = []
    for i, grant in enumerate(node):
        ctx.near = item_line(node, i) or ctx.near
        grant = _mapping(ctx, grant, f"role {role!r} trace grant", _TRACE_KEYS)
        project = grant.get("project")
        if not isinstance(project, str) or not project:
            raise ctx.fail(f"role {role!r}: a trace grant needs a 'project'", grant, "project")
        for key in ("actions", "environments", "services"):
            if grant.get(key) == []:
                raise ctx.fail(f"role {role!r}: empty {key!r} would grant nothing", grant, key)
        actions = _strings(ctx, grant.get("actions", ["read"]), grant, "actions")
        for action in actions:
            if action not in ACTIONS:
                raise ctx.fail(
                    f"unknown trace action {action!r}{did_you_mean(action, ACTIONS)}",
                    grant,
                    "actions",
                )
        envs = _strings(ctx, grant.get("environments", [WILDCARD]), grant, "environments")
        services = _strings(ctx, grant.get("services", [WILDCARD]), grant, "services")
        grants.append(TraceGrant(project, frozenset(actions), frozenset(envs), frozenset(services)))
    return tuple(grants)


# --- bindings --------------------------------------------------------------------------


def _bindings(
    ctx: _Ctx,
    node: Any,
    roles: Mapping[str, Role],
    attributes: Mapping[str, AttributeSpec],
    issuers: tuple[IssuerConfig, ...] | None,
) -> tuple[Binding, ...]:
    if not isinstance(node, list):
        raise ctx.fail("'bindings' must be a list", node)
    issuer_names = [i.name for i in issuers] if issuers is not None else None
    bindings = tuple(
        _binding(ctx, i, spec, roles, attributes, issuer_names, item_line(node, i))
        for i, spec in enumerate(node)
    )
    seen: set[str] = set()
    for b in bindings:
        if b.label in seen:
            raise ConfigError(
                f"two bindings are named {b.label!r}", source=ctx.source, line=b.line, key="name"
            )
        seen.add(b.label)
    return bindings


def _binding(
    ctx: _Ctx,
    index: int,
    node: Any,
    roles: Mapping[str, Role],
    attributes: Mapping[str, AttributeSpec],
    issuer_names: list[str] | None,
    line: int | None,
) -> Binding:
    ctx.near = line or ctx.near
    node = _mapping(ctx, node, "binding", _BINDING_KEYS)
    name = node.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ctx.fail("a binding's 'name' must be a string", node, "name")
    label = name if name is not None else f"bindings[{index}]"
    groups = _strings(ctx, node.get("groups", []), node, "groups")
    issuer = node.get("issuer")
    if issuer is not None:
        if not isinstance(issuer, str):
            raise ctx.fail(f"{label}: 'issuer' must be an issuer name", node, "issuer")
        if issuer_names is not None and issuer not in issuer_names:
            raise ctx.fail(
                f"{label}: unknown issuer {issuer!r}{did_you_mean(issuer, issuer_names)}",
                node,
                "issuer",
            )
    claims = _binding_claims(ctx, node, label)
    if not groups and not claims and issuer is None:
        raise ctx.fail(
            f"{label}: a binding needs 'groups', 'claims' or 'issuer' (it would match everyone)",
            node,
        )
    bound = _strings(ctx, node.get("roles", []), node, "roles")
    for role in bound:
        if role not in roles:
            raise ctx.fail(
                f"{label}: undefined role {role!r}{did_you_mean(role, list(roles))}", node, "roles"
            )
    values = _binding_attributes(ctx, node, label, attributes)
    owner = node.get("owner")
    if owner is not None and (not isinstance(owner, str) or not _NAME.fullmatch(owner)):
        raise ctx.fail(f"{label}: 'owner' must be a team name", node, "owner")
    priority = node.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ctx.fail(f"{label}: 'priority' must be an integer", node, "priority")
    return Binding(
        index=index,
        label=label,
        roles=bound,
        groups=frozenset(groups),
        issuer=issuer,
        claims=claims,
        attributes=values,
        owner=owner,
        priority=priority,
        line=_line(node, None),
    )


def _binding_claims(ctx: _Ctx, node: Mapping[str, Any], label: str) -> dict[str, frozenset[str]]:
    spec = node.get("claims", {})
    if not isinstance(spec, Mapping):
        raise ctx.fail(f"{label}: 'claims' must map claim paths to values", node, "claims")
    out = {}
    for path, value in spec.items():
        if not isinstance(path, str) or not path:
            raise ctx.fail(f"{label}: claim names must be strings", spec, key_text(path))
        if isinstance(value, bool | int):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        if value == []:
            raise ctx.fail(f"{label}: claim {path!r} lists no values (never matches)", spec, path)
        out[path] = frozenset(_strings(ctx, value, spec, path))
    return out


def _binding_attributes(
    ctx: _Ctx, node: Mapping[str, Any], label: str, attributes: Mapping[str, AttributeSpec]
) -> dict[str, tuple[Scalar, ...]]:
    spec = node.get("attributes", {})
    if not isinstance(spec, Mapping):
        raise ctx.fail(f"{label}: 'attributes' must be a mapping", node, "attributes")
    out: dict[str, tuple[Scalar, ...]] = {}
    for name, value in spec.items():
        decl = attributes.get(name)
        if decl is None:
            raise ctx.fail(
                f"{label}: attribute {shown(name)} is not declared"
                f"{did_you_mean(name, list(attributes))}",
                spec,
                key_text(name),
            )
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values or not all(_is_scalar(v) for v in values):
            raise ctx.fail(f"{label}: attribute {name!r} needs literal values", spec, str(name))
        try:  # the renderers' own checks: no NaN, NUL, or mixed text and numbers
            _literal_checked(ctx, spec, Cmp("in", "attribute", values))
        except ConfigError:
            raise ctx.fail(
                f"{label}: attribute {name!r} values must be text, or all numbers", spec, str(name)
            ) from None
        if not decl.multi and len(values) != 1:
            raise ctx.fail(f"{label}: attribute {name!r} is single-valued", spec, str(name))
        out[str(name)] = values
    return out


# --- cross-binding checks ----------------------------------------------------------------


def _possible_issuers(
    binding: Binding, issuers: tuple[IssuerConfig, ...] | None
) -> frozenset[str] | None:
    """Issuers whose principals could match ``binding`` (None: unknown, assume any)."""
    if issuers is None:
        return None if binding.issuer is None else frozenset({binding.issuer})
    names = {i.name for i in issuers if binding.issuer in (None, i.name)}
    if binding.groups:
        # A provider whose claim layout has no groups never yields a group to match.
        names &= {i.name for i in issuers if i.claim_map.groups}
    return frozenset(names)


def can_co_match(a: Binding, b: Binding, issuers: tuple[IssuerConfig, ...] | None) -> bool:
    """Whether one principal could match both bindings. Different values of one claim
    exclude each other only for claims that are always one string: any other claim may be
    a list holding both (``environment: [staging, production]``), and the matcher takes
    a list as "any of these"."""
    ia, ib = _possible_issuers(a, issuers), _possible_issuers(b, issuers)
    if ia is not None and ib is not None and not ia & ib:
        return False
    for path, values in a.claims.items():
        other = b.claims.get(path)
        if other is not None and not values & other and path in SINGLE_VALUED_CLAIMS:
            return False
    return True


def _check_ties(
    ctx: _Ctx,
    bindings: tuple[Binding, ...],
    attributes: Mapping[str, AttributeSpec],
    issuers: tuple[IssuerConfig, ...] | None,
) -> None:
    for name, spec in attributes.items():
        if spec.multi:
            continue
        by_priority: dict[int, dict[tuple[Scalar, ...], list[Binding]]] = {}
        for b in bindings:
            if name in b.attributes:
                values = b.attributes[name]
                by_priority.setdefault(b.priority, {}).setdefault(_typed(values), []).append(b)
        for groups in by_priority.values():
            buckets = list(groups.values())  # one bucket per distinct value
            for i, first in enumerate(buckets):
                for second in buckets[i + 1 :]:
                    for a in first:
                        for b in second:
                            if can_co_match(a, b, issuers):
                                raise ConfigError(
                                    f"{a.label} and {b.label} give single-valued attribute "
                                    f"{name!r} different values at the same priority "
                                    f"({a.priority}) and can match the same principal: set "
                                    "'priority' on one of them",
                                    source=ctx.source,
                                    line=b.line,
                                    key=name,
                                )


def _typed(values: tuple[Scalar, ...]) -> tuple[Any, ...]:
    # 1, 1.0 and True are equal in Python but not in a database.
    return tuple((type(v).__name__, v) for v in values)


def _attest_without_write(roles: Mapping[str, Role]) -> list[str]:
    """``attest`` keeps end-user attributes only on spans the exporter may also
    ``write`` (the gateway checks both), so an attest grant on a project no role can
    write to is dead: most likely a forgotten ``write``."""
    writable = {g.project for r in roles.values() for g in r.traces if "write" in g.actions}
    if WILDCARD in writable:
        return []
    return [
        f"role {name!r} grants 'attest' on traces project {g.project!r}, which no role may "
        "'write' to: attest takes effect only beside write on the same spans"
        for name, role in roles.items()
        for g in role.traces
        if "attest" in g.actions
        and (g.project not in writable if g.project != WILDCARD else not writable)
    ]


def _lint(
    roles: Mapping[str, Role],
    bindings: tuple[Binding, ...],
    issuers: tuple[IssuerConfig, ...] | None,
) -> tuple[str, ...]:
    warnings = []
    bound = {r for b in bindings for r in b.roles}
    for name in roles:
        if name not in bound:
            warnings.append(f"role {name!r} is never bound")
    warnings += _attest_without_write(roles)
    for b in bindings:
        possible = _possible_issuers(b, issuers)
        if possible is not None and not possible:
            warnings.append(
                f"{b.label} can never match: no configured issuer provides groups"
                + (f" for issuer {b.issuer!r}" if b.issuer else "")
            )
        if not b.roles and b.owner is None and not b.attributes:
            warnings.append(f"{b.label} grants nothing")
        if b.claims and b.issuer is None and (issuers is None or len(issuers) > 1):
            warnings.append(
                f"{b.label} matches claims from every issuer; name its 'issuer' so a token "
                "from another provider cannot carry the same claim values"
            )
    return tuple(warnings)
