"""Command line: ``iamscope demo | lint | explain | test | gateway | doctor | token`` and,
for a fleet, ``revoke | revocations | fleet`` (:mod:`iamscope.cli.fleet`).

Exit codes are distinct so scripts and CI can tell outcomes apart:
0 success; 1 lint errors, failed policy tests or doctor errors; 2 the input could not
be loaded (bad config, bad test file, bad arguments).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO
from urllib.parse import urlsplit

from iamscope._yaml import parse_text, read_text
from iamscope.cli import fleet as fleet_commands
from iamscope.config import Config, load_config
from iamscope.errors import ConfigError, IAMScopeError
from iamscope.policy.access import Access, describe_plan
from iamscope.policy.loader import load_policy
from iamscope.policy.model import Policy
from iamscope.policy.render.sql import to_sql
from iamscope.policy.resolve import CompiledPolicy
from iamscope.policy.rows import columns_of
from iamscope.telemetry.settings import Project, TelemetrySettings
from iamscope.testing import LocalIssuer
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.keys import FetchRequest, FetchResponse, KeyBuildError, KeyPolicy, build_jwk
from iamscope.tokens.principal import Principal
from iamscope.tokens.verify import principal_from_claims

if TYPE_CHECKING:
    from iamscope.gateway.settings import GatewaySettings
    from iamscope.tokens.verifier import TokenVerifier

OK, FAILED, UNUSABLE = 0, 1, 2


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="iamscope")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the analytics app on local issuers, as ten personas")
    demo.add_argument(
        "--serve", action="store_true", help="then keep the app and issuers running (curl lines)"
    )
    demo.add_argument(
        "--lightstep",
        action="store_true",
        help="also send the spans to Lightstep (token from LS_ACCESS_TOKEN)",
    )
    lint = sub.add_parser("lint", help="check a config or policy file")
    lint.add_argument("file")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    explain = sub.add_parser("explain", help="what an identity would get, and why")
    explain.add_argument("--config", required=True)
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--claims", help="JSON claims (mapped, not verified)")
    who.add_argument("--token", help="a token, verified against the configured issuers")
    explain.add_argument("--issuer", help="issuer name (default: by the claims' iss)")
    test = sub.add_parser("test", help="run policy tests written as data")
    test.add_argument("file")
    gateway = sub.add_parser("gateway", help="run the identity-aware OTLP gateway (uvicorn)")
    gateway.add_argument("--config", required=True)
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=4318)
    doctor = sub.add_parser(
        "doctor",
        help="check a deployment's config: issuers, keys, policy, telemetry, gateway",
        description=(
            "One line per finding (ok / warn / error), then a summary. Exit 0 without "
            "errors, 1 with any error, 2 when the config cannot be loaded. Environment "
            "variables are reported as set or missing, never their values."
        ),
    )
    doctor.add_argument("--config", required=True)
    doctor.add_argument(
        "--offline", action="store_true", help="skip network checks (discovery, JWKS)"
    )
    doctor.add_argument(
        "--timeout", type=float, default=3.0, help="seconds per key fetch (default 3)"
    )
    token = sub.add_parser(
        "token",
        help="mint a development token from a local issuer",
        description=(
            "Mint a token signed by a throwaway local issuer, for trying the examples. "
            "With --serve the issuer keeps running on 127.0.0.1 until Ctrl-C and the "
            "output shows its URL, JWKS URL and an issuers config entry trusting it: "
            "that is the useful mode. Without --serve the signing key dies with this "
            "process, so the token verifies against nothing: only the token is printed "
            "(stdout), with a note and its claims on stderr, for decoding or for "
            "`iamscope explain --claims`. (Printing the JWKS instead would not help: "
            "issuers take a jwks_uri URL, not inline keys.)"
        ),
    )
    token.add_argument(
        "--issuer-port", type=int, default=0, help="port to serve on (default: a free one)"
    )
    token.add_argument("--sub", default="dev-user", help="subject (default: dev-user)")
    token.add_argument("--groups", default="", help="comma-separated groups, e.g. sales-east")
    token.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="K=V",
        help="extra claim (repeatable); V is read as JSON when it parses, else as a string",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--serve", action="store_true", help="keep the issuer running until Ctrl-C")
    fleet_commands.add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from iamscope.demo import run

            return run(out, serve=args.serve, lightstep=args.lightstep)
        if args.command == "lint":
            return _lint(Path(args.file), args.strict, out)
        if args.command == "explain":
            return _explain(args, out)
        if args.command == "gateway":
            return _gateway(Path(args.config), args.host, args.port)
        if args.command == "doctor":
            return _doctor(Path(args.config), args.offline, args.timeout, out)
        if args.command == "token":
            return _token(args, out)
        if args.command in fleet_commands.COMMANDS:
            return fleet_commands.run(args, out)
        return _test(Path(args.file), out)
    except ConfigError as exc:
        out.write(f"error: {exc}\n")
        return UNUSABLE


# --- gateway -------------------------------------------------------------------------


def _gateway(path: Path, host: str, port: int) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("the gateway needs uvicorn: pip install 'iamscope[gateway]'") from None

    from iamscope.engine.engine import IAMScope
    from iamscope.gateway.app import OTLPGateway

    config = load_config(path)
    if config.gateway is None:
        raise ConfigError("no 'gateway' block", source=str(path), key="gateway")
    app = OTLPGateway(IAMScope.from_config(config), config.gateway)
    uvicorn.run(app, host=host, port=port, log_level="info")
    return OK


# --- loading -------------------------------------------------------------------------


def _load(path: Path) -> tuple[Config | None, Policy]:
    """A config file (issuers + policy) or a policy file on its own."""
    data = parse_text(read_text(path), str(path))
    if isinstance(data, Mapping) and "issuers" in data:
        config = load_config(path)
        return config, load_policy(path, issuers=config.issuers)
    return None, load_policy(path)


# --- lint ------------------------------------------------------------------------------


def _lint(path: Path, strict: bool, out: TextIO) -> int:
    try:
        config, policy = _load(path)
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


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    config, policy = _load(Path(args.config))
    if config is None:
        raise ConfigError("explain needs a config file with issuers", source=args.config)
    compiled = CompiledPolicy(policy)
    try:
        principal = _principal(config, args.claims, args.token, args.issuer)
    except ConfigError:
        raise  # unusable input (2), not a refused identity (1)
    except IAMScopeError as exc:
        out.write(json.dumps({"decision": "deny", "code": exc.code, "detail": exc.message}) + "\n")
        return FAILED
    report = compiled.explain(principal)
    report["rows_sql"] = _rows_sql(compiled.resolve(principal))
    report["principal"] = {
        "issuer": principal.issuer,
        "kind": principal.kind,
        "groups": sorted(principal.groups),
        "attributes": {k: list(v) for k, v in sorted(principal.attributes.items())},
    }
    out.write(json.dumps(report, indent=2, default=str) + "\n")
    return OK


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
        raise ConfigError(f"--claims is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError("--claims must be a JSON object")
    return principal_from_claims(data, _issuer(config.issuers, issuer, data))


def _issuer(
    issuers: Sequence[IssuerConfig], name: str | None, claims: Mapping[str, Any]
) -> IssuerConfig:
    for cfg in issuers:
        if (name is not None and cfg.name == name) or (
            name is None and cfg.issuer == claims.get("iss")
        ):
            return cfg
    if name is None and len(issuers) == 1:
        return issuers[0]
    raise ConfigError(
        f"no configured issuer {'named ' + repr(name) if name else 'for these claims'}"
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


def _test(path: Path, out: TextIO) -> int:
    suite = parse_text(read_text(path), str(path))
    if not isinstance(suite, Mapping) or not isinstance(suite.get("tests"), list):
        raise ConfigError("a policy test file needs 'config' and a 'tests' list", source=str(path))
    config_path = path.parent / str(suite.get("config", ""))
    config, policy = _load(config_path)
    if config is None:
        raise ConfigError("'config' must name a config file with issuers", source=str(path))
    compiled = CompiledPolicy(policy)
    failures = 0
    for index, case in enumerate(suite["tests"]):
        name = case.get("name", f"tests[{index}]") if isinstance(case, Mapping) else str(index)
        problems = _run_case(case, config, compiled, str(path))
        failures += bool(problems)
        out.write(f"{'FAIL' if problems else 'ok  '} {name}\n")
        for problem in problems:
            out.write(f"     {problem}\n")
    total = len(suite["tests"])
    out.write(f"{total - failures} passed, {failures} failed\n")
    return FAILED if failures else OK


def _run_case(case: Any, config: Config, compiled: CompiledPolicy, source: str) -> list[str]:
    if not isinstance(case, Mapping) or not set(case) <= set(_TEST_KEYS):
        raise ConfigError(f"each test takes only {list(_TEST_KEYS)}", source=source)
    expect = case.get("expect") or {}
    if not isinstance(expect, Mapping) or not set(expect) <= set(_EXPECT_KEYS):
        raise ConfigError(f"'expect' takes only {list(_EXPECT_KEYS)}", source=source)
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


# --- doctor ----------------------------------------------------------------------------

Status = Literal["ok", "warn", "error"]
_DAY = 24 * 3600.0
_MAX_SAFE_LEEWAY = 30.0
_PROBE_KID = "iamscope-doctor-probe"  # a kid no issuer has: its key URL must answer 403/404


class _Report:
    """Writes findings as they come (network checks take a moment) and counts them."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.counts: Counter[Status] = Counter()

    def add(self, status: Status, subject: str, message: str) -> None:
        self.counts[status] += 1
        self.out.write(f"{status:<5} {subject}: {message}\n")
        self.out.flush()

    def ok(self, subject: str, message: str) -> None:
        self.add("ok", subject, message)

    def warn(self, subject: str, message: str) -> None:
        self.add("warn", subject, message)

    def error(self, subject: str, message: str) -> None:
        self.add("error", subject, message)

    def summary(self, offline: bool) -> None:
        parts = [
            f"{self.counts['ok']} ok",
            _plural(self.counts["warn"], "warning"),
            _plural(self.counts["error"], "error"),
        ]
        skipped = " (offline: network checks skipped)" if offline else ""
        self.out.write(f"doctor: {', '.join(parts)}{skipped}\n")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _doctor(path: Path, offline: bool, timeout: float, out: TextIO) -> int:
    config = load_config(path)  # unloadable: ConfigError, exit 2 (main)
    report = _Report(out)
    for cfg in config.issuers:
        _doctor_issuer(report, cfg, offline, timeout)
    _doctor_policy(report, path)
    _doctor_telemetry(report, config.telemetry, os.environ)
    if config.gateway is not None:
        _doctor_gateway(report, config.gateway, os.environ)
    report.summary(offline)
    return FAILED if report.counts["error"] else OK


