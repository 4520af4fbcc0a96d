"""Regressions from the policy review: every one of these loaded wrongly, crashed, or
could widen what an identity sees before it was fixed."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from iamscope.config import parse_text
from iamscope.errors import ConfigError
from iamscope.policy import CompiledPolicy, PolicyStore, policy_from_mapping
from iamscope.policy.loader import load_policy
from iamscope.policy.reload import ReloadResult
from iamscope.tokens import PRESETS, IssuerConfig, Principal


def who(issuer: str = "corp", groups: tuple[str, ...] = ("g",), **claims: Any) -> Principal:
    return Principal(
        issuer, "https://x.example", "s", "user", 1e12, groups=frozenset(groups), claims=claims
    )


def policy(**parts: Any) -> dict[str, Any]:
    return {"version": "1", "roles": {"r": {}}, "bindings": [], **parts}


# --- reload must survive anything ---------------------------------------------------


def test_reload_survives_undecodable_files_and_failing_callbacks(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('version: "1"\nroles: {}\nbindings: []\n')
    results: list[ReloadResult] = []

    def callback(result: ReloadResult) -> None:
        results.append(result)
        raise RuntimeError("callback bug")

    store = PolicyStore(path, on_reload=callback, settle=0.02)
    store.watch(interval=0.01)
    try:
        path.write_bytes(b'version: "2"\n# caf\xe9\nroles: {}\nbindings: []\n')
        os.utime(path, (time.time() + 5, time.time() + 5))
        deadline = time.monotonic() + 5
        while not results and time.monotonic() < deadline:
            time.sleep(0.01)
        assert results and not results[0].changed and "UTF-8" in str(results[0].error)
        path.write_text('version: "3"\nroles: {}\nbindings: []\n')
        os.utime(path, (time.time() + 10, time.time() + 10))
        while store.current.version != "3" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.current.version == "3"  # the watcher outlived both faults
        assert any(t.name == "iamscope-policy-watch" for t in threading.enumerate())
    finally:
        store.close()


def test_a_refused_reload_source_is_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('version: "1"\nroles: {}\nbindings: []\n')
    store = PolicyStore(path)
    assert not store.reload(tmp_path / "typo.yaml").changed
    path.write_text('version: "2"\nroles: {}\nbindings: []\n')
    assert store.reload().version == "2"


# --- loading never crashes with a foreign exception ---------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "? [a, b]\n: 1\n",
        "? {a: 1}\n: 1\n",
        "a: " + "[" * 3000 + "]" * 3000 + "\n",
    ],
)
def test_odd_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_text(text, "p.yaml")


def test_deeply_nested_rules_are_a_config_error() -> None:
    rule: dict[str, Any] = {"region": "x"}
    for _ in range(3000):
        rule = {"not": rule}
    with pytest.raises(ConfigError, match="nested"):
        policy_from_mapping(policy(roles={"r": {"rows": {"t": rule}}}))


def test_non_utf8_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b'version: "1"\n# \xff\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_policy(path)


# --- YAML and types mean what they say ------------------------------------------------


def test_yaml_1_1_booleans_stay_strings() -> None:
    assert parse_text("a: NO\nb: on\nc: yes\nd: true\n") == {
        "a": "NO",
        "b": "on",
        "c": "yes",
        "d": True,
    }


def test_version_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match="quoted string"):
        policy_from_mapping({"version": 1.10, "roles": {}, "bindings": []})


def test_binding_names_are_unique_strings() -> None:
    base = {"groups": ["g"], "roles": ["r"]}
    with pytest.raises(ConfigError, match="string"):
        policy_from_mapping(policy(bindings=[{**base, "name": 42}]))
    with pytest.raises(ConfigError, match="two bindings"):
        policy_from_mapping(policy(bindings=[{**base, "name": "a"}, {**base, "name": "a"}]))


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"amount": {"lt": float("nan")}}, "amount"),
        ({"region": ["east", 1]}, "region"),
        ({"region": "ea\x00st"}, "NUL"),
    ],
)
def test_literals_every_renderer_refuses_fail_at_load(rule: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        policy_from_mapping(policy(roles={"r": {"rows": {"t": rule}}}))


def test_attribute_values_of_mixed_types_are_refused() -> None:
    with pytest.raises(ConfigError, match="text, or all numbers"):
        policy_from_mapping(
            policy(
                attributes={"tier": {"multi": True}},
                bindings=[{"groups": ["g"], "roles": ["r"], "attributes": {"tier": ["gold", 3]}}],
            )
        )


def test_empty_lists_in_trace_grants_and_claims_are_refused() -> None:
    for grant in ({"project": "p", "environments": []}, {"project": "p", "actions": []}):
        with pytest.raises(ConfigError, match="empty"):
            policy_from_mapping(policy(roles={"r": {"traces": [grant]}}))
    with pytest.raises(ConfigError, match="never matches"):
        policy_from_mapping(policy(bindings=[{"claims": {"x": []}, "roles": ["r"]}]))


def test_the_loaded_policy_cannot_be_changed_afterwards() -> None:
    loaded = policy_from_mapping(policy(roles={"r": {"rows": {"t": "all"}}}))
    with pytest.raises(TypeError):
        loaded.roles["x"] = loaded.roles["r"]  # type: ignore[index]
    with pytest.raises(TypeError):
        loaded.roles["r"].rows["t"] = loaded.roles["r"].rows["t"]  # type: ignore[index]


def test_claim_bindings_without_an_issuer_are_linted() -> None:
    loaded = policy_from_mapping(
        policy(bindings=[{"claims": {"repository": "a/b"}, "roles": ["r"]}])
    )
    assert any("matches claims from every issuer" in w for w in loaded.warnings)


# --- claim-derived attributes fail closed ---------------------------------------------


RULES: dict[str, Any] = {
    "attributes": {"blocked": {"multi": True, "claim": "blocked"}, "account": {"claim": "account"}},
    "roles": {
        "r": {"rows": {"t": {"customer": {"not_in": "$blocked"}}, "u": {"account": "$account"}}}
    },
    "bindings": [{"groups": ["g"], "roles": ["r"]}],
}


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"blocked": ""},
        {"blocked": []},
        {"blocked": ["acme", 42]},
        {"blocked": [""]},
        {"blocked": {"a": 1}},
    ],
)
def test_odd_claim_values_make_the_attribute_missing(claims: dict[str, Any]) -> None:
    access = CompiledPolicy(policy_from_mapping({"version": "1", **RULES})).resolve(who(**claims))
    assert access.rows_for("t").kind == "none"
    assert "blocked" in access.missing


def test_single_valued_claim_with_several_values_is_missing() -> None:
    compiled = CompiledPolicy(policy_from_mapping({"version": "1", **RULES}))
    assert compiled.resolve(who(account=["a1", "a2"])).rows_for("u").kind == "none"
    assert compiled.resolve(who(account="a1")).rows_for("u").kind == "filter"


def test_attribute_claims_can_be_tied_to_one_issuer() -> None:
    issuers = [
        IssuerConfig(name="corp", issuer="https://corp.example", audience=("a",)),
        IssuerConfig(
            name="ci",
            issuer="https://ci.example",
            audience=("a",),
            preset=PRESETS["github-actions"],
            owners=("acme",),
        ),
    ]
    data = {
        **RULES,
        "attributes": {**RULES["attributes"], "account": {"claim": "account", "issuer": "corp"}},
    }
    compiled = CompiledPolicy(policy_from_mapping({"version": "1", **data}, issuers=issuers))
    assert compiled.resolve(who("corp", account="a1")).rows_for("u").kind == "filter"
    assert compiled.resolve(who("ci", account="a1")).rows_for("u").kind == "none"


# --- sharing and memos keep identities apart ------------------------------------------


def test_missing_attributes_are_part_of_the_shared_access() -> None:
    from dataclasses import replace

    compiled = CompiledPolicy(policy_from_mapping(policy()))
    plain = compiled.resolve(who(groups=("nobody",)))
    flagged = replace(plain, missing=frozenset({"account"}))
    # Same roles, owner and attributes; a different record of what was missing.
    assert compiled._intern(flagged) is flagged
    assert compiled._intern(replace(plain)) is plain


def test_equal_but_differently_typed_values_are_not_merged() -> None:
    data = {
        "version": "1",
        "attributes": {"flag": {"multi": True}},
        "roles": {"r": {"rows": {"t": {"col": {"in": "$flag"}}}}},
        "bindings": [
            {"groups": ["a"], "roles": ["r"], "attributes": {"flag": [1]}},
            {"groups": ["b"], "roles": ["r"], "attributes": {"flag": [True]}},
        ],
    }
    compiled = CompiledPolicy(policy_from_mapping(data))
    one = compiled.resolve(who(groups=("a",))).rows_for("t")
    true = compiled.resolve(who(groups=("b",))).rows_for("t")
    assert one.condition is not None and true.condition is not None
    assert type(one.condition.value[0]) is int  # type: ignore[union-attr,index]
    assert type(true.condition.value[0]) is bool  # type: ignore[union-attr,index]
