"""Loading policies: every mistake is an error with file, line, key and a suggestion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iamscope.errors import ConfigError
from iamscope.policy import load_policy, policy_from_mapping
from iamscope.policy.resolve import CompiledPolicy
from iamscope.tokens import PRESETS, IssuerConfig, Principal

BASE = """\
version: "7"
attributes:
  region: {multi: true}
  account: {}
roles:
  analyst:
    permissions: [sales:read]
    rows:
      sales: {region: $region}
bindings:
  - {groups: [east], roles: [analyst], attributes: {region: [east]}}
"""


def load_text(tmp_path: Path, text: str, **kw: Any) -> Any:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path, **kw)


def error(tmp_path: Path, text: str, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, **kw)
    return info.value


def test_policy_file_loads(tmp_path: Path) -> None:
    policy = load_text(tmp_path, BASE)
    assert policy.version == "7"
    assert policy.roles["analyst"].permissions == {"sales:read"}
    assert policy.bindings[0].groups == {"east"}
    assert policy.source == str(tmp_path / "policy.yaml")


def test_policy_section_of_a_config_file(tmp_path: Path) -> None:
    text = "issuers: []\npolicy:\n" + "".join(f"  {ln}\n" for ln in BASE.splitlines())
    assert load_text(tmp_path, text).version == "7"


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [
        ("roles:\n", "rolez: {}\nroles:\n", 5, "did you mean 'roles'"),
        ("    permissions:", "    permisions:", 7, "did you mean 'permissions'"),
        ("roles: [analyst]", "roles: [analist]", 11, "did you mean 'analyst'"),
        ("{region: $region}", "{region: $regoin}", 9, "did you mean 'region'"),
        ("{region: $region}", "{region: {eqq: x}}", 9, "did you mean 'eq'"),
        ("{region: $region}", "{region: {lt: $region}}", 9, "multi-valued"),
        ("{region: $region}", "{region: {in: x}}", 9, "takes a list"),
        ("{region: $region}", "{region: {is_null: 1}}", 9, "true or false"),
        ("{region: $region}", "{region: [$region]}", 9, "literals"),
        ("{region: $region}", "{'bad col': 1}", 9, "column name"),
        ("{region: $region}", "{}", 9, "write 'all'"),
        ("{region: $region}", "everything", 9, "'all', 'none'"),
        ("attributes: {region: [east]}", "attributes: {regio: [east]}", 11, "not declared"),
        ("attributes: {region: [east]}", "attributes: {account: [a, b]}", 11, "single-valued"),
        ("{groups: [east], ", "{", 11, "match everyone"),
        ("[sales:read]", "['sales read']", 7, "permission"),
    ],
)
def test_errors_point_at_the_line(
    tmp_path: Path, old: str, new: str, line: int, fragment: str
) -> None:
    assert old in BASE
    exc = error(tmp_path, BASE.replace(old, new, 1))
    assert fragment in str(exc)
    assert exc.line == line, str(exc)
    assert str(tmp_path / "policy.yaml") in str(exc)


def test_version_is_required(tmp_path: Path) -> None:
    assert "version" in str(error(tmp_path, BASE.replace('version: "7"\n', "")))


def test_trace_grant_errors(tmp_path: Path) -> None:
    exc = error(
        tmp_path,
        BASE.replace(
            "      sales: {region: $region}\n",
            "      sales: {region: $region}\n    traces:\n      - {project: p, actions: [raed]}\n",
        ),
    )
    assert "did you mean 'read'" in str(exc)
    exc = error(
        tmp_path,
        BASE.replace(
            "      sales: {region: $region}\n",
            "      sales: {region: $region}\n    traces:\n      - {environments: [prod]}\n",
        ),
    )
    assert "project" in str(exc)


def test_unresolvable_single_valued_tie_is_a_load_error(tmp_path: Path) -> None:
    text = BASE + (
        "  - {groups: [a], roles: [analyst], attributes: {account: x}}\n"
        "  - {groups: [b], roles: [analyst], attributes: {account: y}}\n"
    )
    exc = error(tmp_path, text)
    assert "account" in str(exc) and "priority" in str(exc)
    assert exc.line == 13
    # A priority resolves it.
    assert load_text(tmp_path, text.replace("account: y}}", "account: y}, priority: 1}"))


def test_different_values_of_one_claim_can_co_match_through_a_list(tmp_path: Path) -> None:
    text = BASE + (
        "  - {claims: {environment: staging}, roles: [analyst], attributes: {account: x}}\n"
        "  - {claims: {environment: production}, roles: [analyst], attributes: {account: y}}\n"
    )
    exc = error(tmp_path, text)
    assert "bindings[1] and bindings[2]" in str(exc) and "'account'" in str(exc)
    assert exc.line == 13  # the second of the pair
    # Why: a token whose claim is a list holding both values matches both bindings.
    settled = load_text(tmp_path, text.replace("account: y}}", "account: y}, priority: 1}"))
    both = Principal(
        "ci", "https://ci.example", "s", "workload", 1e12,
        claims={"environment": ["staging", "production"]},
    )  # fmt: skip
    compiled = CompiledPolicy(settled)
    assert [b.label for b in compiled.matching(both)] == ["bindings[1]", "bindings[2]"]
    assert compiled.resolve(both).attributes["account"].values == ("y",)


def test_one_string_claims_exclude_each_other_and_never_match_a_list(tmp_path: Path) -> None:
    text = BASE + (
        "  - {claims: {sub: alice}, roles: [analyst], attributes: {account: x}}\n"
        "  - {claims: {sub: bob}, roles: [analyst], attributes: {account: y}}\n"
    )
    compiled = CompiledPolicy(load_text(tmp_path, text))  # no tie: sub is one string
    alice = Principal("corp", "https://corp.example", "alice", "user", 1e12,
                      claims={"sub": "alice"})  # fmt: skip
    forged = Principal("corp", "https://corp.example", "x", "user", 1e12,
                       claims={"sub": ["alice", "bob"]})  # fmt: skip
    assert compiled.resolve(alice).attributes["account"].values == ("x",)
    assert compiled.matching(forged) == []


def test_group_and_claim_selected_bindings_can_co_match(tmp_path: Path) -> None:
    text = BASE + (
        "  - {groups: [east], roles: [analyst], attributes: {account: x}}\n"
        "  - {claims: {environment: [staging]}, roles: [analyst], attributes: {account: y}}\n"
    )
    assert "priority" in str(error(tmp_path, text))
    okta = IssuerConfig(
        name="corp", issuer="https://corp.example", audience=("a",), preset=PRESETS["okta"]
    )
    with pytest.raises(ConfigError, match="priority"):  # an Okta token has groups and claims
        load_text(tmp_path, text, issuers=[okta])


def test_ties_consider_which_issuers_can_have_groups() -> None:
    issuers = [
        IssuerConfig(
            name="corp", issuer="https://corp.example", audience=("a",), preset=PRESETS["okta"]
        ),
        IssuerConfig(
            name="ci",
            issuer="https://ci.example",
            audience=("a",),
            preset=PRESETS["github-actions"],
            owners=("acme",),
        ),
    ]
    policy = {
        "version": "1",
        "attributes": {"account": {}},
        "roles": {"r": {}},
        "bindings": [
            {"groups": ["g"], "roles": ["r"], "attributes": {"account": "x"}},
            {
                "issuer": "ci",
                "claims": {"repository": "a/b"},
                "roles": ["r"],
                "attributes": {"account": "y"},
            },
        ],
    }
    # A GitHub Actions token never carries groups: the two bindings cannot co-match.
    assert policy_from_mapping(policy, issuers=issuers)
    with pytest.raises(ConfigError, match="priority"):
        policy_from_mapping(policy)  # without issuer knowledge, assume they can


def test_unknown_issuer_in_a_binding() -> None:
    issuers = [IssuerConfig(name="corp", issuer="https://corp.example", audience=("a",))]
    with pytest.raises(ConfigError, match="did you mean 'corp'"):
        policy_from_mapping(
            {"version": "1", "roles": {"r": {}}, "bindings": [{"issuer": "crop", "roles": ["r"]}]},
            issuers=issuers,
        )


def test_lint_warnings() -> None:
    issuers = [
        IssuerConfig(
            name="ci",
            issuer="https://ci.example",
            audience=("a",),
            preset=PRESETS["github-actions"],
            owners=("acme",),
        )
    ]
    policy = policy_from_mapping(
        {
            "version": "1",
            "roles": {"used": {}, "unused": {}},
            "bindings": [
                {"groups": ["g"], "roles": ["used"]},
                {"issuer": "ci", "claims": {"x": "y"}},
            ],
        },
        issuers=issuers,
    )
    assert "role 'unused' is never bound" in policy.warnings
    assert any("bindings[0] can never match" in w for w in policy.warnings)
    assert any("bindings[1] grants nothing" in w for w in policy.warnings)


def test_duplicate_keys_in_a_policy_file(tmp_path: Path) -> None:
    exc = error(tmp_path, BASE.replace("  account: {}\n", "  account: {}\n  account: {}\n"))
    assert "duplicate key 'account'" in str(exc)
    assert exc.line == 5


def test_attest_without_write_on_the_same_project_is_a_warning() -> None:
    def warnings_for(*roles: dict[str, Any]) -> list[str]:
        policy = policy_from_mapping(
            {
                "version": "1",
                "roles": {f"r{i}": {"traces": r} for i, r in enumerate(roles)},
                "bindings": [{"groups": ["g"], "roles": [f"r{i}" for i in range(len(roles))]}],
            }
        )
        return [w for w in policy.warnings if "'attest'" in w]

    alone = warnings_for([{"project": "shop", "actions": ["attest"]}])
    assert alone == [
        "role 'r0' grants 'attest' on traces project 'shop', which no role may 'write' to: "
        "attest takes effect only beside write on the same spans"
    ]
    other_project = [{"project": "shop", "actions": ["attest"]}]
    assert warnings_for(other_project, [{"project": "bank", "actions": ["write"]}])
    # write from another role, on that project or on every project, is enough
    assert not warnings_for(other_project, [{"project": "shop", "actions": ["write"]}])
    assert not warnings_for(other_project, [{"project": "*", "actions": ["write"]}])
    assert not warnings_for([{"project": "shop", "actions": ["write", "attest"]}])
    assert not warnings_for(
        [{"project": "*", "actions": ["attest"]}], [{"project": "shop", "actions": ["write"]}]
    )
    assert warnings_for([{"project": "*", "actions": ["attest"]}])
