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
import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterable

import httpx

from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.keys import FetchRequest, FetchResponse, KeyPolicy
from iamscope.tokens.principal import Principal
from iamscope.tokens.verify import Clock, Verifier

__all__ = ["AsyncTokenVerifier", "TokenVerifier"]

# identity: a compressed body would be inflated in memory before the size cap sees it.
_HEADERS = {
    "accept": "application/json, application/x-pem-file;q=0.9",
    "accept-encoding": "identity",
}


class _TooLarge(Exception):
    pass


class _Compressed(Exception):
    pass


class _TooSlow(Exception):
    pass


def _check_encoding(response: httpx.Response) -> None:
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        raise _Compressed


def _failure(exc: Exception, limit: int) -> FetchResponse:
    if isinstance(exc, _TooLarge):
        return FetchResponse(error=f"response exceeds {limit} bytes")
    if isinstance(exc, _Compressed):
        return FetchResponse(error="compressed response refused")
    if isinstance(exc, _TooSlow | TimeoutError):
        return FetchResponse(error="response took too long")
    return _transport_error(exc)


# Transport faults and URLs httpx cannot use; both mean "no keys", never a crash.
_FETCH_ERRORS = (httpx.HTTPError, httpx.InvalidURL, ValueError, _TooLarge, _Compressed, _TooSlow)


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
            name, kid, ticket = next(flow)
            lock = self._locks[name]
            # Bounded wait: a stuck refresh elsewhere must not hang this request.
            if lock.acquire(timeout=3 * self.core.keys.policy.timeout):
                try:
                    if self.core.keys.generation(name) == ticket:
                        refresh = self.core.keys.refresh_flow(name, kid, self.core.clock())
                        _drive(refresh, self._fetch)
                finally:
                    lock.release()
            flow.send(None)
        except StopIteration as done:
            principal: Principal = done.value
            return principal
        raise RuntimeError("verification flow yielded twice")  # pragma: no cover

    def _fetch(self, request: FetchRequest) -> FetchResponse:
        policy = self.core.keys.policy
        deadline = time.monotonic() + policy.timeout
        try:
            with self._client.stream("GET", request.url, headers=_HEADERS) as response:
                _check_encoding(response)
                body = bytearray()
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > policy.max_response_bytes:
                        raise _TooLarge
                    if time.monotonic() > deadline:
                        raise _TooSlow  # a server dripping bytes resets the read timeout
                return FetchResponse(response.status_code, bytes(body))
        except _FETCH_ERRORS as exc:
            return _failure(exc, policy.max_response_bytes)

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
            name, kid, ticket = next(flow)
            await self._refresh_once(name, kid, ticket)
            flow.send(None)
        except StopIteration as done:
            principal: Principal = done.value
            return principal
        raise RuntimeError("verification flow yielded twice")  # pragma: no cover

    async def _refresh_once(self, name: str, kid: str | None, ticket: int) -> None:
        if self.core.keys.generation(name) != ticket:
            return  # a refresh finished after we asked: look again
        wait = 3 * self.core.keys.policy.timeout
        pending = self._inflight.get(name)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pending), wait)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[name] = future
        try:
            refresh = self.core.keys.refresh_flow(name, kid, self.core.clock())
            try:
                async with asyncio.timeout(wait):
                    request = next(refresh, None)
                    while request is not None:
                        request = _send(refresh, await self._fetch(request))
            except TimeoutError:
                # Too slow overall: a failed fetch (503 for callers, the retry interval
                # applies), not an abandoned one.
                _send(refresh, FetchResponse(error="key refresh took too long"))
            finally:
                refresh.close()
        finally:
            self._inflight.pop(name, None)
            future.set_result(None)

    async def _fetch(self, request: FetchRequest) -> FetchResponse:
        policy = self.core.keys.policy
        try:
            async with asyncio.timeout(policy.timeout):
                async with self._client.stream("GET", request.url, headers=_HEADERS) as response:
                    _check_encoding(response)
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) > policy.max_response_bytes:
                            raise _TooLarge
                    return FetchResponse(response.status_code, bytes(body))
        except (*_FETCH_ERRORS, TimeoutError) as exc:
            return _failure(exc, policy.max_response_bytes)

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
