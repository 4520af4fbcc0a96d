"""``iamscope demo``: the main job on an embedded default, no network beyond loopback.

It starts two real :class:`~iamscope.testing.LocalIssuer` instances (an Okta-shaped
corporate IdP and a GitHub-Actions-shaped CI issuer), writes a config file trusting
them with the reference policy (``examples/policy/iamscope.yaml``), builds the analytics
example app (``examples/analytics``: Starlette + SQLite sales rows and trace summaries)
from it, mints tokens for five personas and calls the API as each. It prints what each
persona sees and why, the refusals with their codes, the spans with their identity
attributes and the audit events, and exits non-zero if anything differs from what the
policy says (the demo is also a test).

    iamscope demo              # the tour, then exit
    iamscope demo --serve      # keep the app and the issuers running; prints curl lines
    iamscope demo --lightstep  # also send the spans to Lightstep (LS_ACCESS_TOKEN)
    iamscope demo --datasette  # also the Datasette example under the same policy
                               # (with --serve: serve Datasette rather than the API)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iamscope._yaml import parse_text, read_text
from iamscope.engine.engine import IAMScope
from iamscope.errors import ConfigError
from iamscope.telemetry import OwnershipSpanProcessor, TelemetrySettings
from iamscope.telemetry.audit import ListSink
from iamscope.telemetry.export import build_exporter
from iamscope.testing import LocalIssuer

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "examples" / "policy" / "iamscope.yaml"
DEMO_HASH_KEY = "iamscope-demo-key"  # a demo default; a real service sets its own secret


@dataclass(frozen=True, slots=True)
class Expect:
    """What the reference policy says a persona gets from one endpoint."""

    status: int
    detail: Any = None  # sales: counts by region; traces: visible projects; else a code


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    token: Callable[[], str | None]
    expect: dict[str, Expect]


ENDPOINTS = ("/whoami", "/sales", "/traces", "/admin/policy")


def run(
    out: TextIO, *, serve: bool = False, lightstep: bool = False, datasette: bool = False
) -> int:
    try:
        analytics = _analytics_module()
    except ImportError as exc:
        out.write(f"error: the demo needs a source checkout with examples/ ({exc})\n")
        return 2
    with _step(out, "starting local issuers (corp IdP, CI, an untrusted one) on 127.0.0.1"):
        issuers = [LocalIssuer(), LocalIssuer(("RS256",)), LocalIssuer()]
        for issuer in issuers:
            issuer.__enter__()
    try:
        return _tour(
            out, analytics, *issuers, serve=serve, lightstep=lightstep, datasette=datasette
        )
    finally:
        for issuer in issuers:
            issuer.__exit__(None, None, None)


def _tour(
    out: TextIO,
    analytics: Any,
    corp: LocalIssuer,
    ci: LocalIssuer,
    rogue: LocalIssuer,
    *,
    serve: bool,
    lightstep: bool,
    datasette: bool = False,
) -> int:
    os.environ.setdefault("IAMSCOPE_HASH_KEY", DEMO_HASH_KEY)
    spans = InMemorySpanExporter()
    provider = _tracer_provider(spans, lightstep, out)
    sink = ListSink()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "iamscope.yaml")
        config.write_text(yaml.safe_dump(_config(corp, ci), sort_keys=False))
        with _step(out, f"loading {config.name} (issuers + the reference policy)"):
            iam = IAMScope.from_config(config, audit=sink, public_paths=("/health",))
        app = _ServerSpans(analytics.create_app(iam), provider)
        personas = _personas(corp, ci, rogue)
        with _step(out, f"calling the API as {len(personas)} personas"):
            results = asyncio.run(_call_all(app, personas))
        failures = _report(out, personas, results, iam)
        provider.force_flush()
        _print_spans(out, spans)
        iam.flush_audit()  # the summarised cache hits, reported now rather than in a minute
        _print_audit(out, sink)
        if datasette:
            app, failures = _datasette_tour(out, config, personas[:5], failures)
        if serve:
            _serve(out, app, personas)
        iam.close()
        provider.shutdown()
    out.write("\nall personas saw what the policy says\n" if not failures else "")
    if failures:
        out.write(f"\n{failures} MISMATCHES with the policy\n")
    return 1 if failures else 0


# --- set-up ---------------------------------------------------------------------------------


def _analytics_module() -> Any:
    if str(ROOT) not in sys.path and (ROOT / "examples" / "analytics").is_dir():
        sys.path.insert(0, str(ROOT))  # a source checkout: the examples sit beside the package
    import examples.analytics.app as analytics

    return analytics


def _config(corp: LocalIssuer, ci: LocalIssuer) -> dict[str, Any]:
    reference = parse_text(read_text(REFERENCE), str(REFERENCE))
    return {
        "issuers": [
            {"name": "corp", "issuer": corp.url, "audience": corp.audience, "preset": "okta"},
            {
                "name": "ci",
                "issuer": ci.url,
                "audience": "https://github.com/acme",
                "preset": "github-actions",
            },
        ],
        "policy": json.loads(json.dumps(reference["policy"])),  # plain dicts for the dump
    }


def _tracer_provider(spans: InMemorySpanExporter, lightstep: bool, out: TextIO) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(OwnershipSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(spans))
    if lightstep:
        try:
            exporter = build_exporter(TelemetrySettings(exporter="lightstep"))
        except ConfigError as exc:
            out.write(f"--lightstep: {exc.detail}; spans stay local\n")
        else:
            assert exporter is not None
            provider.add_span_processor(BatchSpanProcessor(exporter))
            out.write("--lightstep: spans also go to Lightstep (LS_ACCESS_TOKEN)\n")
    return provider


class _ServerSpans:
    """What the OpenTelemetry ASGI middleware does, reduced to what the demo needs: a
    current SERVER span around each request, outside iamscope's middleware."""

    def __init__(self, app: Any, provider: TracerProvider) -> None:
        self.app, self.tracer = app, provider.get_tracer("iamscope.demo")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = f"{scope['method']} {scope['path']}"
        with self.tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER):
            await self.app(scope, receive, send)


