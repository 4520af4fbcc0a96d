"""One way to call an ASGI app in-process with a bearer token, for every test file."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


def get(app: Any, path: str, token: str | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return await client.get(path, headers=headers)

    return asyncio.run(run())
