"""Keys over time (contract 9), over real loopback HTTP: rotation, retirement, a lagging
JWKS, same-kid rotation, duplicate kids, large key sets, a hanging issuer, the
background refresher (schedule, ETag, Cache-Control, close, fork), in both shells.

Timing bounds are upper bounds with slack; exact schedules use an injected clock and
drive the refresher's pass (``run_due``) by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iamscope import IAMScope, errors
from iamscope.engine.answers import denial
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer
from iamscope.tokens import AsyncTokenVerifier, KeyPolicy, TokenVerifier
from iamscope.tokens.keys import MAX_CANDIDATES
from tests.conftest import FakeClock

JWKS = "/jwks.json"
POLICY: dict[str, Any] = {
    "version": "v",
    "roles": {"reader": {"permissions": ["read"]}},
    "bindings": [{"groups": ["g"], "roles": ["reader"]}],
}
SLACK = 1.0  # scheduling noise on a shared 2-core machine


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def engine(issuer: LocalIssuer, keys: KeyPolicy | None = None, **kw: Any) -> IAMScope:
    return IAMScope(
        [issuer.issuer_config("corp", keys=keys)], PolicyStore(POLICY), hash_key=b"k", **kw
    )


def until(check: Any, limit: float, step: float = 0.05) -> float:
    """Seconds until ``check()`` is true; fails past ``limit``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"not within {limit} s")
        time.sleep(step)
    return time.monotonic() - started


def verified(verifier: TokenVerifier, token: str) -> bool | Exception:
    try:
        verifier.verify(token)
    except (errors.TokenError, errors.KeysUnavailable) as exc:
        return exc
    return True


# --- rotation -------------------------------------------------------------------------


def test_rotation_with_defaults_is_honoured_within_2_s_and_never_401(
    local_issuer: LocalIssuer,
) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()])
    try:
        assert verifier.verify(local_issuer.mint())  # keys fetched just now
        new_key = local_issuer.rotate("RS256")  # the IdP publishes, then signs with it
        token = local_issuer.mint(key=new_key)
        answers: list[bool | Exception] = []

        def honoured() -> bool:
            answers.append(verified(verifier, token))
            return answers[-1] is True

        took = until(honoured, KeyPolicy().min_refetch + 1 + SLACK)
        assert took <= KeyPolicy().min_refetch + 1 + SLACK
        # In between: "could not look yet" (503 with a Retry-After), never "bad token".
        assert all(a is True or isinstance(a, errors.KeysUnavailable) for a in answers), answers
    finally:
        verifier.close()


def test_rotation_in_the_async_shell_is_never_401(local_issuer: LocalIssuer) -> None:
    async def main() -> float:
        verifier = AsyncTokenVerifier([local_issuer.issuer_config()])
        assert await verifier.verify(local_issuer.mint())
        token = local_issuer.mint(key=local_issuer.rotate("RS256"))
        started = time.monotonic()
        while True:
            try:
                await verifier.verify(token)
                break
            except errors.KeysUnavailable:
                await asyncio.sleep(0.05)
        await verifier.aclose()
        return time.monotonic() - started

    assert asyncio.run(main()) <= KeyPolicy().min_refetch + 1 + SLACK


def test_lagging_jwks_recovers_within_min_refetch(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()])
    try:
        assert verifier.verify(local_issuer.mint())
        time.sleep(KeyPolicy().min_refetch + 0.1)  # the next fetch a request causes is allowed
        early = local_issuer.add_key("RS256", publish=False)  # signs before it publishes
        token = local_issuer.mint(key=early)
        with pytest.raises(errors.KeyNotFound):
            verifier.verify(token)  # a JWKS fetched for it lacks it: 401 is the truth
        local_issuer.publish(early)  # the JWKS catches up a moment later
        took = until(lambda: verified(verifier, token) is True, KeyPolicy().min_refetch + SLACK)
        assert took <= KeyPolicy().min_refetch + SLACK  # remembered missing no longer
    finally:
        verifier.close()


