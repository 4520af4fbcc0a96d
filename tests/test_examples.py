"""Every example runs here."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from examples.whoami import create_app
from iamscope.testing import LocalIssuer


def get(app: Any, path: str, token: str | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return await client.get(path, headers=headers)

    return asyncio.run(run())


def test_whoami_example_answers_by_the_rules(local_issuer: LocalIssuer) -> None:
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
