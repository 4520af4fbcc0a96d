"""Shared revocations and invalidations over a real redis-server (tests/fleet/_redis.py).

Two ``Fleet`` objects in one test stand for two processes: each has its own
connections and listener thread, as each worker would. The multi-process case under
real workers is in test_workers.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from iamscope.errors import RevocationsUnavailable
from iamscope.fleet import Fleet, SharedSettings
from iamscope.tokens.principal import Principal
from tests.fleet._redis import RedisServer
from tests.fleet._relay import Relay


def principal(subject: str = "alice", jti: str | None = "t-1", kid: str = "k-1") -> Principal:
    return Principal(
        issuer="corp",
        issuer_url="https://idp.example",
        subject=subject,
        kind="user",
        expires_at=time.time() + 600,
        token_id=jti,
        key_id=kid,
    )


def wait_until(check: Callable[[], bool], limit: float) -> float:
    """Seconds until ``check()`` held; fails the test past ``limit``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            pytest.fail(f"not within {limit} s")
        time.sleep(0.005)
    return time.monotonic() - started


def test_revocation_reaches_another_process_within_a_second(fleets: Callable[..., Fleet]) -> None:
    writer, reader = fleets(), fleets()
    assert reader.start() and writer.start()
    assert reader.revocations.is_revoked(principal()) is False
    version = reader.revocations.version
    writer.revoke("sub", "corp", "alice")
    took = wait_until(lambda: reader.revocations.version != version, 1.0)
    assert reader.revocations.is_revoked(principal()) is True
    assert reader.revocations.is_revoked(principal("bob")) is False
    assert took < 1.0


@pytest.mark.parametrize(
    ("kind", "value", "revoked", "spared"),
    [
        ("jti", "t-1", principal("alice", "t-1"), principal("alice", "t-2")),
        ("sub", "alice", principal("alice"), principal("bob")),
        ("kid", "k-1", principal("alice", kid="k-1"), principal("alice", kid="k-2")),
        ("iss", "corp", principal("anyone"), None),
    ],
)
def test_each_kind_matches_what_it_names(
    fleets: Callable[..., Fleet],
    kind: Any,
    value: str,
    revoked: Principal,
    spared: Principal | None,
) -> None:
    writer, reader = fleets(), fleets()
    assert reader.start() and writer.start()
    version = reader.revocations.version
    writer.revoke(kind, "corp", value)
    wait_until(lambda: reader.revocations.version != version, 1.0)
    assert reader.revocations.is_revoked(revoked)
    if spared is not None:
        assert not reader.revocations.is_revoked(spared)


def test_a_process_started_later_loads_the_list(fleets: Callable[..., Fleet]) -> None:
    writer = fleets()
    writer.revoke("jti", "corp", "t-1")
    late = fleets()
    assert late.start()
    assert late.revocations.is_revoked(principal(jti="t-1"))
    assert [r.value for r in late.listed()] == ["t-1"]


def test_revocations_lapse_at_their_until(fleets: Callable[..., Fleet]) -> None:
    writer, reader = fleets(), fleets()
    assert reader.start()
    version = reader.revocations.version
    writer.revoke("sub", "corp", "alice", until=time.time() + 0.5)
    wait_until(lambda: reader.revocations.version != version, 1.0)
    assert reader.revocations.is_revoked(principal())
    wait_until(lambda: not reader.revocations.is_revoked(principal()), 2.0)
    assert writer.listed() == []
    with pytest.raises(ValueError):
        writer.revoke("sub", "corp", "alice", until=time.time() - 1)


