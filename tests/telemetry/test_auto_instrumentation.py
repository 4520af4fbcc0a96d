"""The FastAPI, Flask and Django examples as most services run OpenTelemetry: under
``opentelemetry-instrument``, with iamscope's config in ``IAMSCOPE_CONFIG`` and no
telemetry code in the application.

Each example runs in its own process on its framework's usual server, trusting a local
issuer (real keys, JWKS over loopback). Its spans go, routed by owner, into two real
collectors (rotel): the ``sales`` project's and the default project's. Allowed and
refused requests must both leave a server span with the verdict, and a span the app
starts inside the request must carry the caller's identity.

The hook ``opentelemetry-instrument`` runs is iamscope's ``opentelemetry_post_instrument``
entry point. The subprocess reads it from metadata written from this checkout's
pyproject.toml, so the test checks what the package declares even where the installed
metadata is older than the checkout (an editable install made before the entry point).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iamscope.testing import LocalIssuer
from tests._policy import POLICY
from tests.telemetry._rotel import ReceivedSpan, Rotel, free_port, stop_by_pid, wait_listening

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTUP_WAIT = 60.0  # seconds: interpreter, instrumentation and framework start-up

SERVERS = {
    "fastapi": [
        "uvicorn",
        "examples.fastapi_app.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ],
    "flask": [
        "flask",
        "--app",
        "examples.flask_app.app:create_app()",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--no-reload",
    ],
    "django": ["django-admin", "runserver", "127.0.0.1:{port}", "--noreload"],
}


def entry_points_from_pyproject(directory: Path) -> Path:
    """A dist-info for ``iamscope`` carrying the entry points pyproject.toml declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = directory / "iamscope-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: iamscope\nVersion: 0.0.0\n")
    lines = []
    for group, points in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def collectors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rotel]]:
    base = tmp_path_factory.mktemp("rotel")
    with Rotel(base / "sales") as sales, Rotel(base / "default") as default:
        yield {"sales": sales, "default": default}


def write_config(path: Path, issuer: LocalIssuer, collectors: dict[str, Rotel]) -> Path:
    config = {
        "issuers": [
            {
                "name": "corp",
                "issuer": issuer.url,
                "audience": issuer.audience,
                "jwks_uri": issuer.jwks_uri,
            }
        ],
        "policy": POLICY,
        "telemetry": {
            "exporter": "otlp",
            "projects": {"sales": {"endpoint": collectors["sales"].http_endpoint}},
            "default_project": {"endpoint": collectors["default"].http_endpoint},
        },
    }
    path.write_text(json.dumps(config))  # JSON is YAML: the config loader takes both
    return path


def serve(framework: str, port: int, config: Path, tmp: Path) -> subprocess.Popen[bytes]:
    extra = entry_points_from_pyproject(tmp / "metadata")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(extra), str(ROOT)]),
        "IAMSCOPE_CONFIG": str(config),
        "IAMSCOPE_HASH_KEY": "auto-instrumentation-test",
        "DJANGO_SETTINGS_MODULE": "examples.django_app.settings",
        "OTEL_SERVICE_NAME": f"example-{framework}",
        # iamscope's routing exporter is the only one (docs/telemetry.md says so too).
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    env.pop("IAMSCOPE_OTEL_AUTO", None)
    command = [str(BIN / "opentelemetry-instrument")] + [
        part.format(port=port) for part in SERVERS[framework]
    ]
    log = (tmp / f"{framework}.log").open("wb")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def of(spans: list[ReceivedSpan], service: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.resource.get("service.name") == service]


@pytest.mark.parametrize("framework", ["fastapi", "flask", "django"])
def test_opentelemetry_instrument_puts_identity_on_spans_and_routes_them_by_owner(
    framework: str,
    collectors: dict[str, Rotel],
    local_issuer: LocalIssuer,
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path / "iamscope.json", local_issuer, collectors)
    process = serve(framework, port, config, tmp_path)
    log = tmp_path / f"{framework}.log"
    try:
        wait_listening(process, (port,), log, timeout=STARTUP_WAIT)
        sales = local_issuer.mint(groups=["sales-east"], sub="alice")
        admin = local_issuer.mint(groups=["admins"], sub="root")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers = [
                client.get("/whoami", headers={"authorization": f"Bearer {sales}"}),
                client.get("/whoami", headers={"authorization": f"Bearer {admin}"}),
                client.get("/whoami"),
                client.get("/whoami", headers={"authorization": "Bearer not-a-token"}),
            ]
        assert [a.status_code for a in answers] == [200, 200, 401, 401], log.read_text()
        service = f"example-{framework}"

        def server_spans(found: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in of(found, service) if s.kind == "SPAN_KIND_SERVER"]

        sales_spans = collectors["sales"].wait_for(
            lambda found: (
                len(server_spans(found)) >= 1
                and any(s.name == "whoami.lookup" for s in of(found, service))
            )
        )
        default_spans = collectors["default"].wait_for(
            lambda found: (
                len(server_spans(found)) >= 3
                and any(s.name == "whoami.lookup" for s in of(found, service))
            )
        )
    finally:
        stop_by_pid(process, signal.SIGINT)  # Ctrl-C: each of these servers flushes on it
    output = log.read_text()
    assert "Overriding of current TracerProvider is not allowed" not in output
    assert "no server span carried" not in output  # nothing to warn about

    # The sales caller's trace, whole, in the sales project.
    (allowed,) = server_spans(sales_spans)
    assert allowed.attributes["iamscope.decision"] == "allow"
    assert allowed.attributes["iamscope.owner.team"] == "sales"
    assert allowed.attributes["iamscope.cache"] in ("miss", "hit")
    assert allowed.attributes["user.roles"] == ("analyst",)
    assert "user.hash" in allowed.attributes and "enduser.id" not in allowed.attributes
    (lookup,) = [s for s in of(sales_spans, service) if s.name == "whoami.lookup"]
    assert lookup.trace_id == allowed.trace_id
    assert lookup.attributes["iamscope.owner.team"] == "sales"
    assert lookup.attributes["user.hash"] == allowed.attributes["user.hash"]
    assert all(s.trace_id == allowed.trace_id for s in of(sales_spans, service))

    # Everything else in the default project: the admin (platform has no project of its
    # own here) and both refusals, each with a server span carrying the verdict.
    verdicts = sorted(
        (
            s.attributes.get("iamscope.decision"),
            s.attributes.get("iamscope.code", ""),
            s.attributes.get("iamscope.owner.team", ""),
        )
        for s in server_spans(default_spans)
    )
    assert verdicts == [
        ("allow", "", "platform"),
        ("deny", "token_malformed", ""),
        ("deny", "token_missing", ""),
    ]
    (admin_lookup,) = [s for s in of(default_spans, service) if s.name == "whoami.lookup"]
    assert admin_lookup.attributes["iamscope.owner.team"] == "platform"
    owners = {s.attributes.get("iamscope.owner.team") for s in of(default_spans, service)}
    assert "sales" not in owners