# --- retirement -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["retired", "replaced under the same kid"])
def test_retirement_is_exact_with_an_injected_clock(
    local_issuer: LocalIssuer, clock: FakeClock, how: str
) -> None:
    keys = KeyPolicy(refresh=60, removed_key_grace=30)
    iam = engine(local_issuer, keys, clock=clock)
    iam.stop()  # the refresher's passes are driven by hand below
    old = local_issuer.key_for("RS256")
    cached = bearer(local_issuer.mint(key=old, groups=["g"], exp=clock.now + 3600))
    assert iam.decide(cached).allowed
    assert iam.hit(cached) is not None
    if how == "retired":
        local_issuer.rotate("RS256", retire_old=True)
    else:
        local_issuer.replace(old.kid)
    clock.advance(60)
    assert iam.verifier.run_due() >= 0  # the refresh sees the key gone: its grace starts
    never_seen = bearer(local_issuer.mint(key=old, groups=["g"], sub="u2", exp=clock.now + 600))
    assert iam.hit(cached) is not None  # inside removed_key_grace: still trusted
    assert iam.decide(never_seen).allowed
    clock.advance(30)
    iam.verifier.run_due()  # the grace is over: retired, and its decisions evicted
    assert iam.hit(cached) is None
    clock.advance(1)
    for headers in (cached, never_seen):
        refused = iam.decide(headers)
        assert not refused.allowed and refused.error is not None
        assert refused.error.code in ("key_not_found", "signature_invalid")
    iam.close()


def test_retired_key_refused_and_evicted_within_grace_plus_refresh(
    local_issuer: LocalIssuer,
) -> None:
    keys = KeyPolicy(refresh=0.5, min_refresh=0.5, removed_key_grace=0.5)
    iam = engine(local_issuer, keys)
    try:
        old = local_issuer.key_for("RS256")
        cached = bearer(local_issuer.mint(key=old, groups=["g"]))
        assert iam.decide(cached).allowed
        assert iam.hit(cached) is not None
        local_issuer.rotate("RS256", retire_old=True)
        bound = keys.removed_key_grace + keys.refresh + 1 + SLACK
        assert until(lambda: iam.hit(cached) is None, bound) <= bound
        fresh = bearer(local_issuer.mint(key=old, groups=["g"], sub="someone-else"))
        assert not iam.decide(fresh).allowed
    finally:
        iam.close()


def test_default_retirement_bound_is_70_s() -> None:
    # Stated by the contract, tested by mechanism above with short intervals.
    policy = KeyPolicy()
    assert policy.refresh + policy.removed_key_grace + 1 <= 70
    assert policy.min_refetch + 1 <= 2


# --- same-kid rotation, duplicates, no kid ---------------------------------------------


def test_same_kid_rotation_costs_one_refetch(local_issuer: LocalIssuer, clock: FakeClock) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock, background=False)
    old = local_issuer.key_for("RS256")
    assert verifier.verify(local_issuer.mint(key=old, exp=clock.now + 600))
    new = local_issuer.replace(old.kid)
    token = local_issuer.mint(key=new, exp=clock.now + 600)
    with pytest.raises(errors.SignatureInvalid):
        verifier.verify(token)  # keys fetched under min_refetch ago: no refetch
    assert local_issuer.requests[JWKS] == 1
    clock.advance(KeyPolicy().min_refetch)
    assert verifier.verify(token).subject == "user-1"  # one refetch, one retry
    assert local_issuer.requests[JWKS] == 2
    # Forged signatures under a known kid cost one fetch per interval, no more.
    forged = token[:-8] + ("AAAAAAAA" if not token.endswith("AAAAAAAA") else "BBBBBBBB")
    clock.advance(KeyPolicy().min_refetch)
    for _ in range(50):
        with pytest.raises(errors.SignatureInvalid):
            verifier.verify(forged)
    assert local_issuer.requests[JWKS] == 3


