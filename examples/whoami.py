"""The verifier by hand in a Starlette app: the smallest thing that protects a route.

The enforcement middleware (one line, answers per RFC 6750 / RFC 9457) replaces this
hand-written mapping; until then this shows the pieces and the answers they imply:
401 for any token fault, 400 for an ambiguous request, 503 when keys are unavailable.

Run against a local issuer::

    python -m examples.whoami
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import AsyncTokenVerifier, IAMScopeError, IssuerConfig, extract_from_headers


def create_app(issuer: IssuerConfig) -> Starlette:
    verifier = AsyncTokenVerifier([issuer])

    async def whoami(request: Request) -> JSONResponse:
        try:
            token = extract_from_headers(request.scope["headers"], issuer.token_source)
            principal = await verifier.verify(token)
        except IAMScopeError as exc:
            return JSONResponse(
                {"code": exc.code, "detail": exc.message},
                status_code=exc.status,
                media_type="application/problem+json",
                headers={"www-authenticate": f'Bearer error="{exc.error}"'} if exc.error else {},
            )
        return JSONResponse(
            {"issuer": principal.issuer, "kind": principal.kind, "groups": sorted(principal.groups)}
        )

    return Starlette(routes=[Route("/whoami", whoami)])


if __name__ == "__main__":  # pragma: no cover - manual run
    import asyncio

    import httpx

    from iamscope.testing import LocalIssuer

    async def main(idp: LocalIssuer) -> None:
        transport = httpx.ASGITransport(app=create_app(idp.issuer_config("corp")))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            token = idp.mint(groups=["sales-east"])
            print(
                (await client.get("/whoami", headers={"authorization": f"Bearer {token}"})).json()
            )
            print((await client.get("/whoami")).json())

    with LocalIssuer() as idp:
        asyncio.run(main(idp))