def nowhere() -> str:
    """A loopback URL with nothing listening: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


def test_never_synced_fails_closed(fleets: Callable[..., Fleet]) -> None:
    lonely = fleets(url=nowhere())
    assert lonely.start(wait=0.3) is False
    with pytest.raises(RevocationsUnavailable) as raised:
        lonely.revocations.is_revoked(principal())
    assert raised.value.status == 503 and raised.value.retry_after >= 1


def test_outage_serves_known_list_until_stale_after_then_fails_closed_and_resyncs(
    redis: RedisServer, fleets: Callable[..., Fleet]
) -> None:
    relay = Relay(redis.port)
    try:
        writer, cut_off = fleets(), fleets(url=relay.url, stale_after=1.0)
        assert cut_off.start() and writer.start()
        writer.revoke("sub", "corp", "mallory")
        wait_until(lambda: cut_off.revocations.is_revoked(principal("mallory")), 1.0)
        relay.cut()
        cut_at = time.monotonic()
        # Within stale_after: the last known list still answers, from memory.
        assert cut_off.revocations.is_revoked(principal("mallory")) is True
        assert cut_off.revocations.is_revoked(principal("alice")) is False
        version = cut_off.revocations.version
        writer.revoke("sub", "corp", "alice")  # made while the process is away
        # Past stale_after: the version moves (cached decisions re-check) and every
        # check fails closed.
        wait_until(lambda: cut_off.revocations.version != version, 2.5)
        assert time.monotonic() - cut_at >= 0.9
        with pytest.raises(RevocationsUnavailable):
            cut_off.revocations.is_revoked(principal("bob"))
        relay.restore()
        # Reconnect (backoff ≤ 2 s) and resync: the revocation made while away holds.
        wait_until(lambda: not cut_off.revocations.stale, 4.0)
        assert cut_off.revocations.is_revoked(principal("alice")) is True
        assert cut_off.revocations.is_revoked(principal("bob")) is False
    finally:
        relay.close()


def test_revoking_while_redis_is_down_raises(fleets: Callable[..., Fleet]) -> None:
    fleet = fleets(url=nowhere())
    with pytest.raises(RevocationsUnavailable):
        fleet.revoke("sub", "corp", "alice")


def test_broadcasts_reach_every_process(fleets: Callable[..., Fleet]) -> None:
    sender, receiver = fleets(), fleets()
    seen: list[dict[str, str]] = []
    arrived = threading.Event()

    def record(fields: Any) -> None:
        seen.append(dict(fields))
        if len(seen) == 3:
            arrived.set()

    for event in ("policy", "keys", "drop"):
        receiver.on(event, record)
    assert receiver.start() and sender.start()
    sender.broadcast("policy")
    sender.broadcast("keys", issuer="corp")
    sender.broadcast("drop", issuer="corp", subject="alice")
    assert arrived.wait(2.0)
    assert [f["type"] for f in seen] == ["policy", "keys", "drop"]
    assert seen[1]["issuer"] == "corp" and seen[2]["subject"] == "alice"
    with pytest.raises(ValueError):
        sender.broadcast("revoke")
    with pytest.raises(ValueError):
        receiver.on("nonsense", record)


def test_a_failing_handler_never_stops_the_listener(fleets: Callable[..., Fleet]) -> None:
    sender, receiver = fleets(), fleets()
    receiver.on("policy", lambda fields: 1 / 0)
    assert receiver.start() and sender.start()
    sender.broadcast("policy")
    version = receiver.revocations.version
    sender.revoke("sub", "corp", "alice")
    wait_until(lambda: receiver.revocations.version != version, 1.0)


def test_fleet_status_lists_live_processes(fleets: Callable[..., Fleet]) -> None:
    one = fleets(heartbeat=0.2)
    two = fleets(heartbeat=0.2)
    one.report = lambda: {"policy_version": "v1", "key_set_age": 3.0}
    two.report = lambda: {"policy_version": "v2", "key_set_age": None}
    assert one.start() and two.start()
    wait_until(lambda: len(one.processes()) == 2, 2.0)
    versions = sorted(p.policy_version for p in one.processes())
    assert versions == ["v1", "v2"]
    assert all(p.last_sync is not None for p in one.processes())
    two.close()
    wait_until(lambda: len(one.processes()) == 1, 3.0)  # reports expire after 3 beats


def test_the_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from iamscope.errors import ConfigError

    settings = SharedSettings(redis_url_env="IAMSCOPE_TEST_REDIS")
    monkeypatch.delenv("IAMSCOPE_TEST_REDIS", raising=False)
    with pytest.raises(ConfigError, match="IAMSCOPE_TEST_REDIS"):
        Fleet(settings)
    monkeypatch.setenv("IAMSCOPE_TEST_REDIS", "http://user:secret@host")
    with pytest.raises(ConfigError) as raised:
        Fleet(settings)
    assert "secret" not in str(raised.value)
    monkeypatch.setenv("IAMSCOPE_TEST_REDIS", "rediss://user:secret@127.0.0.1:1/0")
    assert Fleet(settings).settings is settings  # TLS URLs are accepted
