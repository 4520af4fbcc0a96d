"""Randomised: for random policies and principals, the rows every renderer returns equal
a brute-force evaluation of the policy text itself.

The brute force below reads the policy *as written* (raw dicts: bindings, roles, rules
with ``$attributes``) and evaluates each rule on each row with SQL's three-valued logic.
It shares no code with the loader, resolver or renderers, so agreement means the whole
pipeline (load → compile → resolve → render) keeps the contract: deny by default, rules
ORed, conditions ANDed, a rule needing a missing attribute grants nothing.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from iamscope.policy import CompiledPolicy, policy_from_mapping
from iamscope.policy.render.python import to_predicate
from iamscope.policy.render.sql import to_sql
from iamscope.tokens import Principal

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

COLUMNS = ("region", "account", "amount", "deleted")
REGIONS = ("east", "west", "north", None)
ACCOUNTS = ("a1", "a2", "a3", None)
GROUPS = ("g0", "g1", "g2", "g3")


def make_rows() -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "id": i,
            "region": rng.choice(REGIONS),
            "account": rng.choice(ACCOUNTS),
            "amount": rng.choice((None, 0, 5, 10, 50, 100)),
            "deleted": rng.choice((True, False)),
        }
        for i in range(80)
    ]


ROWS = make_rows()


@pytest.fixture(scope="module")
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute(
        "CREATE TABLE t (id INTEGER, region TEXT, account TEXT, amount INTEGER, deleted BOOLEAN)"
    )
    conn.executemany("INSERT INTO t VALUES (:id, :region, :account, :amount, :deleted)", ROWS)
    return conn


# --- random policy text --------------------------------------------------------------


def random_leaf(rng: random.Random) -> tuple[str, Any]:
    column = rng.choice(("region", "account", "amount", "deleted"))
    if column == "region":
        return column, rng.choice(
            [
                "$region",
                {"ne": "$region"},
                {"in": "$region"},
                {"not_in": "$region"},
                rng.choice(["east", "west"]),
                [rng.choice(["east", "west", "north"])],
                {"not_in": ["east"]},
                None,
                {"is_null": False},
            ]
        )
    if column == "account":
        return column, rng.choice(
            ["$account", {"ne": "$account"}, {"lt": "$account"}, "$tier", {"ge": "a2"}, None]
        )
    if column == "amount":
        return column, rng.choice([{"lt": 10}, {"ge": 50}, {"ne": 5}, 0, {"in": [5, 100]}])
    return column, rng.choice([True, False])


def random_rule(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    for _ in range(rng.randint(1, 2)):
        column, value = random_leaf(rng)
        rule[column] = value
    if depth < 1 and rng.random() < 0.25:
        rule["not"] = random_rule(rng, depth + 1)
    if depth < 1 and rng.random() < 0.25:
        rule["or"] = [random_rule(rng, depth + 1) for _ in range(2)]
    return rule


def random_policy(rng: random.Random) -> dict[str, Any]:
    roles = {}
    for r in range(rng.randint(1, 3)):
        if rng.random() < 0.15:
            rows: Any = "all"
        elif rng.random() < 0.1:
            rows = "none"
        else:
            rows = [random_rule(rng) for _ in range(rng.randint(1, 2))]
        roles[f"r{r}"] = {"rows": {"t": rows}}
    bindings = []
    account_given = False
    for group in GROUPS:
        binding: dict[str, Any] = {
            "groups": [group],
            "roles": rng.sample(sorted(roles), rng.randint(0, len(roles))),
        }
        attrs: dict[str, Any] = {}
        if rng.random() < 0.6:
            attrs["region"] = rng.sample(["east", "west", "north"], rng.randint(1, 2))
        if not account_given and rng.random() < 0.5:
            attrs["account"] = rng.choice(["a1", "a2", "a3"])  # one setter: no ties
            account_given = True
        binding["attributes"] = attrs
        bindings.append(binding)
    return {
        "version": "rand",
        "attributes": {"region": {"multi": True}, "account": {}, "tier": {}},
        "roles": roles,
        "bindings": bindings,
    }


# --- brute force over the policy text ------------------------------------------------

Tri = bool | None  # SQL three-valued logic: True, False, unknown (None)


def resolve_by_hand(
    policy: dict[str, Any], groups: set[str]
) -> tuple[set[str], dict[str, list[Any]]]:
    roles: set[str] = set()
    attrs: dict[str, list[Any]] = {}
    for b in policy["bindings"]:
        if groups & set(b["groups"]):
            roles |= set(b["roles"])
            for name, value in b["attributes"].items():
                values = value if isinstance(value, list) else [value]
                attrs.setdefault(name, [])
                attrs[name] += [v for v in values if v not in attrs[name]]
    return roles, attrs


class Missing(Exception):
    pass


def cmp(op: str, left: Any, right: Any) -> Tri:
    if left is None:
        return None
    return {
        "eq": left == right,
        "ne": left != right,
        "lt": left < right,
        "le": left <= right,
        "gt": left > right,
        "ge": left >= right,
    }[op]


def membership(left: Any, values: list[Any], negate: bool) -> Tri:
    if not values:
        return negate
    if left is None:
        return None
    return (left in values) != negate


def leaf(row: dict[str, Any], column: str, spec: Any, attrs: dict[str, list[Any]]) -> Tri:
    multi = column == "region"

    def operand(v: Any) -> list[Any]:
        if isinstance(v, str) and v.startswith("$"):
            if v[1:] not in attrs:
                raise Missing
            return attrs[v[1:]]
        return [v]

    left = row[column]
    if spec is None:
        return left is None
    if isinstance(spec, list):
        return membership(left, spec, negate=False)
    if not isinstance(spec, dict):
        values = operand(spec)
        is_ref = isinstance(spec, str) and spec.startswith("$")
        if is_ref and (multi or len(values) > 1):
            return membership(left, values, negate=False)
        return cmp("eq", left, values[0])
    results: list[Tri] = []
    for op, value in spec.items():
        if op == "is_null":
            results.append((left is None) == value)
        elif op in ("in", "not_in"):
            values = value if isinstance(value, list) else operand(value)
            results.append(membership(left, values, negate=op == "not_in"))
        else:
            values = operand(value)
            is_ref = isinstance(value, str) and value.startswith("$")
            if is_ref and multi and op in ("eq", "ne"):
                results.append(membership(left, values, negate=op == "ne"))
            else:
                results.append(cmp(op, left, values[0]))
    return all3(results)


def all3(items: list[Tri]) -> Tri:
    if any(i is False for i in items):
        return False
    return None if any(i is None for i in items) else True


def any3(items: list[Tri]) -> Tri:
    if any(i is True for i in items):
        return True
    return None if any(i is None for i in items) else False


def rule_value(row: dict[str, Any], rule: dict[str, Any], attrs: dict[str, list[Any]]) -> Tri:
    parts: list[Tri] = []
    for key, spec in rule.items():
        if key == "not":
            inner = rule_value(row, spec, attrs)
            parts.append(None if inner is None else not inner)
        elif key == "or":
            parts.append(any3([rule_value(row, r, attrs) for r in spec]))
        else:
            parts.append(leaf(row, key, spec, attrs))
    return all3(parts)


def visible_by_hand(policy: dict[str, Any], groups: set[str]) -> set[int]:
    roles, attrs = resolve_by_hand(policy, groups)
    seen: set[int] = set()
    for role in sorted(roles):
        rows = policy["roles"][role]["rows"]["t"]
        if rows == "all":
            return {r["id"] for r in ROWS}
        if rows == "none":
            continue
        for rule in rows:
            try:
                seen |= {r["id"] for r in ROWS if rule_value(r, rule, attrs) is True}
            except Missing:
                continue  # a rule needing a missing attribute grants nothing
    return seen


# --- the property ----------------------------------------------------------------------


@settings(max_examples=2500, deadline=None, derandomize=True)
@given(seed=st.integers(min_value=0, max_value=2**32), member=st.sets(st.sampled_from(GROUPS)))
def test_renderers_equal_brute_force(db: sqlite3.Connection, seed: int, member: set[str]) -> None:
    text = random_policy(random.Random(seed))
    compiled = CompiledPolicy(policy_from_mapping(text))
    principal = Principal(
        "corp", "https://corp.example", "s", "user", 1e12, groups=frozenset(member)
    )
    access = compiled.resolve(principal)
    plan = access.rows_for("t")
    expected = visible_by_hand(text, member)

    keep = to_predicate(plan)
    assert {r["id"] for r in ROWS if keep(r)} == expected

    where, params = to_sql(plan, COLUMNS)
    got = {row[0] for row in db.execute(f"SELECT id FROM t WHERE {where}", params)}  # noqa: S608
    assert got == expected

    if not access.roles:
        assert expected == set() and plan.kind == "none"