# --- doctor: issuers ----------------------------------------------------------------------


def _doctor_issuer(report: _Report, cfg: IssuerConfig, offline: bool, timeout: float) -> None:
    who = f"issuer {cfg.name}"
    for label, url in (
        ("issuer", cfg.issuer),
        ("jwks_uri", cfg.jwks_uri),
        ("keys_url", cfg.keys_url),
    ):
        if url is not None and _plain_http_remote(url):
            report.warn(
                who, f"{label} uses plain http to a remote host: keys can be altered in transit"
            )
    _doctor_key_policy(report, who, cfg)
    if not offline:
        _doctor_keys(report, who, cfg, timeout)
    if cfg.max_lifetime is None:
        report.warn(who, "no max_lifetime: tokens of any lifetime are accepted (e.g. 3600)")
    elif cfg.max_lifetime > _DAY:
        report.warn(who, f"max_lifetime {cfg.max_lifetime:g} s is over 24 h")
    else:
        report.ok(who, f"max_lifetime {cfg.max_lifetime:g} s")
    if cfg.leeway > _MAX_SAFE_LEEWAY:
        report.warn(who, f"leeway {cfg.leeway:g} s is over {_MAX_SAFE_LEEWAY:g} s")
    else:
        report.ok(who, f"leeway {cfg.leeway:g} s")


