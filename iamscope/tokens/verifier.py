"""The two I/O shells: :class:`TokenVerifier` (``httpx.Client``, WSGI and threads) and
:class:`AsyncTokenVerifier` (``httpx.AsyncClient``, ASGI). They differ only where they
wait; every rule lives in :class:`~iamscope.tokens.verify.Verifier` and
:class:`~iamscope.tokens.keys.KeyStore`.

Refresh is single-flight per issuer: the first caller fetches, others wait for it and
then look again (a generation number tells them a refresh happened meanwhile). httpx
errors are translated here, at the boundary, into a failed :class:`FetchResponse`:
an unreachable JWKS becomes ``keys_unavailable``, never a bad-token answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator, Iterable

import httpx

from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.keys import FetchRequest, FetchResponse, KeyPolicy
from iamscope.tokens.principal import Principal
from iamscope.tokens.verify import Clock, Verifier

__all__ = ["AsyncTokenVerifier", "TokenVerifier"]

_HEADERS = {"accept": "application/json, application/x-pem-file;q=0.9"}


class _TooLarge(Exception):
    pass


def _transport_error(exc: Exception) -> FetchResponse:
    # Only the exception type: httpx messages can carry URLs with credentials.
    return FetchResponse(error=f"transport error ({type(exc).__name__})")


def _core(
    issuers: Iterable[IssuerConfig] | Verifier,
    clock: Clock,
    key_policy: KeyPolicy | None,
) -> Verifier:
    if isinstance(issuers, Verifier):
        return issuers
    return Verifier(issuers, clock=clock, key_policy=key_policy)


class TokenVerifier:
    """Verify tokens synchronously, fetching keys with an ``httpx.Client``."""

    def __init__(
        self,
        issuers: Iterable[IssuerConfig] | Verifier,
        *,
        client: httpx.Client | None = None,
        clock: Clock = time.time,
        key_policy: KeyPolicy | None = None,
    ) -> None:
        self.core = _core(issuers, clock, key_policy)
        policy = self.core.keys.policy
        self._client = client or httpx.Client(timeout=policy.timeout, follow_redirects=False)
        self._locks = {cfg.name: threading.Lock() for cfg in self.core.issuers}

    def verify(self, token: str) -> Principal:
        flow = self.core.verify_flow(token)
        try:
            name, kid = next(flow)
            seen = self.core.keys.generation(name)
            with self._locks[name]:
                if self.core.keys.generation(name) == seen:
                    refresh = self.core.keys.refresh_flow(name, kid, self.core.clock())
                    _drive(refresh, self._fetch)
            flow.send(None)
        except StopIteration as done:
            principal: Principal = done.value
            return principal
        raise RuntimeError("verification flow yielded twice")  # pragma: no cover

    def _fetch(self, request: FetchRequest) -> FetchResponse:
        limit = self.core.keys.policy.max_response_bytes
        try:
            with self._client.stream("GET", request.url, headers=_HEADERS) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise _TooLarge
                return FetchResponse(response.status_code, bytes(body))
        except _TooLarge:
            return FetchResponse(error=f"response exceeds {limit} bytes")
        except httpx.HTTPError as exc:
            return _transport_error(exc)

    def close(self) -> None:
        self._client.close()


class AsyncTokenVerifier:
    """Verify tokens in an event loop, fetching keys with an ``httpx.AsyncClient``."""

    def __init__(
        self,
        issuers: Iterable[IssuerConfig] | Verifier,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        key_policy: KeyPolicy | None = None,
    ) -> None:
        self.core = _core(issuers, clock, key_policy)
        policy = self.core.keys.policy
        self._client = client or httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False)
        # One in-flight refresh per issuer; a future, not a Lock, so no loop is bound at init.
        self._inflight: dict[str, asyncio.Future[None]] = {}

    async def verify(self, token: str) -> Principal:
        flow = self.core.verify_flow(token)
        try:
            name, kid = next(flow)
            await self._refresh_once(name, kid)
            flow.send(None)
        except StopIteration as done:
            principal: Principal = done.value
            return principal
        raise RuntimeError("verification flow yielded twice")  # pragma: no cover

    async def _refresh_once(self, name: str, kid: str | None) -> None:
        pending = self._inflight.get(name)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[name] = future
        try:
            refresh = self.core.keys.refresh_flow(name, kid, self.core.clock())
            try:
                request = next(refresh, None)
                while request is not None:
                    request = _send(refresh, await self._fetch(request))
            finally:
                refresh.close()
        finally:
            self._inflight.pop(name, None)
            future.set_result(None)

    async def _fetch(self, request: FetchRequest) -> FetchResponse:
        limit = self.core.keys.policy.max_response_bytes
        try:
            async with self._client.stream("GET", request.url, headers=_HEADERS) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise _TooLarge
                return FetchResponse(response.status_code, bytes(body))
        except _TooLarge:
            return FetchResponse(error=f"response exceeds {limit} bytes")
        except httpx.HTTPError as exc:
            return _transport_error(exc)

    async def aclose(self) -> None:
        await self._client.aclose()


def _send(
    flow: Generator[FetchRequest, FetchResponse, None], response: FetchResponse
) -> FetchRequest | None:
    try:
        return flow.send(response)
    except StopIteration:
        return None


def _drive(
    flow: Generator[FetchRequest, FetchResponse, None],
    fetch: Callable[[FetchRequest], FetchResponse],
) -> None:
    try:
        request = next(flow, None)
        while request is not None:
            request = _send(flow, fetch(request))
    finally:
        flow.close()  # an unexpected error must not leave the issuer marked as refreshing
