"""Trace scopes: which observability projects, environments and services an identity may
read, write or share — the per-project roles of a tracing backend, decided in-process —
and for which of them a workload may ``attest`` its end users' identity on the spans it
exports through the OTLP gateway (see :mod:`iamscope.gateway`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["ACTIONS", "TraceGrant", "TraceScope"]

Action = Literal["read", "write", "share", "attest"]
ACTIONS: tuple[Action, ...] = ("read", "write", "share", "attest")
WILDCARD = "*"

T = TypeVar("T")


def _covers(allowed: frozenset[str], value: str | None) -> bool:
    # None: the caller did not narrow this dimension; any grant on it answers "some".
    return value is None or WILDCARD in allowed or value in allowed


@dataclass(frozen=True, slots=True)
class TraceGrant:
    """One grant: ``actions`` on ``project`` x ``environments`` x ``services`` (``*`` = any)."""

    project: str
    actions: frozenset[str]
    environments: frozenset[str] = frozenset({WILDCARD})
    services: frozenset[str] = frozenset({WILDCARD})

    def allows(
        self, action: str, project: str, environment: str | None, service: str | None
    ) -> bool:
        return (
            action in self.actions
            and (self.project == WILDCARD or self.project == project)
            and _covers(self.environments, environment)
            and _covers(self.services, service)
        )


@dataclass(frozen=True, slots=True)
class TraceScope:
    """The union of a principal's trace grants. Deny by default: no grant, no access."""

    grants: tuple[TraceGrant, ...] = ()

    def allows(
        self,
        action: str,
        project: str,
        environment: str | None = None,
        service: str | None = None,
    ) -> bool:
        """Whether ``action`` is allowed; an omitted environment/service means "any part of it"."""
        return any(g.allows(action, project, environment, service) for g in self.grants)

    def permits(
        self, action: str, project: str, environment: str | None, service: str | None
    ) -> bool:
        """Like :meth:`allows` for a concrete record: a missing environment or service is
        covered only by a wildcard grant (a sender that does not say where its spans come
        from cannot write into a named environment)."""
        return self._allows_record(
            action, {"project": project, "environment": environment, "service": service}
        )

    def projects(self, action: str = "read") -> frozenset[str]:
        """Projects with some grant for ``action`` (``*`` when a wildcard grant exists)."""
        return frozenset(g.project for g in self.grants if action in g.actions)

    def filter(
        self,
        records: Iterable[T],
        action: str = "read",
        *,
        key: Callable[[T], Mapping[str, Any]] | None = None,
    ) -> list[T]:
        """Records (span or trace summaries with ``project``, ``environment``, ``service``)
        the scope allows. A record missing a dimension is kept only under a wildcard."""
        kept = []
        for record in records:
            fields = key(record) if key is not None else record
            if not isinstance(fields, Mapping):
                raise TypeError("trace records must be mappings (or give key=)")
            if self._allows_record(action, fields):
                kept.append(record)
        return kept

    def _allows_record(self, action: str, fields: Mapping[str, Any]) -> bool:
        project = fields.get("project")
        if not isinstance(project, str):
            return False
        env, service = fields.get("environment"), fields.get("service")
        return any(
            g.allows(action, project, None, None)
            and _record_covers(g.environments, env)
            and _record_covers(g.services, service)
            for g in self.grants
        )

    def explain(self) -> list[dict[str, Any]]:
        return [
            {
                "project": g.project,
                "environments": sorted(g.environments),
                "services": sorted(g.services),
                "actions": sorted(g.actions),
            }
            for g in self.grants
        ]


def _record_covers(allowed: frozenset[str], value: Any) -> bool:
    # A record that does not say its environment is only visible to "any environment".
    if WILDCARD in allowed:
        return True
    return isinstance(value, str) and value in allowed