def _doctor_key_policy(report: _Report, who: str, cfg: IssuerConfig) -> None:
    """The issuer's keys: block (contract 9), with what it means in seconds."""
    policy = cfg.keys or KeyPolicy()
    report.ok(
        who,
        f"keys: refresh every {policy.refresh:g} s (a max-age within {policy.min_refresh:g}-"
        f"{policy.refresh:g} s), min_refetch {policy.min_refetch:g} s, removed_key_grace "
        f"{policy.removed_key_grace:g} s, fetch_timeout {policy.fetch_timeout:g} s, "
        f"request_wait {policy.request_wait:g} s, max_keys {policy.max_keys}, "
        f"max_bytes {policy.max_bytes}",
    )
    retired_within = policy.refresh + policy.removed_key_grace
    if retired_within > _DAY / 24:
        report.warn(who, f"a key the issuer retires is trusted up to {retired_within:g} s more")


def _doctor_keys(report: _Report, who: str, cfg: IssuerConfig, timeout: float) -> None:
    """One key refresh through the public refresh hook (discovery rules, JWKS parsing,
    caps, key building), then a look at what it kept."""
    from iamscope.tokens.verifier import TokenVerifier

    keys = dataclasses.replace(cfg.keys or KeyPolicy(), fetch_timeout=timeout)
    verifier = TokenVerifier([dataclasses.replace(cfg, keys=keys)], background=False)
    probe = _PROBE_KID if cfg.keys_url is not None else None
    try:
        with _refresh_failures():
            result = verifier.refresh_keys(cfg.name, kid=probe)[cfg.name]
    finally:
        verifier.close()
    exchanges = result.fetches
    for request, response in exchanges if result.ok else exchanges[:-1]:
        report.ok(who, _fetched(request, response))
    if not result.ok:
        where, detail = "", ""
        if exchanges:
            request, response = exchanges[-1]
            where = f"{_PURPOSE[request.purpose]} {_shown(request.url)}: "
            detail = _discovery_detail(request, response, cfg)
        report.error(
            who,
            f"{where}{result.reason or 'key refresh failed'}{detail}; its tokens would be "
            "refused (503 keys_unavailable)",
        )
    for request, response in exchanges:
        if request.purpose == "jwks" and response.status == 200 and response.error is None:
            _doctor_jwks(report, who, cfg, response.body, verifier, result.ok)


