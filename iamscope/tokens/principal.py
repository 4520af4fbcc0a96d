"""The verified identity: who made this request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Principal", "PrincipalKind"]

PrincipalKind = Literal["user", "service", "workload"]


@dataclass(frozen=True, slots=True, eq=False)
class Principal:
    """A verified token, mapped through its issuer's claim layout. Immutable.

    ``attributes`` hold the values the claim mapping extracted (always tuples of
    strings, so the policy decides what is single- or multi-valued); ``claims`` is the
    whole verified payload, read-only, for bindings on raw claim values (a CI token's
    ``repository``). Neither is ever logged or put in an HTTP answer by iamscope.
    """

    issuer: str  #: the configured issuer's name
    issuer_url: str
    subject: str
    kind: PrincipalKind
    expires_at: float
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    audience: tuple[str, ...] = ()
    issued_at: float | None = None
    token_id: str | None = None
    #: The ``kid`` of the key that verified the token (a fleet may revoke a key by it).
    key_id: str | None = field(default=None, repr=False)
    #: The thumbprint of the key that verified the token: when the issuer retires that
    #: key, the decisions cached for this principal are evicted.
    key_thumbprint: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        # Subject and groups identify a person: keep them out of reprs that end up in logs.
        return (
            f"Principal(issuer={self.issuer!r}, kind={self.kind!r}, "
            f"groups={len(self.groups)}, roles={len(self.roles)}, expires_at={self.expires_at})"
        )
