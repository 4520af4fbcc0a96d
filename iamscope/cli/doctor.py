"""``iamscope doctor``: a deployment's config checked end to end (issuers and their keys,
policy, telemetry, gateway), one line per finding. Environment variables are reported
as set or missing, never their values."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO
from urllib.parse import urlsplit

from iamscope.cli.exit_codes import FAILED, OK
from iamscope.cli.policy import load
from iamscope.config import load_config
from iamscope.errors import ConfigError
from iamscope.telemetry.settings import Project, TelemetrySettings
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.keys import FetchRequest, FetchResponse, KeyBuildError, KeyPolicy, build_jwk

if TYPE_CHECKING:
    from iamscope.gateway.settings import GatewaySettings
    from iamscope.tokens.verifier import TokenVerifier


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


def run(path: Path, offline: bool, timeout: float, out: TextIO) -> int:
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
    _doctor_claim_strings(report, who, cfg)


def _doctor_claim_strings(report: _Report, who: str, cfg: IssuerConfig) -> None:
    """How a groups/roles claim sent as a string is read: the usual 403 nobody explains."""
    cmap = cfg.claim_map
    if not cmap.groups + cmap.roles:
        return
    if cmap.delimiter is not None:
        report.ok(who, f"groups/roles strings are split on {cmap.delimiter!r} (claims.delimiter)")
    elif cmap.allow_string:
        report.ok(
            who,
            "a groups/roles string is read as one value (claims.allow_string); if the issuer "
            "sends several as 'a,b', set claims.delimiter: ','",
        )
    else:
        report.ok(
            who,
            "groups/roles must be lists; a string is refused (claim_not_list): set "
            "claims.delimiter: ',' if the issuer sends 'a,b'",
        )


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
        _, policy = load(path)  # what `iamscope lint` checks
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