@contextmanager
def _step(out: TextIO, what: str) -> Iterator[None]:
    """A progress line: what is happening, then how long it took."""
    out.write(f"... {what}")
    out.flush()
    started = time.perf_counter()
    yield
    out.write(f"  done ({time.perf_counter() - started:.1f} s)\n")


# --- personas and what the policy says they get ------------------------------------------


def _personas(corp: LocalIssuer, ci: LocalIssuer, rogue: LocalIssuer) -> list[Persona]:
    now = int(time.time())
    denied = Expect(403, "permission_required")

    def refused(code: str) -> dict[str, Expect]:
        return {path: Expect(401, code) for path in ENDPOINTS}

    def forged_groups() -> str:
        head, body, sig = corp.mint(sub="00u-east", groups=["sales-east"]).split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=="))
        claims["groups"] = ["admins"]  # edited after signing
        return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"

    def alg_none() -> str:
        body = corp.mint(sub="00u-east", groups=["admins"]).split(".")[1]
        return _b64(b'{"alg":"none"}') + f".{body}."

    def analyst(region: str) -> Persona:
        """An analyst bound through sales-<region>: that region's rows, checkout traces."""
        return Persona(
            f"{region} analyst",
            lambda: corp.mint(sub=f"00u-{region}", groups=[f"sales-{region}"]),
            {
                "/whoami": Expect(200, ["analyst"]),
                "/sales": Expect(200, {region: 100}),
                "/traces": Expect(200, {"checkout": 5}),
                "/admin/policy": denied,
            },
        )

    return [
        analyst("east"),
        analyst("west"),
        Persona(
            "admin",
            lambda: corp.mint(sub="00u-admin", groups=["admins"]),
            {
                "/whoami": Expect(200, ["admin"]),
                "/sales": Expect(200, {"east": 100, "north": 100, "south": 100, "west": 100}),
                "/traces": Expect(200, {"checkout": 10, "payments": 10, "search": 10}),
                "/admin/policy": Expect(200),
            },
        ),
        Persona(
            "CI bot (staging writes)",
            lambda: ci.mint(
                aud="https://github.com/acme",
                sub="repo:acme/checkout:environment:staging",
                repository="acme/checkout",
                repository_owner="acme",
                environment="staging",
            ),
            {
                "/whoami": Expect(200, ["deployer"]),
                "/sales": denied,
                "/traces": Expect(403, "trace_scope_required"),  # it may write, not read
                "/admin/policy": denied,
            },
        ),
        Persona(
            "user with no mapped groups",
            lambda: corp.mint(sub="00u-new", groups=["marketing"]),
            {
                "/whoami": Expect(200, []),
                "/sales": denied,
                "/traces": Expect(403, "trace_scope_required"),
                "/admin/policy": denied,
            },
        ),
        Persona("no token", lambda: None, refused("token_missing")),
        Persona(
            "expired token",
            lambda: corp.mint(sub="00u-east", groups=["sales-east"], iat=now - 900, exp=now - 600),
            refused("token_expired"),
        ),
        Persona("groups edited after signing", forged_groups, refused("signature_invalid")),
        Persona("alg none", alg_none, refused("token_unsupported")),
        Persona(
            "an untrusted issuer",
            lambda: rogue.mint(groups=["admins"]),
            refused("issuer_untrusted"),
        ),
    ]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _call_all(app: Any, personas: list[Persona]) -> dict[tuple[str, str], Any]:
    results: dict[tuple[str, str], Any] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as client:
        for persona in personas:
            token = persona.token()
            headers = {"authorization": f"Bearer {token}"} if token else {}
            for path in ENDPOINTS:
                response = await client.get(path, headers=headers)
                results[persona.name, path] = (response.status_code, response.json())
    return results


