"""Resolution (contract 3): deny by default, unions, row plans, attributes, owners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iamscope.config import load_config
from iamscope.policy import (
    ALL,
    NONE,
    And,
    Cmp,
    CompiledPolicy,
    Not,
    Or,
    RowPlan,
    load_policy,
    policy_from_mapping,
)
from iamscope.tokens import Principal

REFERENCE = Path(__file__).resolve().parents[2] / "examples" / "policy" / "iamscope.yaml"


def principal(
    issuer: str = "corp", groups: tuple[str, ...] = (), subject: str = "s", **claims: Any
) -> Principal:
    return Principal(
        issuer=issuer,
        issuer_url=f"https://{issuer}.example",
        subject=subject,
        kind="user",
        expires_at=1e10,
        groups=frozenset(groups),
        claims=claims,
    )


@pytest.fixture(scope="module")
def reference() -> CompiledPolicy:
    config = load_config(REFERENCE)
    return CompiledPolicy(load_policy(config.policy, issuers=config.issuers))


def compiled(policy: dict[str, Any]) -> CompiledPolicy:
    return CompiledPolicy(policy_from_mapping({"version": "1", **policy}))


def test_deny_by_default(reference: CompiledPolicy) -> None:
    access = reference.resolve(principal(groups=("nobody",)))
    assert access.roles == frozenset()
    assert not access.can("sales:read")
    assert access.rows_for("sales") is NONE
    assert not access.traces.allows("read", "checkout", "production")
    assert access.owner is None


def test_east_analyst(reference: CompiledPolicy) -> None:
    access = reference.resolve(principal(groups=("sales-east",)))
    assert access.roles == {"analyst"}
    assert access.can("sales:read") and not access.can("sales:write")
    assert access.rows_for("sales") == RowPlan.where(Cmp("in", "region", ("east",)))
    assert access.rows_for("orders") is NONE
    assert access.traces.allows("read", "checkout", "production")
    assert not access.traces.allows("read", "checkout", "staging")
    assert not access.traces.allows("write", "checkout", "production")
    assert access.owner == "sales"
    assert access.attributes["region"].sources == ("binding:bindings[0]",)
    assert access.policy_version == "2026-11-22.1"


def test_multi_valued_attributes_merge_as_a_union(reference: CompiledPolicy) -> None:
    access = reference.resolve(principal(groups=("sales-east", "sales-west")))
    assert access.rows_for("sales") == RowPlan.where(Cmp("in", "region", ("east", "west")))
    assert access.attributes["region"].sources == ("binding:bindings[0]", "binding:bindings[1]")


def test_union_of_roles_all_wins_and_owner_by_priority(reference: CompiledPolicy) -> None:
    access = reference.resolve(principal(groups=("sales-east", "admins")))
    assert access.roles == {"analyst", "admin"}
    assert access.rows_for("sales") is ALL
    assert access.can("anything:at:all")
    assert access.traces.allows("share", "payments", "production", "api")
    assert access.owner == "platform"


def test_ci_binding_by_claim_values(reference: CompiledPolicy) -> None:
    bot = principal("ci", repository="acme/checkout", environment="staging")
    access = reference.resolve(bot)
    assert access.roles == {"deployer"}
    assert access.traces.allows("write", "checkout", "staging")
    assert not access.traces.allows("write", "checkout", "production")
    assert not access.traces.allows("read", "checkout", "staging")
    assert access.owner == "checkout"
    for claims in (
        {"repository": "acme/checkout", "environment": "production"},
        {"repository": "acme/other", "environment": "staging"},
        {"repository": "acme/checkout"},
    ):
        assert reference.resolve(principal("ci", **claims)).roles == frozenset()
    # Same claims from another issuer: the binding names its issuer.
    assert (
        reference.resolve(
            principal("corp", repository="acme/checkout", environment="staging")
        ).roles
        == frozenset()
    )


def test_identical_identities_share_one_access(reference: CompiledPolicy) -> None:
    a = reference.resolve(principal(groups=("sales-east",), subject="alice"))
    b = reference.resolve(principal(groups=("sales-east", "unrelated"), subject="bob"))
    assert a is b
    assert reference.resolve(principal(groups=("sales-west",))) is not a


def test_missing_attribute_grants_nothing_and_is_recorded() -> None:
    policy = compiled(
        {
            "attributes": {"region": {"multi": True}, "account": {}},
            "roles": {
                "r": {"rows": {"sales": [{"region": "$region"}, {"account": "$account"}]}},
                "n": {"rows": {"sales": {"not": {"region": "$region"}}}},
            },
            "bindings": [
                {"groups": ["g"], "roles": ["r"], "attributes": {"account": "a1"}},
                {"groups": ["neg"], "roles": ["n"]},
            ],
        }
    )
    access = policy.resolve(principal(groups=("g",)))
    assert access.rows_for("sales") == RowPlan.where(Cmp("eq", "account", "a1"))
    assert access.missing == {"region"}
    # A negated rule with a missing attribute must not become "everything but nothing".
    negated = policy.resolve(principal(groups=("neg",)))
    assert negated.rows_for("sales") is NONE
    assert negated.missing == {"region"}


def test_rules_or_and_conditions_and() -> None:
    policy = compiled(
        {
            "attributes": {"region": {"multi": True}},
            "roles": {
                "r": {
                    "rows": {
                        "sales": [
                            {"region": "$region", "amount": {"lt": 1000}},
                            {"owner": "me", "deleted": None},
                        ]
                    }
                }
            },
            "bindings": [{"groups": ["g"], "roles": ["r"], "attributes": {"region": ["e", "w"]}}],
        }
    )
    plan = policy.resolve(principal(groups=("g",))).rows_for("sales")
    assert plan == RowPlan.where(
        Or(
            (
                And((Cmp("in", "region", ("e", "w")), Cmp("lt", "amount", 1000))),
                And((Cmp("eq", "owner", "me"), Cmp("is_null", "deleted", True))),
            )
        )
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"region": {"ne": "$region"}}, Cmp("not_in", "region", ("e", "w"))),
        ({"region": {"in": "$region"}}, Cmp("in", "region", ("e", "w"))),
        ({"region": {"not_in": ["x", "y"]}}, Cmp("not_in", "region", ("x", "y"))),
        ({"account": "$account"}, Cmp("eq", "account", "acct")),
        ({"account": {"ne": "$account"}}, Cmp("ne", "account", "acct")),
        ({"account": {"in": "$account"}}, Cmp("in", "account", ("acct",))),
        ({"amount": {"ge": 5}}, Cmp("ge", "amount", 5)),
        ({"region": {"is_null": False}}, Cmp("is_null", "region", False)),
        ({"region": "$$literal"}, Cmp("eq", "region", "$literal")),
        ({"not": {"region": "x"}}, Not(Cmp("eq", "region", "x"))),
    ],
)
def test_operators_bind_attribute_shapes(rule: dict[str, Any], expected: Any) -> None:
    policy = compiled(
        {
            "attributes": {"region": {"multi": True}, "account": {"multi": False}},
            "roles": {"r": {"rows": {"t": rule}}},
            "bindings": [
                {
                    "groups": ["g"],
                    "roles": ["r"],
                    "attributes": {"region": ["e", "w"], "account": "acct"},
                }
            ],
        }
    )
    assert policy.resolve(principal(groups=("g",))).rows_for("t") == RowPlan.where(expected)


def test_single_valued_attribute_takes_the_higher_priority() -> None:
    policy = compiled(
        {
            "attributes": {"account": {}},
            "roles": {"r": {"rows": {"t": {"account": "$account"}}}},
            "bindings": [
                {"groups": ["a"], "roles": ["r"], "attributes": {"account": "low"}},
                {"groups": ["b"], "attributes": {"account": "high"}, "priority": 5},
            ],
        }
    )
    access = policy.resolve(principal(groups=("a", "b")))
    assert access.rows_for("t") == RowPlan.where(Cmp("eq", "account", "high"))
    assert access.attributes["account"].sources == ("binding:bindings[1]",)


def test_attributes_from_token_claims_with_provenance() -> None:
    policy = compiled(
        {
            "attributes": {"region": {"multi": True, "claim": "regions"}, "team": {"claim": "t"}},
            "roles": {"r": {"rows": {"t": {"region": "$region", "team": "$team"}}}},
            "bindings": [{"groups": ["g"], "roles": ["r"], "attributes": {"region": ["hq"]}}],
        }
    )
    access = policy.resolve(principal(groups=("g",), regions=["north"], t="blue"))
    assert access.attributes["region"].values == ("north", "hq")
    assert access.attributes["region"].sources == ("claim:regions", "binding:bindings[0]")
    assert access.attributes["team"].sources == ("claim:t",)
    # Another principal with other claim values gets another Access.
    other = policy.resolve(principal(groups=("g",), regions=["south"], t="blue"))
    assert other.attributes["region"].values == ("south", "hq")


def test_permission_wildcards() -> None:
    policy = compiled(
        {
            "roles": {"r": {"permissions": ["sales:*", "policy:admin"]}},
            "bindings": [{"groups": ["g"], "roles": ["r"]}],
        }
    )
    access = policy.resolve(principal(groups=("g",)))
    assert access.can("sales:read") and access.can("sales:export:csv")
    assert access.can("policy:admin")
    assert not access.can("policy:read") and not access.can("salesx:read")
    assert not access.can("sales")


def test_issuer_only_binding() -> None:
    policy = compiled(
        {
            "roles": {"viewer": {"permissions": ["x:read"]}},
            "bindings": [{"issuer": "corp", "roles": ["viewer"]}],
        }
    )
    assert policy.resolve(principal("corp")).roles == {"viewer"}
    assert policy.resolve(principal("other")).roles == frozenset()


def test_explain_says_which_bindings_matched_and_why_not(reference: CompiledPolicy) -> None:
    explained = reference.explain(principal(groups=("sales-east",)))
    verdicts = {v["binding"]: v for v in explained["binding_verdicts"]}
    assert verdicts["bindings[0]"]["matched"] is True
    assert "sales-west" in verdicts["bindings[1]"]["why"]
    assert "issuer" in verdicts["bindings[3]"]["why"]
    assert explained["rows"] == {"sales": "region IN ('east')"}
    assert explained["attributes"]["region"] == [{"value": "east", "source": "binding:bindings[0]"}]
    assert explained["bindings"] == ["bindings[0]"]
