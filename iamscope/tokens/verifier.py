"""The two I/O shells: :class:`TokenVerifier` (``httpx.Client``, WSGI and threads) and
:class:`AsyncTokenVerifier` (``httpx.AsyncClient``, ASGI). They differ only where they
wait; every rule lives in :class:`~iamscope.tokens.verify.Verifier` and
:class:`~iamscope.tokens.keys.KeyStore`.

- One capped fetch (:class:`_Capped`: encoding, size and time caps, ``ETag`` and
  ``Cache-Control`` read at the boundary) serves both clients, and two named drivers,
  :func:`sync_refresh` and :func:`async_refresh`, run a refresh flow to its end (as
  httpx's ``sync_auth_flow`` / ``async_auth_flow`` do).
- A refresh a request needs is single-flight per issuer and runs beside the request (a
  thread, or a task): the request waits at most its issuer's ``request_wait``, the fetch
  goes on and later requests use its result.
- The background refresher (a daemon thread, or a task on the running loop) starts with
  the first fetch or :meth:`start`, stops with ``close()``/``aclose()`` and starts again
  in a forked child (gunicorn ``--preload``). It is never on a request's path.

httpx errors are translated here, at the boundary, into a failed :class:`FetchResponse`:
an unreachable JWKS becomes ``keys_unavailable``, never a bad-token answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable

import httpx

from iamscope._fork import after_fork
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.keys import (
    Cause,
    FetchRequest,
    FetchResponse,
    KeyNeed,
    KeyPolicy,
    RefreshResult,
)
from iamscope.tokens.principal import Principal
from iamscope.tokens.verify import Clock, Verifier

__all__ = ["AsyncTokenVerifier", "TokenVerifier", "async_refresh", "sync_refresh"]

log = logging.getLogger("iamscope.keys")

# identity: a compressed body would be inflated in memory before the size cap sees it.
_HEADERS = {
    "accept": "application/json, application/x-pem-file;q=0.9",
    "accept-encoding": "identity",
}
_LEAST_SLEEP = 0.05  # the refresher never spins, whatever the schedule says

Flow = Generator[FetchRequest, FetchResponse, RefreshResult]


class _TooLarge(Exception):
    pass


class _Compressed(Exception):
    pass


class _TooSlow(Exception):
    pass


# Transport faults and URLs httpx cannot use; both mean "no keys", never a crash.
_FETCH_ERRORS = (httpx.HTTPError, httpx.InvalidURL, ValueError, _TooLarge, _Compressed, _TooSlow)


class _Capped:
    """One key document read under its issuer's caps, whichever client reads it: the
    body may not be compressed, exceed ``max_bytes``, or take over ``fetch_timeout``
    (a server dripping bytes resets a read timeout, so the deadline is checked per chunk)."""

    def __init__(self, request: FetchRequest, policy: KeyPolicy) -> None:
        self.limit = policy.max_bytes
        self.timeout = policy.fetch_timeout
        self.deadline = time.monotonic() + policy.fetch_timeout
        self.headers = dict(_HEADERS)
        if request.etag is not None:
            self.headers["if-none-match"] = request.etag
        self.body = bytearray()

    def opened(self, response: httpx.Response) -> None:
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise _Compressed

    def feed(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > self.limit:
            raise _TooLarge
        if time.monotonic() > self.deadline:
            raise _TooSlow

    def result(self, response: httpx.Response) -> FetchResponse:
        return FetchResponse(
            response.status_code,
            bytes(self.body),
            etag=response.headers.get("etag"),
            cache_control=response.headers.get("cache-control"),
        )

    def failed(self, exc: BaseException) -> FetchResponse:
        if isinstance(exc, _TooLarge):
            return FetchResponse(error=f"response exceeds {self.limit} bytes", over_limit=True)
        if isinstance(exc, _Compressed):
            return FetchResponse(error="compressed response refused")
        if isinstance(exc, _TooSlow | TimeoutError | httpx.TimeoutException):
            return FetchResponse(error=f"no complete answer within {self.timeout:g} s")
        # Only the exception type: httpx messages can carry URLs with credentials.
        return FetchResponse(error=f"transport error ({type(exc).__name__})")


def sync_fetch(client: httpx.Client, request: FetchRequest, policy: KeyPolicy) -> FetchResponse:
    capped = _Capped(request, policy)
    try:
        with client.stream(
            "GET", request.url, headers=capped.headers, timeout=policy.fetch_timeout
        ) as response:
            capped.opened(response)
            for chunk in response.iter_raw():
                capped.feed(chunk)
            return capped.result(response)
    except _FETCH_ERRORS as exc:
        return capped.failed(exc)


async def async_fetch(
    client: httpx.AsyncClient, request: FetchRequest, policy: KeyPolicy
) -> FetchResponse:
    capped = _Capped(request, policy)
    try:
        async with asyncio.timeout(policy.fetch_timeout):
            async with client.stream(
                "GET", request.url, headers=capped.headers, timeout=policy.fetch_timeout
            ) as response:
                capped.opened(response)
                async for chunk in response.aiter_raw():
                    capped.feed(chunk)
                return capped.result(response)
    except (*_FETCH_ERRORS, TimeoutError) as exc:
        return capped.failed(exc)


def sync_refresh(flow: Flow, fetch: Callable[[FetchRequest], FetchResponse]) -> RefreshResult:
    """Run a refresh flow to its end with a blocking ``fetch``."""
    try:
        request = next(flow)
        while True:
            request = flow.send(fetch(request))
    except StopIteration as done:
        result: RefreshResult = done.value
        return result
    finally:
        flow.close()  # an unexpected error must not leave the issuer marked as refreshing


async def async_refresh(
    flow: Flow, fetch: Callable[[FetchRequest], Awaitable[FetchResponse]]
) -> RefreshResult:
    """Run a refresh flow to its end with an awaitable ``fetch``."""
    try:
        request = next(flow)
        while True:
            request = flow.send(await fetch(request))
    except StopIteration as done:
        result: RefreshResult = done.value
        return result
    finally:
        flow.close()  # cancelled (its loop closed): abandoned, neither success nor failure


def _core(
    issuers: Iterable[IssuerConfig] | Verifier,
    clock: Clock,
    key_policy: KeyPolicy | None,
) -> Verifier:
    if isinstance(issuers, Verifier):
        return issuers
    return Verifier(issuers, clock=clock, key_policy=key_policy)


def _names(core: Verifier, issuer: str | None) -> list[str]:
    names = [cfg.name for cfg in core.issuers]
    if issuer is None:
        return names
    if issuer not in names:
        raise ValueError(f"no issuer is named {issuer!r} (configured: {', '.join(names)})")
    return [issuer]


def _flight_key(core: Verifier, need: KeyNeed) -> tuple[str, str | None]:
    cfg = next(c for c in core.issuers if c.name == need.issuer)
    return need.issuer, need.kid if cfg.keys_url is not None else None


class TokenVerifier:
    """Verify tokens synchronously, fetching keys with an ``httpx.Client``.

    ``background``: run the background refresher (started with the first key fetch or
    by :meth:`start`; stopped by :meth:`close`).
    """

    def __init__(
        self,
        issuers: Iterable[IssuerConfig] | Verifier,
        *,
        client: httpx.Client | None = None,
        clock: Clock = time.time,
        key_policy: KeyPolicy | None = None,
        background: bool = True,
    ) -> None:
        self.core = _core(issuers, clock, key_policy)
        self._owns_client = client is None
        self._client = client or _sync_client()
        self._background = background
        self._flights: dict[tuple[str, str | None], threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        after_fork(self, TokenVerifier._forked)

    def verify(self, token: str) -> Principal:
        flow = self.core.verify_flow(token)
        try:
            need = next(flow)
            self._wait_for_keys(need)
            flow.send(None)
        except StopIteration as done:
            principal: Principal = done.value
            return principal
        raise RuntimeError("verification flow yielded twice")  # pragma: no cover

    def _wait_for_keys(self, need: KeyNeed) -> None:
        done = self._flight(need)
        if done is not None:
            # Bounded: a hanging issuer answers this request 503 after request_wait; the
            # fetch goes on, and the requests after it use what it brings.
            done.wait(self.core.keys.policy_for(need.issuer).request_wait)
        if self._background:
            self.start()

    def _flight(self, need: KeyNeed) -> threading.Event | None:
        key = _flight_key(self.core, need)
        with self._lock:
            if self.core.keys.generation(need.issuer) != need.ticket:
                return None  # a refresh finished after we asked: look again
            done = self._flights.get(key)
            if done is None:
                done = self._flights[key] = threading.Event()
                threading.Thread(
                    target=self._fly, args=(need, key, done), name="iamscope-keys", daemon=True
                ).start()
            return done

    def _fly(self, need: KeyNeed, key: tuple[str, str | None], done: threading.Event) -> None:
        try:
            self._refresh(need.issuer, need.kid, "demand")
        except Exception:
            log.exception("iamscope: key refresh for issuer %r crashed", need.issuer)
        finally:
            with self._lock:
                if self._flights.get(key) is done:
                    del self._flights[key]
            done.set()

    def _refresh(self, name: str, kid: str | None, cause: Cause) -> RefreshResult:
        policy = self.core.keys.policy_for(name)
        client = self._client
        flow = self.core.keys.refresh_flow(name, kid, self.core.clock(), cause=cause)
        return sync_refresh(flow, lambda request: sync_fetch(client, request, policy))

    def refresh_keys(
        self, issuer: str | None = None, *, kid: str | None = None
    ) -> dict[str, RefreshResult]:
        """Refresh now (every issuer, or one), whatever the schedule, and say how each
        went and why it failed. ``kid``: the key to ask a per-kid (``keys_url``) issuer for."""
        return {name: self._refresh(name, kid, "operator") for name in _names(self.core, issuer)}

    # --- the background refresher ----------------------------------------------------

    def start(self) -> None:
        """Start the background refresher (idempotent; cheap when running)."""
        thread = self._refresher
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._refresher is not None and self._refresher.is_alive():
                return
            self._stop = threading.Event()
            self._refresher = threading.Thread(
                target=_refresh_loop,
                args=(weakref.ref(self), self._stop),
                name="iamscope-keys-refresh",
                daemon=True,
            )
            self._refresher.start()

    def run_due(self) -> float:
        """One pass of the background refresher: retire keys whose grace is over, refresh
        the issuers that are due. Returns the seconds until the next pass is due."""
        store = self.core.keys
        store.retire_due(self.core.clock())
        names = store.due(self.core.clock())
        if len(names) == 1:
            self._refresh(names[0], None, "periodic")
        elif names:
            # One thread per issuer due, as the async shell gathers them: an issuer that
            # hangs holds up its own refresh only, never another issuer's rotation.
            passes = [
                threading.Thread(
                    target=self._periodic, args=(name,), name=f"iamscope-keys-{name}", daemon=True
                )
                for name in names
            ]
            for each in passes:
                each.start()
            for each in passes:
                each.join()
        return store.next_wake(self.core.clock())

    def _periodic(self, name: str) -> None:
        try:
            self._refresh(name, None, "periodic")
        except Exception:  # the loop's own handler is on another thread
            log.exception("iamscope: the background key refresh of %r failed", name)

    @property
    def refreshing(self) -> bool:
        """Whether the background refresher is running."""
        thread = self._refresher
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def stop(self) -> None:
        """Stop the background refresher (it ends after the fetch under way, if any)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        thread = self._refresher
        self._client.close()  # a fetch under way fails fast
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _forked(self) -> None:
        # The parent's threads are gone: their flights will never finish, and pooled
        # connections are shared with the parent (drop them without closing them).
        self._lock = threading.Lock()
        self._flights.clear()
        if self._owns_client:
            self._client = _sync_client()
        if self._refresher is not None and not self._stop.is_set():
            self._refresher = None
            self.start()