def test_duplicate_kids_try_each_candidate_and_log_once(
    local_issuer: LocalIssuer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    first = local_issuer.key_for("RS256")
    second = local_issuer.add_key("RS256", kid=first.kid)  # same kid, other material
    other_type = local_issuer.add_key("ES256", kid=first.kid)
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock, background=False)
    with caplog.at_level(logging.WARNING, logger="iamscope.keys"):
        for key in (first, second):
            assert verifier.verify(local_issuer.mint(key=key, exp=clock.now + 60))
        assert verifier.verify(local_issuer.mint(alg="ES256", key=other_type, exp=clock.now + 60))
        verifier.refresh_keys()  # the same JWKS again: not rebuilt, not logged again
        clock.advance(120)
        verifier.run_due()
    logged = [r for r in caplog.records if "several keys under one kid" in r.getMessage()]
    assert len(logged) == 1
    assert local_issuer.requests[JWKS] >= 3


def test_duplicates_beyond_the_bound_are_not_tried(local_issuer: LocalIssuer) -> None:
    base = local_issuer.key_for("RS256")
    extra = [local_issuer.add_key("RS256", kid=base.kid) for _ in range(MAX_CANDIDATES)]
    verifier = TokenVerifier([local_issuer.issuer_config()], background=False)
    assert verifier.verify(local_issuer.mint(key=extra[-2]))
    with pytest.raises(errors.SignatureInvalid):
        verifier.verify(local_issuer.mint(key=extra[-1]))  # the fifth under one kid


@pytest.mark.parametrize("header", [b'{"alg":"RS256"}', b'{"alg":"RS256","kid":null}'])
def test_a_token_without_kid_needs_exactly_one_key_for_its_alg(
    local_issuer: LocalIssuer, clock: FakeClock, header: bytes
) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock, background=False)
    claims = local_issuer.claims(exp=int(clock.now) + 600)
    token = local_issuer.sign_raw(header, json.dumps(claims).encode())
    assert verifier.verify(token).subject == "user-1"  # one RS256 key published
    local_issuer.rotate("RS256")  # now two
    clock.advance(61)
    verifier.refresh_keys()
    with pytest.raises(errors.HeaderInvalid):
        verifier.verify(token)


# --- large key sets -------------------------------------------------------------------


def test_a_jwks_over_max_keys_is_a_visible_fault_never_truncated(
    local_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [local_issuer.add_key("RS256") for _ in range(1000)]
    outcomes: list[str] = []
    verifier = TokenVerifier([local_issuer.issuer_config()], background=False)
    verifier.core.keys.on_refresh = lambda _name, outcome: outcomes.append(outcome)
    with (
        caplog.at_level(logging.WARNING, logger="iamscope.keys"),
        pytest.raises(errors.KeysUnavailable) as info,
    ):
        verifier.verify(local_issuer.mint(key=keys[0]))  # the first key: no truncation
    assert outcomes == ["over_limit"]  # the metric's outcome
    assert any("over keys.max_keys (100)" in r.getMessage() for r in caplog.records)
    status, headers, _ = denial(info.value, "id")
    assert status == 503 and dict(headers)["retry-after"] == "1"


def test_a_jwks_of_1000_keys_verifies_when_the_caps_allow(local_issuer: LocalIssuer) -> None:
    keys = [local_issuer.add_key("RS256") for _ in range(1000)]
    cfg = local_issuer.issuer_config(keys=KeyPolicy(max_keys=1100, max_bytes=2 * 1024 * 1024))
    verifier = TokenVerifier([cfg], background=False)
    assert verifier.verify(local_issuer.mint(key=keys[-1])).subject == "user-1"
    assert verifier.verify(local_issuer.mint(key=keys[0])).subject == "user-1"
    assert local_issuer.requests[JWKS] == 1


def test_a_jwks_over_max_bytes_is_over_limit(local_issuer: LocalIssuer) -> None:
    for _ in range(20):
        local_issuer.add_key("RS256")
    cfg = local_issuer.issuer_config(keys=KeyPolicy(max_bytes=4096))
    verifier = TokenVerifier([cfg], background=False)
    (result,) = verifier.refresh_keys().values()
    assert result.outcome == "over_limit" and "4096 bytes" in (result.reason or "")


# --- a hanging issuer -----------------------------------------------------------------


def test_a_hanging_issuer_is_answered_within_request_wait(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()])  # defaults: request_wait 2 s
    try:
        local_issuer.hang()
        started = time.monotonic()
        with pytest.raises(errors.KeysUnavailable) as info:
            verifier.verify(local_issuer.mint())
        assert time.monotonic() - started <= KeyPolicy().request_wait + 0.5
        assert info.value.retry_after is not None
        local_issuer.release()  # the fetch went on in the background: later requests use it
        assert until(lambda: verified(verifier, local_issuer.mint()) is True, 2 + SLACK)
        assert local_issuer.requests[JWKS] == 1
    finally:
        local_issuer.release()
        verifier.close()


