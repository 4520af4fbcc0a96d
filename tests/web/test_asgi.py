"""The ASGI middleware and decorators on a real Starlette app, with tokens from a real
local issuer (JWKS over loopback) and a real policy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from iamscope import IAMScope, IAMScopeMiddleware, KeyPolicy, current, require
from iamscope.engine.cache import InMemoryRevocations
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from tests._policy import POLICY
from tests.web._engine import engine


async def whoami(request: Request) -> JSONResponse:
    access = request.state.access
    assert access is request.scope["iamscope.access"] is current()
    decision = request.scope["iamscope.decision"]
    return JSONResponse(
        {
            "subject": decision.principal.subject,
            "roles": sorted(access.roles),
            "regions": list(access.attributes["region"].values)
            if "region" in access.attributes
            else [],
            "cache": decision.cache,
            "owner": access.owner,
        }
    )


@require(permission="sales:read")
async def sales(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@require(trace="read", project_param="project")
async def traces(request: Request) -> JSONResponse:
    return JSONResponse({"project": request.path_params["project"]})


@require(roles=["admin"])
def admin(request: Request) -> JSONResponse:  # a sync endpoint
    return JSONResponse({"admin": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "access": current() is not None})


async def stream(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0)
            access = current()
            yield (sorted(access.roles)[0] if access else "none").encode() + b"\n"

    return StreamingResponse(body())


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("handler bug")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    access = current()
    await websocket.send_json({"roles": sorted(access.roles) if access else []})
    await websocket.close()


@require(roles=["admin"])
async def ws_admin(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


def make_app(iam: IAMScope) -> Any:
    app = Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/sales", sales),
            Route("/traces/{project}", traces),
            Route("/admin", admin),
            Route("/health", health),
            Route("/static/{path:path}", health),
            Route("/stream", stream),
            Route("/boom", boom),
            WebSocketRoute("/ws", ws),
            WebSocketRoute("/ws/admin", ws_admin),
        ]
    )
    return IAMScopeMiddleware(app, iam)


async def _request(
    app: Any, path: str, headers: list[tuple[str, str]] | None = None, raw_path: bytes | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        if raw_path is not None:
            request = client.build_request("GET", "http://test/")
            request.url = request.url.copy_with(raw_path=raw_path)
            return await client.send(request)
        return await client.get(path, headers=headers)


def get(app: Any, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = [("authorization", f"Bearer {token}")] if token else []
    return asyncio.run(_request(app, path, headers, **kw))


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code and body["decision_id"]
    return body


def test_allowed_request_sees_its_access_everywhere(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    app = make_app(iam)
    token = local_issuer.mint(sub="alice", groups=["sales-east"])
    first = get(app, "/whoami", token)
    assert first.status_code == 200
    assert first.json() == {
        "subject": "alice",
        "roles": ["analyst"],
        "regions": ["east"],
        "cache": "miss",
        "owner": "sales",
    }
    assert get(app, "/whoami", token).json()["cache"] == "hit"


def test_missing_token_is_a_bare_challenge(iam: IAMScope) -> None:
    response = get(make_app(iam), "/whoami")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="iamscope"'
    assert problem(response)["code"] == "token_missing"


def test_bad_token_is_invalid_token_without_echo(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    token = local_issuer.mint(iat=1, exp=2, sub="secret-subject")
    response = get(make_app(iam), "/whoami", token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="iamscope", error="invalid_token"'
    assert problem(response)["code"] == "token_expired"
    assert token not in response.text and "secret-subject" not in response.text


def test_two_authorization_headers_are_a_bad_request(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.mint()
    headers = [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    response = asyncio.run(_request(make_app(iam), "/whoami", headers))
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]
    assert problem(response)["code"] == "request_invalid"


def test_key_outage_is_503_not_401(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    local_issuer.failure = 503
    response = get(make_app(iam), "/whoami", local_issuer.mint())
    assert response.status_code == 503
    # The next fetch a request may cause: within the issuer's min_refetch (1 s).
    assert response.headers["retry-after"] == "1"
    assert "www-authenticate" not in response.headers
    assert problem(response)["code"] == "keys_unavailable"


@pytest.mark.parametrize(
    ("raw_path", "public"),
    [
        (b"/health", True),
        (b"/%68ealth", True),  # the server decodes it: the router sees /health too
        (b"/health/", False),
        (b"//health", False),
        (b"/health%2F", False),
        (b"/static/app.js", True),
        (b"/static/../whoami", False),
        (b"/static//whoami", False),
        (b"/static/%2e%2e/whoami", False),
        (b"/staticx", False),
    ],
)
def test_public_paths_match_exactly_and_fail_closed(
    iam: IAMScope, raw_path: bytes, public: bool
) -> None:
    response = get(make_app(iam), "", raw_path=raw_path)
    assert (response.status_code != 401) is public, response.status_code


def test_context_is_reset_after_requests_errors_and_streams(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    app = make_app(iam)
    token = local_issuer.mint(groups=["sales-east"])
    assert get(app, "/stream", token).text == "analyst\n" * 3
    assert get(app, "/boom", token).status_code == 500
    assert current() is None
    assert get(app, "/health").json() == {"ok": True, "access": False}


def test_rejections_are_cached_and_audited(
    iam: IAMScope, local_issuer: LocalIssuer, sink: ListSink
) -> None:
    app = make_app(iam)
    bad = local_issuer.mint(aud="api://other")
    calls = 0
    verify = iam.async_verifier.verify

    async def counting(token: str) -> Any:
        nonlocal calls
        calls += 1
        return await verify(token)

    iam.async_verifier.verify = counting  # type: ignore[method-assign]
    for _ in range(5):
        assert get(app, "/whoami", bad).status_code == 401
    assert calls == 1
    caches = [e["cache"] for e in sink.events]
    assert caches == ["miss", "hit", "hit", "hit", "hit"]
    event = sink.events[0]
    assert event["decision"] == "deny" and event["code"] == "audience_invalid"
    assert event["method"] == "GET" and event["path"] == "/whoami"
    assert bad not in json.dumps(sink.events)


def test_allow_events_carry_hash_roles_and_version(
    iam: IAMScope, local_issuer: LocalIssuer, sink: ListSink
) -> None:
    get(make_app(iam), "/whoami", local_issuer.mint(sub="alice", groups=["sales-east"]))
    (event,) = sink.events
    assert event["decision"] == "allow" and event["roles"] == ["analyst"]
    assert event["policy_version"] == "v1" and event["issuer"] == "corp"
    assert len(event["subject_hash"]) == 32 and "alice" not in json.dumps(event)


def test_policy_reload_and_revocation_invalidate_cached_entries(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    app = make_app(iam)
    token = local_issuer.mint(sub="bob", groups=["sales-east"], jti="t-1")
    assert get(app, "/whoami", token).json()["cache"] == "miss"
    assert get(app, "/whoami", token).json()["cache"] == "hit"
    iam.policy.reload({**POLICY, "version": "v2"})
    assert get(app, "/whoami", token).json()["cache"] == "miss"
    revocations = iam.cache.revocations
    assert isinstance(revocations, InMemoryRevocations)
    revocations.revoke_token("corp", "t-1")
    response = get(app, "/whoami", token)
    assert response.status_code == 401 and problem(response)["code"] == "token_revoked"
    other = local_issuer.mint(sub="bob", groups=["sales-east"], jti="t-2")
    assert get(app, "/whoami", other).status_code == 200
    revocations.revoke_subject("corp", "bob")
    assert get(app, "/whoami", other).status_code == 401


def test_a_thousand_concurrent_identities_each_see_their_own_access(
    local_issuer: LocalIssuer, sink: ListSink
) -> None:
    # The first request's key fetch is one loopback call, but a thousand requests share
    # the event loop with it, and on a loaded machine it has once taken longer than the
    # default request_wait (2 s; its 503 is tested in tests/tokens). What is tested here
    # is isolation and one fetch, so the wait is long enough never to be the question.
    config = local_issuer.issuer_config("corp", keys=KeyPolicy(request_wait=60.0))
    iam = engine(local_issuer, sink, issuer=config)
    app = make_app(iam)
    tokens = [local_issuer.mint(sub=f"user-{i}", groups=[f"team-{i % 10}"]) for i in range(1000)]

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(
                *(client.get("/whoami", headers={"authorization": f"Bearer {t}"}) for t in tokens)
            )

    try:
        responses = asyncio.run(main())
    finally:
        iam.close()
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["subject"] == f"user-{i}"
        assert body["regions"] == [f"r{i % 10}"]
    assert local_issuer.requests["/jwks.json"] == 1


def test_concurrent_misses_on_one_token_verify_once(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    app = make_app(iam)
    token = local_issuer.mint(groups=["sales-east"])
    calls = 0
    verify = iam.async_verifier.verify

    async def slow(t: str) -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return await verify(t)

    iam.async_verifier.verify = slow  # type: ignore[method-assign]

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = await asyncio.gather(
                *(
                    client.get("/whoami", headers={"authorization": f"Bearer {token}"})
                    for _ in range(50)
                )
            )
        return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200] * 50
    assert calls == 1


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_websockets(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    client = TestClient(make_app(iam))
    token = local_issuer.mint(groups=["sales-east"])
    with client.websocket_connect("/ws", headers={"authorization": f"Bearer {token}"}) as conn:
        assert conn.receive_json() == {"roles": ["analyst"]}
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws"):
        pass
    assert info.value.code == 1008
    with (
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect("/ws/admin", headers={"authorization": f"Bearer {token}"}) as conn,
    ):
        conn.receive_text()
    assert info.value.code == 1008


def test_lifespan_passes_through(iam: IAMScope) -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.startup.complete"})

    async def main() -> None:
        sent: list[Any] = []

        async def receive() -> dict[str, str]:
            return {"type": "lifespan.startup"}

        async def send(message: Any) -> None:
            sent.append(message)

        await IAMScopeMiddleware(app, iam)({"type": "lifespan"}, receive, send)
        assert sent == [{"type": "lifespan.startup.complete"}]

    asyncio.run(main())
    assert events == ["lifespan.startup"]


def test_optional_mode_lets_anonymous_through_and_decorators_decide(
    local_issuer: LocalIssuer, sink: ListSink
) -> None:
    iam = engine(
        local_issuer,
        sink,
        optional=True,
    )
    app = make_app(iam)
    assert get(app, "/health").json() == {"ok": True, "access": False}
    assert get(app, "/sales").status_code == 401  # the decorator asks for credentials
    assert get(app, "/whoami", "garbage.token.x").status_code == 401  # bad tokens still fail
    iam.close()


def test_answers_can_be_customised(local_issuer: LocalIssuer, sink: ListSink) -> None:
    def answer(error: Any, decision_id: str, scope: str | None = None) -> Any:
        body = json.dumps({"error": error.code, "id": decision_id}).encode()
        return error.status, [("content-type", "application/json"), ("x-denied", "1")], body

    iam = engine(
        local_issuer,
        sink,
        answer=answer,
    )
    app = make_app(iam)
    response = get(app, "/whoami")
    assert response.status_code == 401 and response.headers["x-denied"] == "1"
    assert response.json()["error"] == "token_missing"
    denied = get(app, "/admin", local_issuer.mint(groups=["sales-east"]))
    assert denied.status_code == 403 and denied.json()["error"] == "role_required"
    iam.close()


def test_cache_hits_are_answered_without_io(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    token = local_issuer.mint(groups=["sales-east"])
    headers = [(b"authorization", f"Bearer {token}".encode())]
    first = iam.decide_now(headers)
    assert isinstance(first, tuple) and not hasattr(first, "allowed")  # needs a verification
    assert asyncio.run(iam.decide_async(headers)).cache == "miss"
    hit = iam.decide_now(headers)
    assert getattr(hit, "allowed", False) and getattr(hit, "cache", None) == "hit"


def test_allowed_hits_can_be_summarised(local_issuer: LocalIssuer, sink: ListSink) -> None:
    iam = engine(
        local_issuer,
        sink,
        audit_hits="summary",
        summary_interval=3600,
    )
    app = make_app(iam)
    token = local_issuer.mint(sub="alice", groups=["sales-east"])
    for _ in range(5):
        assert get(app, "/whoami", token).status_code == 200
    assert get(app, "/whoami").status_code == 401
    # The miss and the denial are recorded at once; the four hits wait for the summary.
    assert [(e["cache"], e["decision"], e["count"]) for e in sink.events] == [
        ("miss", "allow", 1),
        ("none", "deny", 1),
    ]
    iam.close()
    summary = sink.events[-1]
    assert (summary["cache"], summary["decision"], summary["count"]) == ("hit", "allow", 4)
    assert summary["path"] == "/whoami" and summary["roles"] == ["analyst"]


def test_cached_token_sent_twice_is_still_a_bad_request(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.mint(groups=["sales-east"])
    app = make_app(iam)
    assert get(app, "/whoami", token).status_code == 200  # cached now
    headers = [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    response = asyncio.run(_request(app, "/whoami", headers))
    assert response.status_code == 400 and problem(response)["code"] == "request_invalid"


def test_decision_ids_are_unique_and_stable(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    headers = [(b"authorization", f"Bearer {local_issuer.mint()}".encode())]
    decisions = [iam.decide(headers) for _ in range(50)]
    ids = [d.decision_id for d in decisions]
    assert len(set(ids)) == 50 and all(len(i) == 22 for i in ids)
    assert decisions[0].decision_id == ids[0]  # formatted on read, the same every time


def test_a_revocation_during_resolution_is_not_missed(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    revocations = iam.cache.revocations
    assert isinstance(revocations, InMemoryRevocations)
    compiled = iam.policy.current
    resolve = compiled.resolve

    def revoking(principal: Any) -> Any:  # the revocation lands between check and store
        revocations.revoke_subject(principal.issuer, principal.subject)
        return resolve(principal)

    compiled.resolve = revoking  # type: ignore[method-assign]
    headers = [(b"authorization", f"Bearer {local_issuer.mint(sub='eve')}".encode())]
    assert iam.decide(headers).allowed  # decided before the revocation was seen
    compiled.resolve = resolve  # type: ignore[method-assign]
    again = iam.decide(headers)
    assert not again.allowed and again.error is not None and again.error.code == "token_revoked"
    assert iam.hit(headers) is None


def test_lifespan_starts_and_stops_the_key_refresher(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    app = make_app(iam)
    seen: list[bool] = []
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        seen.append(iam.verifier.refreshing)  # before startup, then while running
        if len(messages) == 1:  # started: the keys are prefetched, no request needed
            for _ in range(100):
                if local_issuer.requests["/jwks.json"]:
                    break
                await asyncio.sleep(0.05)
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert seen == [False, True]
    assert not iam.verifier.refreshing
    assert local_issuer.requests["/jwks.json"] == 1
