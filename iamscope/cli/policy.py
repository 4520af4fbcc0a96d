"""``iamscope lint``, ``explain`` and ``test``: the policy tools, on a config file or a
policy file alone (no network, except ``explain --token``'s key fetch)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from iamscope._yaml import item_line, parse_text, read_text
from iamscope.cli.exit_codes import FAILED, OK
from iamscope.config import Config, load_config
from iamscope.errors import ConfigError, IAMScopeError
from iamscope.policy.access import Access, describe_plan
from iamscope.policy.loader import load_policy
from iamscope.policy.model import Policy
from iamscope.policy.render.sql import to_sql
from iamscope.policy.resolve import CompiledPolicy
from iamscope.policy.rows import columns_of
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.principal import Principal
from iamscope.tokens.verify import principal_from_claims

# --- loading -------------------------------------------------------------------------


def load(path: Path) -> tuple[Config | None, Policy]:
    """A config file (issuers + policy) or a policy file on its own."""
    data = parse_text(read_text(path), str(path))
    if isinstance(data, Mapping) and "issuers" in data:
        config = load_config(path)
        return config, load_policy(path, issuers=config.issuers)
    return None, load_policy(path)


# --- lint ------------------------------------------------------------------------------


def lint(path: Path, strict: bool, out: TextIO) -> int:
    try:
        config, policy = load(path)
    except ConfigError as exc:
        out.write(f"error: {exc}\n")
        return FAILED
    for warning in policy.warnings:
        out.write(f"warning: {path}: {warning}\n")
    issuers = len(config.issuers) if config is not None else 0
    out.write(
        f"ok: policy {policy.version}: {len(policy.roles)} roles, "
        f"{len(policy.bindings)} bindings, {issuers} issuers, {len(policy.warnings)} warnings\n"
    )
    return FAILED if strict and policy.warnings else OK


# --- explain ---------------------------------------------------------------------------


def explain(args: argparse.Namespace, out: TextIO) -> int:
    config, policy = load(Path(args.config))
    if config is None:
        raise ConfigError("explain needs a config file with issuers", source=args.config)
    compiled = CompiledPolicy(policy)
    try:
        principal = _principal(config, args.claims, args.token, args.issuer)
    except ConfigError:
        raise  # unusable input (2), not a refused identity (1)
    except IAMScopeError as exc:
        refusal: dict[str, Any] = {"decision": "deny", "code": exc.code, "detail": exc.message}
        if hints := _delimiter_hints(config.issuers, args.claims, args.token):
            refusal["hints"] = hints
        out.write(json.dumps(refusal) + "\n")
        return FAILED
    report = compiled.explain(principal)
    report["rows_sql"] = _rows_sql(compiled.resolve(principal))
    report["principal"] = {
        "issuer": principal.issuer,
        "kind": principal.kind,
        "groups": sorted(principal.groups),
        "attributes": {k: list(v) for k, v in sorted(principal.attributes.items())},
    }
    if hints := _delimiter_hints(config.issuers, args.claims, args.token):
        report["hints"] = hints
    out.write(json.dumps(report, indent=2, default=str) + "\n")
    return OK


def _delimiter_hints(
    issuers: Sequence[IssuerConfig], claims: str | None, token: str | None
) -> list[str]:
    """Point at ``claims.delimiter`` when a groups or roles claim is one string holding
    commas: refused (``claim_not_list``) or, where strings are allowed, one odd group.
    Reads the token unverified, for this hint only; names claims, never their values."""
    from iamscope.tokens.claims import lookup
    from iamscope.tokens.jose import parse

    try:
        data = parse(token).payload if token is not None else json.loads(claims or "")
    except (IAMScopeError, ValueError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    hints = []
    for cfg in issuers:
        if cfg.claim_map.delimiter is not None or (
            len(issuers) > 1 and cfg.issuer != data.get("iss")
        ):
            continue
        for path in cfg.claim_map.groups + cfg.claim_map.roles:
            value = lookup(data, path)
            if isinstance(value, str) and "," in value:
                hints.append(
                    f"issuer {cfg.name}: claim '{path}' is one string holding commas; if it "
                    "lists several values, set claims.delimiter: ','"
                )
    return hints


def _principal(
    config: Config, claims: str | None, token: str | None, issuer: str | None
) -> Principal:
    if token is not None:
        from iamscope.tokens.verifier import TokenVerifier

        verifier = TokenVerifier(config.issuers)
        try:
            return verifier.verify(token)
        finally:
            verifier.close()
    try:
        data = json.loads(claims or "")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg}", source="--claims") from None
    if not isinstance(data, dict):
        raise ConfigError("must be a JSON object", source="--claims")
    return principal_from_claims(data, _issuer(config.issuers, issuer, data, config.source))


def _issuer(
    issuers: Sequence[IssuerConfig],
    name: str | None,
    claims: Mapping[str, Any],
    source: str | None = None,
) -> IssuerConfig:
    for cfg in issuers:
        if (name is not None and cfg.name == name) or (
            name is None and cfg.issuer == claims.get("iss")
        ):
            return cfg
    if name is None and len(issuers) == 1:
        return issuers[0]
    raise ConfigError(
        f"no configured issuer {'named ' + repr(name) if name else 'for these claims'}",
        source=source,
    )


def _rows_sql(access: Access) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    for dataset, plan in sorted(access.rows.items()):
        columns = columns_of(plan.condition) if plan.condition is not None else frozenset()
        fragment, params = to_sql(plan, columns, param_style="named")
        rendered[dataset] = {"where": fragment, "params": params}
    return rendered


# --- test ------------------------------------------------------------------------------

_TEST_KEYS = ("name", "issuer", "claims", "expect")
_EXPECT_KEYS = ("roles", "permissions", "rows", "traces", "owner", "attribute_missing")


def run_tests(path: Path, out: TextIO) -> int:
    suite = parse_text(read_text(path), str(path))
    if not isinstance(suite, Mapping) or not isinstance(suite.get("tests"), list):
        raise ConfigError("a policy test file needs 'config' and a 'tests' list", source=str(path))
    config_path = path.parent / str(suite.get("config", ""))
    config, policy = load(config_path)
    if config is None:
        raise ConfigError("'config' must name a config file with issuers", source=str(path))
    compiled = CompiledPolicy(policy)
    failures = 0
    for index, case in enumerate(suite["tests"]):
        name = case.get("name", f"tests[{index}]") if isinstance(case, Mapping) else str(index)
        problems = _run_case(case, config, compiled, str(path), item_line(suite["tests"], index))
        failures += bool(problems)
        out.write(f"{'FAIL' if problems else 'ok  '} {name}\n")
        for problem in problems:
            out.write(f"     {problem}\n")
    total = len(suite["tests"])
    out.write(f"{total - failures} passed, {failures} failed\n")
    return FAILED if failures else OK


def _run_case(
    case: Any, config: Config, compiled: CompiledPolicy, source: str, line: int | None
) -> list[str]:
    if not isinstance(case, Mapping) or not set(case) <= set(_TEST_KEYS):
        raise ConfigError(f"each test takes only {list(_TEST_KEYS)}", source=source, line=line)
    expect = case.get("expect") or {}
    if not isinstance(expect, Mapping) or not set(expect) <= set(_EXPECT_KEYS):
        raise ConfigError(f"'expect' takes only {list(_EXPECT_KEYS)}", source=source, line=line)
    claims = case.get("claims") or {}
    try:
        principal = principal_from_claims(
            claims, _issuer(config.issuers, case.get("issuer"), claims)
        )
    except IAMScopeError as exc:
        return [f"claims refused: {exc.code}"]
    access = compiled.resolve(principal)
    return _compare(expect, access)


def _compare(expect: Mapping[str, Any], access: Access) -> list[str]:
    problems = []
    if "roles" in expect and set(expect["roles"]) != set(access.roles):
        problems.append(f"roles: expected {sorted(expect['roles'])}, got {sorted(access.roles)}")
    for permission, allowed in (expect.get("permissions") or {}).items():
        if access.can(permission) != bool(allowed):
            problems.append(f"permission {permission}: expected {bool(allowed)}")
    for dataset, wanted in (expect.get("rows") or {}).items():
        got = describe_plan(access.rows_for(dataset))
        if got != wanted:
            problems.append(f"rows {dataset}: expected {wanted!r}, got {got!r}")
    for query, allowed in (expect.get("traces") or {}).items():
        action, *where = str(query).split()
        if access.traces.allows(action, *where) != bool(allowed):
            problems.append(f"traces {query!r}: expected {bool(allowed)}")
    if "owner" in expect and expect["owner"] != access.owner:
        problems.append(f"owner: expected {expect['owner']!r}, got {access.owner!r}")
    if "attribute_missing" in expect and set(expect["attribute_missing"]) != set(access.missing):
        problems.append(f"attribute_missing: got {sorted(access.missing)}")
    return problems
