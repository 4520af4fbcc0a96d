"""The three lines that protect an existing Starlette app, and one decorator.

Run against a local issuer::

    python -m examples.whoami
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import IAMScope, IAMScopeMiddleware, IssuerConfig, current, require
from iamscope.policy import PolicyStore

POLICY = {
    "version": "example",
    "roles": {"analyst": {"permissions": ["sales:read"]}},
    "bindings": [{"groups": ["sales-east"], "roles": ["analyst"], "owner": "sales"}],
}


async def whoami(request: Request) -> JSONResponse:
    access = current()  # also request.state.access
    assert access is not None
    return JSONResponse({"roles": sorted(access.roles), "owner": access.owner})


@require(permission="sales:read")
async def sales(request: Request) -> JSONResponse:
    return JSONResponse({"rows": ["east-1", "east-2"]})


def create_app(issuer: IssuerConfig) -> Any:
    app = Starlette(routes=[Route("/whoami", whoami), Route("/sales", sales)])
    iam = IAMScope([issuer], PolicyStore(POLICY))  # 1. who we trust, what they may do
    return IAMScopeMiddleware(app, iam)  # 2. every request is checked


if __name__ == "__main__":  # pragma: no cover - manual run
    import asyncio

    import httpx

    from iamscope.testing import LocalIssuer

    async def main(idp: LocalIssuer) -> None:
        transport = httpx.ASGITransport(app=create_app(idp.issuer_config("corp")))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            for groups in (["sales-east"], ["marketing"]):
                token = idp.mint(groups=groups)
                for path in ("/whoami", "/sales"):
                    answer = await client.get(path, headers={"authorization": f"Bearer {token}"})
                    print(groups, path, answer.status_code, answer.json())
            print("no token", (await client.get("/whoami")).json())

    with LocalIssuer() as idp:
        asyncio.run(main(idp))