def _refresh_loop(ref: weakref.ref[TokenVerifier], stop: threading.Event) -> None:
    # Holds the shell weakly between passes: a verifier nobody uses any more is collected,
    # and its refresher ends at its next wake-up.
    while not stop.is_set():
        shell = ref()
        if shell is None:
            return
        try:
            wait = shell.run_due()
        except Exception:
            log.exception("iamscope: the background key refresher failed; retrying")
            wait = 1.0
        del shell
        stop.wait(max(wait, _LEAST_SLEEP))


def _sync_client() -> httpx.Client:
    return httpx.Client(follow_redirects=False)


class AsyncTokenVerifier:
    """Verify tokens in an event loop, fetching keys with an ``httpx.AsyncClient``.

    ``background``: run the background refresher as a task on the running loop (started
    with the first key fetch or by :meth:`start`; stopped by :meth:`aclose`).
    """

    def __init__(
        self,
        issuers: Iterable[IssuerConfig] | Verifier,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        key_policy: KeyPolicy | None = None,
        background: bool = True,
    ) -> None:
        self.core = _core(issuers, clock, key_policy)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self._background = background
        # Tasks, not locks: nothing is bound to a loop at construction.
        self._flights: dict[tuple[str, str | None], asyncio.Task[RefreshResult]] = {}
        self._refresher: asyncio.Task[None] | None = None
        after_fork(self, AsyncTokenVerifier._forked)

    async def verify(self, token: str) -> Principal:
        flow = self.core.verify_flow(token)
        try:
            need = next(flow)
            await self._wait_for_keys(need)
            flow.send(None)
        except StopIteration as done:
            principal: Principal = done.value
            return principal
        raise RuntimeError("verification flow yielded twice")  # pragma: no cover

    async def _wait_for_keys(self, need: KeyNeed) -> None:
        task = self._flight(need)
        if task is not None:
            # asyncio.wait never cancels the task: past request_wait this request is
            # answered, the fetch goes on (and so it does if this request is cancelled).
            await asyncio.wait({task}, timeout=self.core.keys.policy_for(need.issuer).request_wait)
        if self._background:
            self.start()

    def _flight(self, need: KeyNeed) -> asyncio.Task[RefreshResult] | None:
        if self.core.keys.generation(need.issuer) != need.ticket:
            return None  # a refresh finished after we asked: look again
        key = _flight_key(self.core, need)
        loop = asyncio.get_running_loop()
        task = self._flights.get(key)
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._refresh(need.issuer, need.kid, "demand"))
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return task

    def _landed(self, key: tuple[str, str | None], task: asyncio.Task[RefreshResult]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("iamscope: key refresh crashed", exc_info=task.exception())

    async def _refresh(self, name: str, kid: str | None, cause: Cause) -> RefreshResult:
        policy = self.core.keys.policy_for(name)
        client = self._client
        flow = self.core.keys.refresh_flow(name, kid, self.core.clock(), cause=cause)
        return await async_refresh(flow, lambda request: async_fetch(client, request, policy))

    async def refresh_keys(
        self, issuer: str | None = None, *, kid: str | None = None
    ) -> dict[str, RefreshResult]:
        """Refresh now (every issuer, or one), whatever the schedule, and say how each
        went and why it failed. ``kid``: the key to ask a per-kid (``keys_url``) issuer for."""
        names = _names(self.core, issuer)
        results = await asyncio.gather(*(self._refresh(n, kid, "operator") for n in names))
        return dict(zip(names, results, strict=True))

    # --- the background refresher ----------------------------------------------------

    def start(self) -> None:
        """Start the background refresher on the running loop (idempotent)."""
        loop = asyncio.get_running_loop()
        task = self._refresher
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._refresher = loop.create_task(self._refresh_loop(), name="iamscope-keys-refresh")

    async def run_due(self) -> float:
        """One pass of the background refresher (see :meth:`TokenVerifier.run_due`)."""
        store = self.core.keys
        store.retire_due(self.core.clock())
        names = store.due(self.core.clock())
        await asyncio.gather(*(self._refresh(name, None, "periodic") for name in names))
        return store.next_wake(self.core.clock())

    async def _refresh_loop(self) -> None:
        while True:
            try:
                wait = await self.run_due()
            except Exception:
                log.exception("iamscope: the background key refresher failed; retrying")
                wait = 1.0
            await asyncio.sleep(max(wait, _LEAST_SLEEP))

    @property
    def refreshing(self) -> bool:
        """Whether the background refresher is running."""
        return self._refresher is not None and not self._refresher.done()

    def stop(self) -> None:
        """Stop the background refresher (from its loop's thread, or any other)."""
        task, self._refresher = self._refresher, None
        if task is None or task.done():
            return
        loop = task.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    async def aclose(self) -> None:
        self.stop()
        await self._client.aclose()

    def _forked(self) -> None:
        # Tasks belong to the parent's loop; pooled connections are shared with it.
        self._flights.clear()
        self._refresher = None
        if self._owns_client:
            self._client = httpx.AsyncClient(follow_redirects=False)
