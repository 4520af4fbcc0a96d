"""Every example runs here."""

from __future__ import annotations

import asyncio

import httpx

from examples.whoami import create_app
from iamscope.testing import LocalIssuer


async def _get(app: object, headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/whoami", headers=headers)


def get(app: object, headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    return asyncio.run(_get(app, headers))


def test_whoami_example_answers_by_the_rules(local_issuer: LocalIssuer) -> None:
    app = create_app(local_issuer.issuer_config("corp"))
    token = local_issuer.mint(groups=["sales-east"])
    ok = get(app, [("authorization", f"Bearer {token}")])
    assert ok.status_code == 200
    assert ok.json() == {"issuer": "corp", "kind": "user", "groups": ["sales-east"]}

    missing = get(app)
    assert missing.status_code == 401
    assert missing.json()["code"] == "token_missing"

    expired = local_issuer.mint(iat=1, exp=2)
    answer = get(app, [("authorization", f"Bearer {expired}")])
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert expired not in answer.text

    twice = get(app, [("authorization", f"Bearer {token}"), ("authorization", "Bearer x")])
    assert twice.status_code == 400

    local_issuer.failure = 503
    down = get(
        create_app(local_issuer.issuer_config("corp")), [("authorization", f"Bearer {token}")]
    )
    assert (down.status_code, down.json()["code"]) == (503, "keys_unavailable")