_PURPOSE = {"discovery": "discovery", "jwks": "JWKS", "pem": "keys_url"}


def _fetched(request: FetchRequest, response: FetchResponse) -> str:
    url = _shown(request.url)
    if request.purpose == "discovery":
        return f"discovery {url}: reachable, names the issuer exactly"
    if request.purpose == "jwks":
        return f"JWKS {url}: reachable and parseable"
    return f"keys_url {url}: reachable (HTTP {response.status} for an unknown kid, as expected)"


def _discovery_detail(request: FetchRequest, response: FetchResponse, cfg: IssuerConfig) -> str:
    if request.purpose != "discovery" or response.status != 200:
        return ""
    try:
        named = json.loads(response.body).get("issuer")
    except (ValueError, AttributeError):
        return ""
    if named == cfg.issuer:
        return ""
    return f" (it names {named!r}; configured {cfg.issuer!r}: they must match exactly)"


@contextlib.contextmanager
def _refresh_failures() -> Iterator[None]:
    """Keep the key store's own failure log lines off stderr while the doctor reports
    the same reasons (from the refresh result)."""
    logger = logging.getLogger("iamscope.keys")
    propagate = logger.propagate
    handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _doctor_jwks(
    report: _Report,
    who: str,
    cfg: IssuerConfig,
    body: bytes,
    verifier: TokenVerifier,
    refreshed: bool,
) -> None:
    from iamscope.errors import TokenError
    from iamscope.tokens.jose import loads_object

    try:
        entries = loads_object(body, "JWKS").get("keys")
    except TokenError:
        return  # the refresh error already says why
    if not isinstance(entries, list):
        return
    store = verifier.core.keys
    if len(entries) > store.policy_for(cfg.name).max_keys:
        return  # refused whole; the refresh error says so, and which setting raises the cap
    usable: set[str] = set()
    kids: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            report.warn(who, f"keys[{index}] is not a JSON object (ignored)")
            continue
        kid = entry.get("kid")
        label = f"key {kid}" if isinstance(kid, str) else f"keys[{index}]"
        ops = entry.get("key_ops")
        if entry.get("use", "sig") != "sig" or (isinstance(ops, list) and "verify" not in ops):
            report.ok(who, f"{label}: not a signing key (ignored)")
            continue
        try:
            key = build_jwk(entry)
        except KeyBuildError as exc:
            report.error(who, f"{label}: unusable: {exc}")
            continue
        kind = _key_kind(key.key)
        allowed = key.algorithms & cfg.allowed_algorithms
        if not allowed:
            report.warn(
                who,
                f"{label} ({kind}; {', '.join(sorted(key.algorithms))}) is ignored: "
                "none of its algorithms is configured",
            )
            continue
        usable |= allowed
        if isinstance(kid, str):
            kids.append(kid)
        report.ok(who, f"{label}: {kind}, verifies {', '.join(sorted(allowed))}")
    if not refreshed:
        return
    now = verifier.core.clock()
    held = sum(bool(store.lookup(cfg, kid, "", now)) for kid in kids)
    restricted = cfg.algorithms is not None or cfg.preset.algorithms is not None
    configured = ", ".join(sorted(cfg.allowed_algorithms)) if restricted else "any asymmetric"
    served = ", ".join(sorted(usable))
    unserved = sorted(cfg.allowed_algorithms - usable) if restricted else []
    if unserved:
        report.warn(
            who,
            f"algorithms: configured {configured}; no published key serves {', '.join(unserved)}",
        )
    else:
        report.ok(who, f"algorithms: configured {configured}; keys serve {served}")
    if kids and held < len(set(kids)):
        report.warn(who, f"the key set holds {held} of {len(set(kids))} usable keys")


