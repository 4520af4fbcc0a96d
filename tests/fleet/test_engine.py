"""The engine in a fleet: revocations and invalidations from Redis reach cached
decisions; an outage past ``stale_after`` fails closed with 503; the revocation race
of a slow store. Real redis-server, real local issuer, the real ASGI middleware."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import IAMScope, IAMScopeMiddleware
from iamscope.engine.cache import InMemoryRevocations, TokenCache
from iamscope.fleet import Fleet, SharedSettings
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer
from iamscope.tokens.keys import KeyPolicy
from iamscope.tokens.principal import Principal
from tests._http import get
from tests.fleet._redis import RedisServer
from tests.fleet._relay import Relay

POLICY: dict[str, Any] = {
    "version": "v1",
    "roles": {"reader": {"permissions": ["x:read"]}},
    "bindings": [{"groups": ["g"], "roles": ["reader"]}],
}


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"subject": request.state.access is not None})


def app_for(iam: IAMScope) -> Any:
    return IAMScopeMiddleware(Starlette(routes=[Route("/", whoami)]), iam)


def wait_for(check: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {limit} s")
        time.sleep(0.01)


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as started:
        yield started


@pytest.fixture
def engines(
    redis: RedisServer, namespace: str, issuer: LocalIssuer
) -> Iterator[Callable[..., IAMScope]]:
    made: list[IAMScope] = []

    def make(
        url: str | None = None, policy: Any = None, keys: KeyPolicy | None = None, **settings: Any
    ) -> IAMScope:
        fleet = Fleet(SharedSettings(namespace=namespace, **settings), url=url or redis.url)
        iam = IAMScope(
            [issuer.issuer_config("corp", keys=keys)],
            PolicyStore(policy if policy is not None else POLICY),
            hash_key=b"k" * 32,
            fleet=fleet,
        )
        made.append(iam)
        return iam

    yield make
    for iam in made:
        iam.close()


def test_a_revocation_anywhere_ends_cached_decisions_everywhere(
    engines: Callable[..., IAMScope], issuer: LocalIssuer
) -> None:
    one, two = engines(), engines()
    alice = issuer.mint({"sub": "alice", "groups": ["g"]})
    bob = issuer.mint({"sub": "bob", "groups": ["g"]})
    for iam in (one, two):
        assert get(app_for(iam), "/", alice).status_code == 200
        assert get(app_for(iam), "/", alice).json() and len(iam.cache) == 1
    assert one.fleet is not None
    one.fleet.revoke("sub", "corp", "alice")
    wait_for(lambda: get(app_for(two), "/", alice).status_code == 401, 1.0)
    answer = get(app_for(two), "/", alice)
    assert answer.json()["code"] == "token_revoked"
    assert get(app_for(two), "/", bob).status_code == 200


def test_outage_past_stale_after_answers_503_then_recovers(
    redis: RedisServer, engines: Callable[..., IAMScope], issuer: LocalIssuer
) -> None:
    relay = Relay(redis.port)
    try:
        iam = engines(url=relay.url, stale_after=1.0)
        cached = issuer.mint({"sub": "alice", "groups": ["g"]})
        assert get(app_for(iam), "/", cached).status_code == 200
        relay.cut()
        # Within stale_after: cached and new identities are served on the known list.
        assert get(app_for(iam), "/", cached).status_code == 200
        fresh = issuer.mint({"sub": "carol", "groups": ["g"]})
        assert get(app_for(iam), "/", fresh).status_code == 200
        # Past it: every identity, cached or new, gets 503 with Retry-After.
        wait_for(lambda: get(app_for(iam), "/", cached).status_code == 503, 2.5)
        refused = get(app_for(iam), "/", issuer.mint({"sub": "dave", "groups": ["g"]}))
        assert refused.status_code == 503
        assert refused.json()["code"] == "revocations_unavailable"
        assert refused.headers["retry-after"] == "1"
        relay.restore()
        wait_for(lambda: get(app_for(iam), "/", cached).status_code == 200, 4.0)
    finally:
        relay.close()


def test_drop_broadcast_forgets_cached_decisions(
    engines: Callable[..., IAMScope], issuer: LocalIssuer
) -> None:
    one, two = engines(), engines()
    token = issuer.mint({"sub": "alice", "groups": ["g"]})
    assert get(app_for(two), "/", token).status_code == 200
    assert len(two.cache) == 1
    assert one.fleet is not None
    one.fleet.broadcast("drop", issuer="corp", subject="alice")
    wait_for(lambda: len(two.cache) == 0, 1.0)


@pytest.mark.parametrize("how", ["an operator's broadcast", "one process noticed"])
def test_a_policy_change_reaches_every_process(
    tmp_path: Path, engines: Callable[..., IAMScope], how: str
) -> None:
    import yaml

    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    one, two = engines(policy=str(path), heartbeat=0.2), engines(policy=str(path), heartbeat=0.2)
    path.write_text(yaml.safe_dump({**POLICY, "version": "v2"}))
    assert one.fleet is not None
    if how == "one process noticed":
        assert one.policy.reload().changed  # as its file watcher would
    else:
        one.fleet.broadcast("policy")
    for iam in (one, two):
        wait_for(lambda iam=iam: iam.policy.current.version == "v2", 1.0)  # type: ignore[misc]
    fleet = one.fleet
    ours = {one.fleet.id, two.fleet.id if two.fleet is not None else ""}

    def reported() -> set[str]:
        return {p.policy_version for p in fleet.processes() if p.id in ours}

    wait_for(lambda: reported() == {"v2"}, 2.0)  # each process reports what it runs now


def test_processes_report_their_key_set_age(
    engines: Callable[..., IAMScope], issuer: LocalIssuer
) -> None:
    iam = engines(heartbeat=0.2)
    assert iam.fleet is not None
    assert get(app_for(iam), "/", issuer.mint({"sub": "a", "groups": ["g"]})).status_code == 200

    def aged() -> bool:
        return any(p.key_set_age is not None for p in iam.fleet.processes())  # type: ignore[union-attr]

    wait_for(aged, 2.0)
    (report,) = [p for p in iam.fleet.processes() if p.id == iam.fleet.id]
    assert report.key_set_age is not None and 0 <= report.key_set_age < 5
    assert report.policy_version == "v1"


class SlowStore(InMemoryRevocations):
    """A store whose check takes a while, with a revocation landing inside it: what a
    networked store does. Not a mock: the real in-memory store, slowed down."""

    def __init__(self) -> None:
        super().__init__()
        self.land: Callable[[], None] | None = None

    def is_revoked(self, principal: Principal) -> bool:
        answer = super().is_revoked(principal)
        if self.land is not None:
            land, self.land = self.land, None
            land()  # the revocation lands after the check read the sets
        return answer


def test_a_revocation_landing_during_a_check_is_not_missed() -> None:
    store = SlowStore()
    cache = TokenCache(revocations=store)
    alice = Principal(
        "corp", "https://idp", "alice", "user", time.time() + 600, groups=frozenset({"g"})
    )
    cache.put_allowed(b"k", alice, PolicyStore(POLICY).current.resolve(alice), 1)
    store.revoke_token("corp", "unrelated")  # moves the version: the next get re-checks
    store.land = lambda: store.revoke_subject("corp", "alice")
    assert cache.get(b"k", 1) is not None  # checked before alice's revocation landed
    assert cache.get(b"k", 1) is None  # so the next lookup checks again, and drops it


def test_a_key_retirement_one_process_sees_reaches_every_process(
    engines: Callable[..., IAMScope], issuer: LocalIssuer
) -> None:
    # Background refresh once an hour: only the fleet can make the others act sooner.
    slow = KeyPolicy(refresh=3600, min_refresh=3600)
    one, two = engines(keys=slow), engines(keys=slow)
    old = issuer.mint({"sub": "alice", "groups": ["g"]})
    for iam in (one, two):
        assert get(app_for(iam), "/", old).status_code == 200
    assert len(two.cache) == 1
    retired = issuer.key_for("RS256").kid
    issuer.rotate("RS256", retire_old=True)
    one.refresh_keys("corp")  # process one notices (here: told by an operator)
    wait_for(lambda: len(two.cache) == 0, 1.0)  # two refreshed and evicted what it verified
    # Refused from then on: 503 until a fetch made for this very kid confirms it is gone
    # (contract 9), then 401.
    assert get(app_for(two), "/", old).status_code in (401, 503)
    wait_for(lambda: get(app_for(two), "/", old).status_code == 401, 2.5)
    new = issuer.mint({"sub": "alice", "groups": ["g"]})
    assert issuer.key_for("RS256").kid != retired
    assert get(app_for(two), "/", new).status_code == 200
