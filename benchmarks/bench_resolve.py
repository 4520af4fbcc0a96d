"""Policy resolution cost against policy size, with pycasbin side by side.

For 100, 10k and 100k bindings over 1k roles (each role with a row rule over an
attribute and a trace grant), a principal in 5 groups is resolved:

* **cold**: matching + attribute merge + row plans + trace scope + interning, with
  the intern tables emptied before every call (what a new identity costs when others
  with the same roles and attribute values came before: what a role set grants, and
  row plans bound to attribute values, are memoised);
* **first**: the same with the role-set and row-plan memos emptied too (the very
  first identity with these roles and attribute values);
* **interned**: the same principal again (what the second request of an identity costs
  when the token cache missed, e.g. a new token of a known identity);
* **pycasbin**: ``Enforcer.enforce(user, "sales", "read")`` on an equivalent RBAC
  policy (user → 5 groups → roles → permission), the usual Python choice.

Targets (DESIGN.md): cold ≤ 20 µs at 10k bindings; ≤ 1.5x growth from 100 to 100k.

    .venv/bin/python benchmarks/bench_resolve.py [--write] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import casbin
from _readme import intro_of, write_section

from iamscope.policy import CompiledPolicy, policy_from_mapping
from iamscope.tokens import Principal

SIZES = (100, 10_000, 100_000)
ROLES = 1000
GROUPS_PER_PRINCIPAL = 5

CASBIN_MODEL = """\
[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act
[role_definition]
g = _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""


def make_policy(bindings: int) -> dict[str, Any]:
    roles = {
        f"r{i}": {
            "permissions": [f"ds{i}:read"],
            "rows": {f"ds{i % 50}": {"region": "$region"}},
            "traces": [{"project": f"p{i % 20}", "environments": ["production"]}],
        }
        for i in range(ROLES)
    }
    return {
        "version": "bench",
        "attributes": {"region": {"multi": True}},
        "roles": roles,
        "bindings": [
            {
                "groups": [f"g{i}"],
                "roles": [f"r{i % ROLES}"],
                "attributes": {"region": [f"x{i % 7}"]},
            }
            for i in range(bindings)
        ],
    }


def principal(bindings: int) -> Principal:
    step = max(1, bindings // GROUPS_PER_PRINCIPAL)
    groups = frozenset(f"g{i * step + i}" for i in range(GROUPS_PER_PRINCIPAL))  # distinct roles
    return Principal("corp", "https://corp.example", "alice", "user", 1e12, groups=groups)


def make_casbin(bindings: int, member_of: frozenset[str]) -> Any:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "model.conf").write_text(CASBIN_MODEL)
    lines = [f"p, r{i}, ds{i}, read" for i in range(ROLES)]
    lines += [f"g, g{i}, r{i % ROLES}" for i in range(bindings)]
    lines += [f"g, alice, {group}" for group in sorted(member_of)]
    (tmp / "policy.csv").write_text("\n".join(lines) + "\n")
    return casbin.Enforcer(str(tmp / "model.conf"), str(tmp / "policy.csv"))


def per_call(fn: Callable[[], object], rounds: int) -> list[float]:
    number = 200
    return [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=rounds)]


def measure(size: int, rounds: int) -> dict[str, list[float]]:
    compiled = CompiledPolicy(policy_from_mapping(make_policy(size)))
    who = principal(size)
    access = compiled.resolve(who)
    assert len(access.roles) == GROUPS_PER_PRINCIPAL, access.roles

    def cold() -> object:
        compiled._by_match.clear()
        compiled._by_content.clear()
        return compiled.resolve(who)

    def first() -> object:
        compiled._by_match.clear()
        compiled._by_content.clear()
        compiled._plans.clear()
        compiled._role_sets.clear()
        return compiled.resolve(who)

    def interned() -> object:
        return compiled.resolve(who)

    enforcer = make_casbin(size, who.groups)
    wanted = sorted(access.roles)[0].replace("r", "ds")
    assert enforcer.enforce("alice", wanted, "read")
    assert not enforcer.enforce("alice", "ds-none", "read")

    def pycasbin() -> object:
        return enforcer.enforce("alice", wanted, "read")

    results: dict[str, list[float]] = {"cold": [], "first": [], "interned": [], "pycasbin": []}
    for _ in range(rounds):  # interleaved, so drift hits all alike
        results["cold"] += per_call(cold, 1)
        results["first"] += per_call(first, 1)
        results["interned"] += per_call(interned, 1)
        results["pycasbin"] += per_call(pycasbin, 1)
    return results


def render(results: dict[int, dict[str, list[float]]]) -> str:
    rows = [
        "| bindings | cold µs (min-max) | first µs | interned µs | pycasbin enforce µs |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, r in results.items():
        rows.append(
            f"| {size:,} | {statistics.median(r['cold']):.1f} "
            f"({min(r['cold']):.1f}-{max(r['cold']):.1f}) "
            f"| {statistics.median(r['first']):.1f} "
            f"| {statistics.median(r['interned']):.2f} | {statistics.median(r['pycasbin']):.1f} |"
        )
    rows.append("")
    if 10_000 in results:
        mid = statistics.median(results[10_000]["cold"])
        rows.append(
            f"Cold at 10k bindings: {mid:.1f} µs "
            f"(target ≤ 20 µs: {'met' if mid <= 20 else 'NOT met'})."
        )
    if SIZES[0] in results and SIZES[-1] in results:
        growth = statistics.median(results[SIZES[-1]]["cold"]) / statistics.median(
            results[SIZES[0]]["cold"]
        )
        rows.append(
            f"Growth 100 → {SIZES[-1]:,} bindings: {growth:.2f}x "
            f"(target ≤ 1.5x: {'met' if growth <= 1.5 else 'NOT met'})."
        )
    rows.append(
        f"{ROLES} roles; a principal in {GROUPS_PER_PRINCIPAL} groups; "
        f"Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    )
    return "\n".join(rows)


def dump_json(path: Path, results: dict[int, dict[str, list[float]]], rounds: int) -> None:
    """Per-round µs per call, by size and contender (what ``benchmarks/run`` plots)."""
    path.write_text(
        json.dumps(
            {
                "unit": "µs per call",
                "rounds": rounds,
                "roles": ROLES,
                "groups_per_principal": GROUPS_PER_PRINCIPAL,
                "sizes": {
                    str(size): {
                        name: {
                            "median": statistics.median(samples),
                            "min": min(samples),
                            "max": max(samples),
                            "samples": samples,
                        }
                        for name, samples in r.items()
                    }
                    for size, r in results.items()
                },
            },
            indent=1,
        )
    )


def write_readme(block: str) -> None:
    write_section("resolve", "Policy resolution (`bench_resolve.py`)", intro_of(__doc__), block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="policy resolution vs size, and pycasbin")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also dump the per-round µs per size here"
    )
    args = parser.parse_args(argv)
    results = {size: measure(size, args.rounds) for size in args.sizes}
    block = render(results)
    print(block)
    if args.json is not None:
        dump_json(args.json, results, args.rounds)
    if args.write:
        write_readme(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