def _key_kind(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def _shown(url: str) -> str:
    """A URL without credentials, query or fragment (any of them could hold a secret)."""
    if "://" not in url:  # gRPC's host:port
        return url.rpartition("@")[2]
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _plain_http_remote(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if parts.scheme != "http" or host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name other than localhost


# --- doctor: policy, telemetry, gateway -----------------------------------------------------


def _doctor_policy(report: _Report, path: Path) -> None:
    try:
        _, policy = _load(path)  # what `iamscope lint` checks
    except ConfigError as exc:
        report.error("policy", str(exc))
        return
    for warning in policy.warnings:
        report.warn("policy", str(warning))
    report.ok(
        "policy",
        f"version {policy.version}: {len(policy.roles)} roles, {len(policy.bindings)} bindings",
    )


def _token_vars(
    projects: Mapping[str, Project], default: Project, prefix: str, lightstep: bool
) -> dict[str, list[str]]:
    """Each token variable the exporters would read, with the projects reading it."""
    from iamscope.telemetry.settings import LIGHTSTEP_TOKEN_ENV

    found: dict[str, list[str]] = {}
    named = [(f"{prefix}projects.{team}", p) for team, p in projects.items()]
    for where, project in [*named, (f"{prefix}default_project", default)]:
        variable = project.token_env or (LIGHTSTEP_TOKEN_ENV if lightstep else None)
        if variable is not None:
            implicit = "" if project.token_env else ", lightstep's default"
            found.setdefault(variable, []).append(where + implicit)
    return found


def _env_finding(
    report: _Report,
    subject: str,
    variable: str,
    users: str,
    env: Mapping[str, str],
    *,
    needed: str | None,
) -> None:
    """``needed``: None when the variable is required, else why it is not."""
    if variable not in env:
        state = "is not set"
    elif not env[variable]:
        state = "is set but empty"
    else:
        report.ok(subject, f"{variable} is set ({users})")
        return
    if needed is None:
        report.error(subject, f"{variable} {state} ({users})")
    else:
        report.warn(subject, f"{variable} {state} ({users}; {needed})")


def _doctor_telemetry(report: _Report, settings: TelemetrySettings, env: Mapping[str, str]) -> None:
    from iamscope.telemetry.export import LIGHTSTEP_GRPC, LIGHTSTEP_HTTP

    exporter = settings.exporter
    exporting = exporter in ("lightstep", "otlp")
    if exporter == "lightstep":
        where = (
            _shown(settings.endpoint)
            if settings.endpoint
            else (LIGHTSTEP_GRPC if settings.protocol == "grpc" else LIGHTSTEP_HTTP)
        )
    elif exporter == "otlp":
        named = [
            name
            for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
            if env.get(name)
        ]
        if settings.endpoint:
            where = _shown(settings.endpoint)
        elif named:
            where = f"the endpoint in {named[0]}"
        else:
            where = "the OTLP default (localhost)"
            if settings.default_project.endpoint is None:
                report.warn(
                    "telemetry",
                    "otlp without an endpoint: spans go to localhost unless "
                    "OTEL_EXPORTER_OTLP_ENDPOINT is set",
                )
    else:
        where = "stdout" if exporter == "console" else "nowhere"
    report.ok(
        "telemetry",
        f"exporter {exporter} ({settings.protocol}) to {where}; "
        f"{_plural(len(settings.projects), 'project')} plus the default",
    )
    if (
        exporting
        and settings.protocol == "grpc"
        and not _importable("opentelemetry.exporter.otlp.proto.grpc")
    ):
        report.error("telemetry", "protocol grpc needs: pip install 'iamscope[grpc]'")
    tokens = _token_vars(settings.projects, settings.default_project, "", exporter == "lightstep")
    unneeded = None if exporting else f"unused while the exporter is {exporter}"
    for variable, users in tokens.items():
        _env_finding(report, "telemetry", variable, ", ".join(users), env, needed=unneeded)
    if exporter == "otlp" and tokens and settings.token_header is None:
        report.error("telemetry", "otlp with project tokens needs 'token_header'")
    needed = (
        None
        if settings.user_hash
        else "user_hash is off: spans and audit records carry no subject hash"
    )
    _env_finding(report, "telemetry", settings.hash_key_env, "hash_key_env", env, needed=needed)
    if settings.enduser_id:
        report.warn("telemetry", "enduser_id is on: raw subjects (personal data) go on spans")


def _doctor_gateway(report: _Report, settings: GatewaySettings, env: Mapping[str, str]) -> None:
    from iamscope.telemetry.export import LIGHTSTEP_HTTP

    lightstep = settings.upstream == "lightstep"
    endpoint = settings.endpoint or (LIGHTSTEP_HTTP if lightstep else None)
    report.ok(
        "gateway",
        f"upstream {settings.upstream} at {_shown(endpoint) if endpoint else '(none)'}; "
        f"{_plural(len(settings.projects), 'project')} plus the default; "
        f"out-of-scope spans: {settings.out_of_scope}",
    )
    tokens = _token_vars(settings.projects, settings.default_project, "gateway.", lightstep)
    for variable, users in tokens.items():
        _env_finding(report, "gateway", variable, ", ".join(users), env, needed=None)
    if not lightstep and tokens and settings.token_header is None:
        report.error("gateway", "an otlp upstream with project tokens needs 'token_header'")
    if not _importable("uvicorn"):
        report.warn("gateway", "`iamscope gateway` needs uvicorn: pip install 'iamscope[gateway]'")


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


# --- token ----------------------------------------------------------------------------------


_MINT_COMMAND = "iamscope token"


def _dev_issuer(port: int) -> LocalIssuer:
    """A started LocalIssuer (RS256 only) on a chosen loopback port; 0 picks a free one."""
    try:
        return LocalIssuer(("RS256",), port=port).start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}", source=_MINT_COMMAND
        ) from None


