"""Trace scopes: project x environment x service grants, wildcards, record filters."""

from __future__ import annotations

from iamscope.policy import TraceGrant, TraceScope


def scope(*grants: TraceGrant) -> TraceScope:
    return TraceScope(grants)


def g(
    project: str, actions: set[str], envs: set[str] | None = None, services: set[str] | None = None
) -> TraceGrant:
    return TraceGrant(
        project, frozenset(actions), frozenset(envs or {"*"}), frozenset(services or {"*"})
    )


def test_no_grants_no_access() -> None:
    assert not TraceScope().allows("read", "checkout")
    assert TraceScope().filter([{"project": "checkout"}]) == []


def test_dimensions_and_actions() -> None:
    s = scope(g("checkout", {"read"}, {"production"}, {"api", "web"}))
    assert s.allows("read", "checkout", "production", "api")
    assert s.allows("read", "checkout")  # some part of the project
    assert not s.allows("read", "checkout", "staging")
    assert not s.allows("read", "checkout", "production", "worker")
    assert not s.allows("write", "checkout", "production", "api")
    assert not s.allows("read", "payments")


def test_wildcards_and_union() -> None:
    s = scope(g("*", {"read"}), g("checkout", {"write"}, {"staging"}))
    assert s.allows("read", "anything", "any", "svc")
    assert s.allows("write", "checkout", "staging")
    assert not s.allows("write", "checkout", "production")
    assert s.projects("write") == {"checkout"}
    assert s.projects("read") == {"*"}


def test_filter_records() -> None:
    records = [
        {"id": 1, "project": "checkout", "environment": "production", "service": "api"},
        {"id": 2, "project": "checkout", "environment": "staging", "service": "api"},
        {"id": 3, "project": "payments", "environment": "production", "service": "api"},
        {"id": 4, "project": "checkout"},  # no environment: only a wildcard grant sees it
        {"id": 5, "environment": "production"},  # no project: never
    ]
    s = scope(g("checkout", {"read"}, {"production"}))
    assert [r["id"] for r in s.filter(records)] == [1]
    wide = scope(g("checkout", {"read"}))
    assert [r["id"] for r in wide.filter(records)] == [1, 2, 4]
    assert [r["id"] for r in wide.filter(records, "write")] == []
