"""The policy as loaded: attributes, roles, bindings. Plain immutable data, no logic.

Built by :mod:`iamscope.policy.loader` (which owns every validation rule) and compiled
by :mod:`iamscope.policy.compiler` into indexes for resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from iamscope.policy.rows import Condition, Scalar
from iamscope.policy.traces import TraceGrant

__all__ = ["SINGLE_VALUED_CLAIMS", "AttributeSpec", "Binding", "Policy", "Role", "RoleRows"]

#: Claims the JWT registries define as one string (RFC 7519 ``iss``, ``sub``, ``jti``;
#: OIDC ``azp``; RFC 9068 ``client_id``). A binding selecting one of these matches only a
#: string, never a list, so bindings selecting different values of one of them can never
#: match the same token. Any other claim may arrive as a list holding several values.
SINGLE_VALUED_CLAIMS = frozenset({"iss", "sub", "jti", "azp", "client_id"})


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """A declared user attribute. ``claim``: also read it from the verified token."""

    name: str
    multi: bool = False
    claim: str | None = None
    issuer: str | None = None  # only this issuer's tokens supply the claim


@dataclass(frozen=True, slots=True)
class RoleRows:
    """A role's grant on one dataset: every row, or rules ORed (each rule a template)."""

    all: bool = False
    rules: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    permissions: frozenset[str] = frozenset()
    rows: Mapping[str, RoleRows] = field(default_factory=dict)
    traces: tuple[TraceGrant, ...] = ()


@dataclass(frozen=True, slots=True)
class Binding:
    """Who gets which roles: selectors (ANDed) → roles, attribute values, owner team.

    ``groups`` match when the principal is in any of them; ``claims`` when every named
    claim has one of the listed values; ``issuer`` names a configured issuer.
    """

    index: int
    label: str
    roles: tuple[str, ...]
    groups: frozenset[str] = frozenset()
    issuer: str | None = None
    claims: Mapping[str, frozenset[str]] = field(default_factory=dict)
    attributes: Mapping[str, tuple[Scalar, ...]] = field(default_factory=dict)
    owner: str | None = None
    priority: int = 0
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    attributes: Mapping[str, AttributeSpec]
    roles: Mapping[str, Role]
    bindings: tuple[Binding, ...]
    source: str | None = None
    warnings: tuple[str, ...] = ()