def _token_claims(args: argparse.Namespace) -> dict[str, Any]:
    if args.ttl <= 0:
        raise ConfigError("--ttl must be a positive number of seconds", source=_MINT_COMMAND)
    if not 0 <= args.issuer_port <= 65535:
        raise ConfigError("--issuer-port must be between 0 and 65535", source=_MINT_COMMAND)
    if args.issuer_port and not args.serve:
        raise ConfigError("--issuer-port only means something with --serve", source=_MINT_COMMAND)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if groups:
        claims["groups"] = groups
    for item in args.claim:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--claim takes NAME=VALUE, got {item!r}", source=_MINT_COMMAND)
        try:
            claims[name] = json.loads(raw)
        except ValueError:
            claims[name] = raw
    return claims


def _token(args: argparse.Namespace, out: TextIO) -> int:
    claims = _token_claims(args)
    issuer = _dev_issuer(args.issuer_port)
    try:
        token = issuer.mint(claims)
        out.write(token + "\n")
        if not args.serve:
            payload = issuer.claims(**claims)
            sys.stderr.write(
                "note: this token's signing key existed only in this process, so it "
                "verifies against nothing. Run `iamscope token --serve` for a token plus a "
                "running issuer to configure, or see what these claims would get with\n"
                f"  iamscope explain --config CONFIG --claims '{json.dumps(payload)}'\n"
            )
            return OK
        out.write(_serving(issuer, claims))
        out.flush()
        with contextlib.suppress(KeyboardInterrupt):
            _wait_for_interrupt()
        out.write("stopped\n")
        return OK
    finally:
        issuer.stop()


def _serving(issuer: LocalIssuer, claims: Mapping[str, Any]) -> str:
    payload = issuer.claims(**claims)
    aud = payload.get("aud")
    audience = json.dumps(aud) if aud is not None else "[]"
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(payload["exp"]))
    return (
        f"issuer:   {issuer.url}\n"
        f"jwks_uri: {issuer.jwks_uri}\n"
        f"expires:  {expires}\n"
        "\n"
        "# an issuers entry trusting this issuer (YAML, generic preset: groups from 'groups'):\n"
        "issuers:\n"
        "  - name: local\n"
        f"    issuer: {issuer.url}\n"
        f"    audience: {audience}\n"
        "\n"
        "try: iamscope explain --config CONFIG --token TOKEN\n"
        "serving until Ctrl-C\n"
    )


def _wait_for_interrupt() -> None:  # pragma: no cover - replaced in tests
    while True:
        time.sleep(3600)