def _seen(path: str, status: int, body: dict[str, Any]) -> Any:
    """The part of an answer the policy decides, in the shape of ``Expect.detail``."""
    if status != 200:
        return body.get("code")
    if path == "/whoami":
        return body["roles"]
    if path == "/sales":
        return body["by_region"]
    if path == "/traces":
        counts: dict[str, int] = {}
        for record in body["traces"]:
            counts[record["project"]] = counts.get(record["project"], 0) + 1
        return counts
    return None


# --- the report -----------------------------------------------------------------------------


def _report(
    out: TextIO, personas: list[Persona], results: dict[tuple[str, str], Any], iam: IAMScope
) -> int:
    failures = 0
    out.write(f"\n{'persona':28} {'endpoint':14} {'status':6} {'what it got':44} check\n")
    for persona in personas:
        if _refused_everywhere(persona, results):
            status, body = results[persona.name, ENDPOINTS[0]]
            out.write(f"{persona.name:28} {'every one':14} {status:<6} {body['code']:44} ok\n")
            continue
        for path in ENDPOINTS:
            status, body = results[persona.name, path]
            seen = _seen(path, status, body)
            wanted = persona.expect[path]
            ok = status == wanted.status and (wanted.detail is None or seen == wanted.detail)
            failures += not ok
            shown = _show(seen)
            out.write(
                f"{persona.name:28} {path:14} {status:<6} {shown:44} "
                f"{'ok' if ok else f'MISMATCH (policy says {wanted.status} {wanted.detail})'}\n"
            )
        _why(out, results[persona.name, "/whoami"])
    return failures


def _refused_everywhere(persona: Persona, results: dict[tuple[str, str], Any]) -> bool:
    """A persona refused with the expected 401 on every endpoint: one line is enough."""
    return all(
        wanted.status == 401
        and results[persona.name, path][0] == 401
        and results[persona.name, path][1].get("code") == wanted.detail
        for path, wanted in persona.expect.items()
    )


def _show(seen: Any) -> str:
    if isinstance(seen, dict):
        return ", ".join(f"{k} {v}" for k, v in seen.items()) or "nothing"
    if isinstance(seen, list):
        return "roles: " + (", ".join(seen) or "none")
    return "" if seen is None else str(seen)


def _why(out: TextIO, whoami: tuple[int, dict[str, Any]]) -> None:
    status, body = whoami
    if status != 200:
        out.write(f"{'':28} why: refused before any policy applies\n\n")
        return
    attrs = "; ".join(
        f"{name}={'|'.join(v['value'] for v in values)} (from {values[0]['source']})"
        for name, values in body["attributes"].items()
        if values
    )
    rows = "; ".join(f"{name}: {plan}" for name, plan in body["rows"].items()) or "no rows"
    owner = body["owner"] or "none"
    out.write(f"{'':28} why: rows {rows}; owner {owner}{'; ' + attrs if attrs else ''}\n\n")


def _print_spans(out: TextIO, spans: InMemorySpanExporter) -> None:
    out.write("\nspans (server spans, tagged by iamscope):\n")
    keys = ("iamscope.decision", "iamscope.code", "iamscope.owner.team", "user.roles", "user.hash")
    for span in spans.get_finished_spans()[:12]:
        attrs = span.attributes or {}
        shown = " ".join(f"{k.split('.')[-1]}={_short(attrs[k])}" for k in keys if k in attrs)
        out.write(f"  {span.name:22} {shown}\n")
    total = len(spans.get_finished_spans())
    out.write(f"  ... {total} spans in all\n\n" if total > 12 else "\n")


def _short(value: Any) -> str:
    text = ",".join(value) if isinstance(value, tuple) else str(value)
    return text[:12] + "…" if len(text) > 16 else text


