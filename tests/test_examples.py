"""Every example runs here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.whoami import create_app
from iamscope.testing import LocalIssuer
from tests._http import get


def test_whoami_example_answers_by_the_rules(
    local_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMSCOPE_HASH_KEY", "example-key")  # as a deployment would
    app = create_app(local_issuer.issuer_config("corp"))
    analyst = local_issuer.mint(groups=["sales-east"])
    assert get(app, "/whoami", analyst).json() == {"roles": ["analyst"], "owner": "sales"}
    assert get(app, "/sales", analyst).json() == {"rows": ["east-1", "east-2"]}
    other = local_issuer.mint(groups=["marketing"])
    denied = get(app, "/sales", other)
    assert denied.status_code == 403 and denied.json()["code"] == "permission_required"
    missing = get(app, "/whoami")
    assert missing.status_code == 401 and missing.json()["code"] == "token_missing"
    expired = local_issuer.mint(iat=1, exp=2)
    answer = get(app, "/whoami", expired)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="iamscope", error="invalid_token"'
    assert expired not in answer.text


def _iam(issuer: LocalIssuer) -> Any:
    from iamscope import IAMScope
    from iamscope.policy import PolicyStore

    policy = {
        "version": "example",
        "roles": {"analyst": {"permissions": ["sales:read"], "rows": {"sales": "all"}}},
        "bindings": [{"groups": ["sales-east"], "roles": ["analyst"], "owner": "sales"}],
    }
    return IAMScope(
        [issuer.issuer_config("corp")],
        PolicyStore(policy),
        hash_key=b"k" * 32,
        public_paths=("/openapi.json", "/docs"),
    )


def test_flask_example(local_issuer: LocalIssuer) -> None:
    from examples.flask_app.app import create_app as create_flask

    app = create_flask(_iam(local_issuer))
    transport = httpx.WSGITransport(app=app)
    with httpx.Client(transport=transport, base_url="http://test") as client:
        analyst = {"authorization": f"Bearer {local_issuer.mint(groups=['sales-east'])}"}
        other = {"authorization": f"Bearer {local_issuer.mint(groups=['marketing'])}"}
        assert client.get("/whoami", headers=analyst).json() == {
            "roles": ["analyst"],
            "owner": "sales",
        }
        assert client.get("/sales", headers=analyst).json() == {"rows": ["east-1"]}
        assert client.get("/sales", headers=other).status_code == 403
        assert client.get("/whoami").status_code == 401


def test_fastapi_example(local_issuer: LocalIssuer) -> None:
    from examples.fastapi_app.app import create_app as create_fastapi

    app = create_fastapi(_iam(local_issuer))
    analyst = local_issuer.mint(groups=["sales-east"])
    assert get(app, "/sales", analyst).json() == {"rows": ["east-1"], "plan": "all"}
    assert get(app, "/sales", local_issuer.mint(groups=["marketing"])).status_code == 403
    assert get(app, "/whoami").status_code == 401
    assert "iamscope" in get(app, "/openapi.json").json()["components"]["securitySchemes"]


def test_examples_load_their_config_from_the_environment(
    monkeypatch: Any, local_issuer: LocalIssuer
) -> None:
    from pathlib import Path

    from examples.flask_app.app import create_app as create_flask

    config = Path(__file__).resolve().parent.parent / "examples" / "policy" / "iamscope.yaml"
    monkeypatch.setenv("IAMSCOPE_CONFIG", str(config))
    monkeypatch.setenv("IAMSCOPE_HASH_KEY", "example-key")
    app = create_flask()
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as client:
        assert client.get("/whoami").json()["code"] == "token_missing"


def test_gateway_example_exports_with_the_workload_s_own_identity(
    local_issuer: LocalIssuer, tmp_path: Any
) -> None:
    import socket
    import threading
    import time
    from pathlib import Path

    import uvicorn
    from opentelemetry.sdk.resources import Resource

    from examples.gateway.service import tracer_provider
    from iamscope import IAMScope
    from iamscope.config import load_config
    from iamscope.gateway.app import OTLPGateway
    from iamscope.policy import PolicyStore
    from tests.gateway.test_app import ENV, POLICY, settings
    from tests.telemetry._receiver import OTLPHTTPReceiver

    shipped = Path(__file__).resolve().parent.parent / "examples" / "gateway" / "gateway.yaml"
    reference = load_config(shipped)  # the shipped config is valid
    assert reference.gateway is not None and reference.gateway.upstream == "lightstep"

    with OTLPHTTPReceiver() as upstream:
        iam = IAMScope([local_issuer.issuer_config("corp")], PolicyStore(POLICY), hash_key=b"k")
        app = OTLPGateway(iam, settings(upstream.endpoint), environ=ENV)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            token_file = tmp_path / "token"
            resource = Resource.create(
                {"service.name": "checkout-api", "deployment.environment.name": "staging"}
            )
            provider = tracer_provider(f"http://127.0.0.1:{port}", token_file, resource)
            tracer = provider.get_tracer("example")
            for sub in ("bot-1", "bot-2"):  # the token file rotates between exports
                token_file.write_text(local_issuer.mint(sub=sub, groups=["ci-checkout"]))
                tracer.start_span(f"work-{sub}").end()
                assert provider.force_flush()
            assert upstream.wait_for(2)
            provider.shutdown()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            iam.close()
    spans = {s.name: s.resource for s in upstream.spans()}
    assert {r["iamscope.owner.team"] for r in spans.values()} == {"checkout"}
    assert spans["work-bot-1"]["user.hash"] != spans["work-bot-2"]["user.hash"]
    assert {r.headers["lightstep-access-token"] for r in upstream.received} == {"tok-checkout"}


def test_analytics_app_runs_from_iamscope_config(
    local_issuer: LocalIssuer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from examples.analytics import app as analytics
    from iamscope.config import parse_text, read_text

    reference = Path(__file__).resolve().parent.parent / "examples" / "policy" / "iamscope.yaml"
    policy = parse_text(read_text(reference))["policy"]
    config = {
        "issuers": [
            {"name": "corp", "issuer": local_issuer.url, "audience": local_issuer.audience},
            {
                "name": "ci",
                "issuer": "https://ci.invalid",
                "audience": "x",
                "jwks_uri": "https://ci.invalid/k",
            },
        ],
        "policy": json.loads(json.dumps(policy)),
    }
    path = tmp_path / "iamscope.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("IAMSCOPE_CONFIG", str(path))
    monkeypatch.setenv("IAMSCOPE_HASH_KEY", "example-key")
    app = analytics._Lazy()  # what `uvicorn examples.analytics.app:app` serves
    assert get(app, "/health").json() == {"ok": True}
    west = local_issuer.mint(groups=["sales-west"])
    sales = get(app, "/sales", west).json()
    assert sales["count"] == 100 and sales["by_region"] == {"west": 100}
    assert all(row["region"] == "west" for row in sales["rows"])
    assert get(app, "/traces?project=payments", west).json()["count"] == 0
    assert get(app, "/traces?project=checkout", west).json()["count"] == 5
    whoami = get(app, "/whoami", west).json()
    assert whoami["attributes"]["region"] == [{"value": "west", "source": "binding:bindings[1]"}]
    denied = get(app, "/admin/policy", west)
    assert denied.status_code == 403 and denied.json()["code"] == "permission_required"


def test_analytics_app_reloads_its_policy_when_asked(
    local_issuer: LocalIssuer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from examples.analytics import app as analytics

    def config(version: str) -> str:
        policy = {
            "version": version,
            "roles": {"admin": {"permissions": ["*"]}},
            "bindings": [{"groups": ["admins"], "roles": ["admin"]}],
        }
        issuer = {"name": "corp", "issuer": local_issuer.url, "audience": local_issuer.audience}
        return yaml.safe_dump({"issuers": [issuer], "policy": policy})

    path = tmp_path / "iamscope.yaml"
    path.write_text(config("1"))
    monkeypatch.setenv("IAMSCOPE_CONFIG", str(path))
    monkeypatch.setenv("IAMSCOPE_HASH_KEY", "example-key")
    monkeypatch.setenv("IAMSCOPE_RELOAD", "0.05")
    app = analytics._Lazy()
    admin = local_issuer.mint(groups=["admins"])
    assert get(app, "/admin/policy", admin).json()["version"] == "1"
    try:
        staged = tmp_path / "iamscope.yaml.new"  # the README's way: write, then rename
        staged.write_text(config("2"))
        staged.replace(path)
        deadline = time.monotonic() + 30  # a bound on waiting, not on speed
        while get(app, "/admin/policy", admin).json()["version"] != "2":
            assert time.monotonic() < deadline, "the policy was never reloaded"
            time.sleep(0.05)
    finally:
        app._app.iamscope.policy.close()


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_analytics_reload_setting_is_checked(value: str) -> None:
    from examples.analytics.app import reload_interval
    from iamscope import ConfigError

    with pytest.raises(ConfigError, match="IAMSCOPE_RELOAD"):
        reload_interval({"IAMSCOPE_RELOAD": value})
    assert reload_interval({}) == 0 and reload_interval({"IAMSCOPE_RELOAD": "2"}) == 2