def test_a_hanging_issuer_in_the_async_shell(local_issuer: LocalIssuer) -> None:
    cfg = local_issuer.issuer_config(keys=KeyPolicy(request_wait=0.5))

    async def main() -> None:
        verifier = AsyncTokenVerifier([cfg])
        local_issuer.hang()
        started = time.monotonic()
        results = await asyncio.gather(
            *(verifier.verify(local_issuer.mint(sub=f"u{i}")) for i in range(20)),
            return_exceptions=True,
        )
        assert time.monotonic() - started <= 0.5 + 0.5
        assert all(isinstance(r, errors.KeysUnavailable) for r in results), results
        local_issuer.release()
        for _ in range(100):
            try:
                await verifier.verify(local_issuer.mint())
                break
            except errors.KeysUnavailable:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the background fetch never landed")
        await verifier.aclose()

    try:
        asyncio.run(main())
    finally:
        local_issuer.release()
    assert local_issuer.requests["/.well-known/openid-configuration"] == 1


def test_waiters_share_the_leaders_answer_in_both_paths(local_issuer: LocalIssuer) -> None:
    # One waiter rule for decide() and decide_async(): the leader's 503 is everyone's.
    iam = engine(local_issuer, KeyPolicy(request_wait=0.3))
    token = bearer(local_issuer.mint(groups=["g"]))
    local_issuer.hang()
    try:
        codes: list[str | None] = []

        def one() -> None:
            decision = iam.decide(token)
            codes.append(decision.error.code if decision.error else None)

        threads = [threading.Thread(target=one) for _ in range(8)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - started <= 0.3 + 0.5 + SLACK  # request_wait + 0.5 s

        async def many() -> list[str | None]:
            decisions = await asyncio.gather(*(iam.decide_async(token) for _ in range(8)))
            return [d.error.code if d.error else None for d in decisions]

        started = time.monotonic()
        codes += asyncio.run(many())
        assert time.monotonic() - started <= 0.3 + 0.5 + SLACK
        assert codes == ["keys_unavailable"] * 16
    finally:
        local_issuer.release()
        iam.close()


# --- the background refresher ---------------------------------------------------------


def test_refresher_costs_one_conditional_request_per_interval(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    """Benchmarked (benchmarks/run): per issuer, per interval, per process, one request,
    and a conditional one (If-None-Match; an unchanged JWKS answers 304)."""
    other = LocalIssuer().start()
    try:
        issuers = [local_issuer.issuer_config("a"), other.issuer_config("b")]
        verifier = TokenVerifier(issuers, clock=clock, background=False)
        intervals = 10
        verifier.run_due()  # the first pass fetches both issuers
        for _ in range(intervals):
            clock.advance(KeyPolicy().refresh)
            verifier.run_due()
            verifier.run_due()  # a second pass in the same interval fetches nothing
        for issuer in (local_issuer, other):
            assert issuer.requests[JWKS] == 1 + intervals
            assert issuer.conditional[JWKS] == intervals
            assert issuer.not_modified[JWKS] == intervals
        print(
            f"refresher: {intervals} intervals x 2 issuers: "
            f"{local_issuer.requests[JWKS] - 1 + other.requests[JWKS] - 1} requests, "
            f"all conditional, all 304"
        )
    finally:
        other.stop()


HANGS = KeyPolicy(fetch_timeout=3.0)


@pytest.fixture
def stuck() -> Iterator[LocalIssuer]:
    """A second issuer whose every request hangs until released (or HANGS' timeout)."""
    issuer = LocalIssuer().start()
    issuer.hang()
    try:
        yield issuer
    finally:
        issuer.release()
        issuer.stop()


def test_a_hanging_issuer_never_holds_up_another_issuers_refresh(
    local_issuer: LocalIssuer, stuck: LocalIssuer, clock: FakeClock
) -> None:
    """The background pass refreshes the issuers due side by side (the sync shell gives
    each a thread): a rotation at one issuer is followed on schedule while another hangs
    until its fetch_timeout."""
    # The stuck issuer is listed first: a pass in sequence would wait for it before "a".
    issuers = [stuck.issuer_config("stuck", keys=HANGS), local_issuer.issuer_config("a")]
    verifier = TokenVerifier(issuers, clock=clock, background=False)
    try:
        worker = threading.Thread(target=verifier.run_due)
        worker.start()
        until(lambda: local_issuer.requests[JWKS] == 1, 0.5 + SLACK)
        assert worker.is_alive()  # the stuck issuer's fetch is still running
        stuck.release()
        worker.join(timeout=HANGS.fetch_timeout + SLACK)
        assert not worker.is_alive()
    finally:
        verifier.close()


def test_a_hanging_issuer_never_holds_up_another_in_the_async_shell(
    local_issuer: LocalIssuer, stuck: LocalIssuer, clock: FakeClock
) -> None:
    issuers = [stuck.issuer_config("stuck", keys=HANGS), local_issuer.issuer_config("a")]

    async def main() -> None:
        verifier = AsyncTokenVerifier(issuers, clock=clock, background=False)
        task = asyncio.ensure_future(verifier.run_due())
        for _ in range(int((0.5 + SLACK) / 0.05)):
            await asyncio.sleep(0.05)
            if local_issuer.requests[JWKS] == 1:
                break
        else:
            raise AssertionError("issuer 'a' was not refreshed while 'stuck' hung")
        assert not task.done()
        stuck.release()
        await asyncio.wait_for(task, HANGS.fetch_timeout + SLACK)
        await verifier.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("cache_control", "interval"),
    [
        (None, 60),
        ("max-age=20", 20),
        ("public, max-age=3", 10),
        ("max-age=86400", 60),
        ("no-cache", 10),
    ],
)
def test_refresher_honours_max_age_within_bounds(
    local_issuer: LocalIssuer, clock: FakeClock, cache_control: str | None, interval: float
) -> None:
    local_issuer.cache_control = cache_control
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock, background=False)
    verifier.run_due()
    assert local_issuer.requests[JWKS] == 1
    clock.advance(interval - 0.5)
    verifier.run_due()
    assert local_issuer.requests[JWKS] == 1
    clock.advance(0.5)
    verifier.run_due()
    assert local_issuer.requests[JWKS] == 2