def _print_audit(out: TextIO, sink: ListSink) -> None:
    out.write("audit events (JSON lines on the iamscope.audit logger):\n")
    summaries = [e for e in sink.events if e["decision"] == "allow" and e["cache"] == "hit"]
    for event in [e for e in sink.events if e not in summaries][:5] + summaries[:1]:
        out.write(f"  {json.dumps(event, separators=(',', ':'))}\n")
    hits = sum(int(e["count"]) for e in summaries)
    out.write(
        f"  ... {len(sink.events)} events in all: one per denial and per first decision "
        f"for a token, and {len(summaries)} summaries of {hits} allowed cache hits\n"
    )


# --- --serve --------------------------------------------------------------------------------


def _serve(out: TextIO, app: Any, personas: list[Persona]) -> None:
    import uvicorn

    port = int(os.environ.get("IAMSCOPE_DEMO_PORT", "8000"))
    path = getattr(app, "demo_path", "/sales")
    what = "Datasette" if path != "/sales" else "the analytics app"
    out.write(f"\nserving {what} on http://127.0.0.1:{port} (Ctrl-C to stop)\n")
    for persona in personas[:5]:
        token = persona.token()
        out.write(f"\n# {persona.name}\ncurl -s -H 'Authorization: Bearer {token}' ")
        out.write(f"'http://127.0.0.1:{port}{path}'\n")
    out.flush()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# --- --datasette ----------------------------------------------------------------------------

DATASETTE_PATHS = {
    "table": "/analytics/sales.json?_shape=array&_size=max",
    "csv": "/analytics/sales.csv?_stream=on",
    "canned": "/analytics/sales_by_region.json?_shape=array",
    "sql": "/analytics.json?sql=select+count(*)+from+sales",
}


def _datasette_tour(
    out: TextIO, config: Path, personas: list[Persona], failures: int
) -> tuple[Any, int]:
    """The Datasette example under the same policy: each persona must see, on every path,
    the rows per region the API showed it (and SQL only as admin)."""
    import examples.datasette.app as example  # beside the analytics example (on sys.path)
    from iamscope.integrations.datasette import PUBLIC_PREFIXES

    iam = IAMScope.from_config(config, public_prefixes=PUBLIC_PREFIXES)
    with tempfile.TemporaryDirectory() as tmp:
        database = example.build_database(Path(tmp, "analytics.db"))
        with _step(out, "calling Datasette (examples/datasette) as the same personas"):
            seen = asyncio.run(_datasette_calls(example.create_app(iam, database), personas))
        with sqlite3.connect(database) as db:
            total = db.execute("SELECT count(*) FROM sales").fetchone()[0]
    out.write(f"\n{'persona':28} {'table':42} {'csv':5} {'canned':42} {'sql':4} check\n")
    for persona in personas:
        sales = persona.expect["/sales"]
        wanted = sales.detail if sales.status == 200 else {}
        table, csv_rows, canned, sql = seen[persona.name]
        ok = table == canned == wanted and csv_rows == sum(wanted.values())
        # SQL only for a plan of `all`: here, whoever may see every row.
        ok = ok and sql == (200 if sum(wanted.values()) == total else 403)
        failures += not ok
        verdict = "ok" if ok else f"MISMATCH (policy says {wanted})"
        out.write(f"{persona.name:28} {_show(table):42} {csv_rows:<5} {_show(canned):42} ")
        out.write(f"{sql:<4} {verdict}\n")
    iam.close()
    # For --serve: a fresh app over a lasting copy of the data, in the server's own loop.
    served = IAMScope.from_config(config, public_prefixes=PUBLIC_PREFIXES)
    app = example.create_app(served, example.build_database(example.DEFAULT_DATABASE))
    app.demo_path = DATASETTE_PATHS["table"]
    return app, failures


async def _datasette_calls(
    app: Any, personas: list[Persona]
) -> dict[str, tuple[dict[str, int], int, dict[str, int], int]]:
    seen = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://datasette") as client:
        for persona in personas:
            token = persona.token()
            headers = {"authorization": f"Bearer {token}"} if token else {}
            got = {k: await client.get(p, headers=headers) for k, p in DATASETTE_PATHS.items()}
            table: dict[str, int] = {}
            for row in got["table"].json() if got["table"].status_code == 200 else []:
                table[row["region"]] = table.get(row["region"], 0) + 1
            lines = got["csv"].text.splitlines() if got["csv"].status_code == 200 else [""]
            canned = got["canned"].json() if got["canned"].status_code == 200 else []
            seen[persona.name] = (
                table,
                len(lines) - 1,  # less the header
                {row["region"]: row["sales"] for row in canned},
                got["sql"].status_code,
            )
    return seen
