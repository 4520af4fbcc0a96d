"""Every example runs here."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from examples.whoami import create_app
from iamscope.testing import LocalIssuer


def get(app: Any, path: str, token: str | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return await client.get(path, headers=headers)

    return asyncio.run(run())


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