def test_refresher_runs_in_the_background_and_stops_on_close(local_issuer: LocalIssuer) -> None:
    cfg = local_issuer.issuer_config(keys=KeyPolicy(refresh=0.2, min_refresh=0.2))
    verifier = TokenVerifier([cfg])
    assert verifier.verify(local_issuer.mint())  # the first fetch starts the refresher
    assert verifier.refreshing
    until(lambda: local_issuer.requests[JWKS] >= 4, 0.2 * 3 + 1 + SLACK)
    assert local_issuer.conditional[JWKS] >= 3
    verifier.close()
    assert not verifier.refreshing
    seen = local_issuer.requests[JWKS]
    time.sleep(0.6)
    assert local_issuer.requests[JWKS] <= seen + 1  # at most the one under way at close


def test_async_refresher_runs_on_the_loop_and_stops_on_aclose(local_issuer: LocalIssuer) -> None:
    cfg = local_issuer.issuer_config(keys=KeyPolicy(refresh=0.2, min_refresh=0.2))

    async def main() -> None:
        verifier = AsyncTokenVerifier([cfg])
        assert await verifier.verify(local_issuer.mint())
        assert verifier.refreshing
        for _ in range(60):
            if local_issuer.requests[JWKS] >= 4:
                break
            await asyncio.sleep(0.05)
        assert local_issuer.requests[JWKS] >= 4
        await verifier.aclose()
        assert not verifier.refreshing
        seen = local_issuer.requests[JWKS]
        await asyncio.sleep(0.5)
        assert local_issuer.requests[JWKS] == seen

    asyncio.run(main())


FORK = """
import os, sys, time
from iamscope import IAMScope, KeyPolicy
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer

policy = {"version": "v", "roles": {"r": {"permissions": ["x"]}},
          "bindings": [{"groups": ["g"], "roles": ["r"]}]}
with LocalIssuer() as issuer:
    keys = KeyPolicy(refresh=0.2, min_refresh=0.2)
    iam = IAMScope([issuer.issuer_config("corp", keys=keys)], PolicyStore(policy), hash_key=b"k")
    assert iam.decide([(b"authorization", b"Bearer " + issuer.mint(groups=["g"]).encode())]).allowed
    assert iam.verifier.refreshing
    later = issuer.add_key("RS256", publish=False)
    token = issuer.mint(key=later, groups=["g"])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own refresher picks up the key, no request needed
        ok = False
        for _ in range(100):
            try:
                iam.core.verify_offline(token)
                ok = True
                break
            except Exception:
                time.sleep(0.05)
        os.write(write, b"1" if ok and iam.verifier.refreshing else b"0")
        os._exit(0)
    issuer.publish(later)
    os.waitpid(pid, 0)
    child_ok = os.read(read, 1) == b"1"
    assert child_ok, "the child's refresher did not run"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            iam.core.verify_offline(token)
            break
        except Exception:
            time.sleep(0.05)
    else:
        raise AssertionError("the parent's refresher stopped")
    iam.close()
    print("ok")
"""


def test_the_refresher_survives_fork() -> None:
    out = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- the operator's hook --------------------------------------------------------------


def test_refresh_keys_says_why_it_failed(local_issuer: LocalIssuer) -> None:
    iam = engine(local_issuer)
    try:
        (ok,) = iam.refresh_keys().values()
        assert ok.ok and ok.outcome == "ok" and ok.keys == 3
        local_issuer.failure = 500
        result = iam.refresh_keys("corp")["corp"]
        assert not result.ok and result.reason == "HTTP 500"
        assert [r.purpose for r, _ in result.fetches] == ["jwks"]
        with pytest.raises(ValueError, match="no issuer is named"):
            iam.refresh_keys("nope")
    finally:
        iam.close()


def test_a_principal_names_the_key_that_verified_it(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], background=False)
    first = local_issuer.key_for("RS256")
    twin = local_issuer.add_key("RS256", kid=first.kid)  # same kid, other material
    one = verifier.verify(local_issuer.mint(key=first))
    other = verifier.verify(local_issuer.mint(key=twin))
    assert one.key_id == other.key_id == first.kid  # what a fleet revokes by
    assert one.key_thumbprint and other.key_thumbprint  # what retirement evicts by
    assert one.key_thumbprint != other.key_thumbprint
    assert first.kid not in repr(one)
