"""``iamscope revoke``, ``revocations list`` and ``fleet ...`` against a real redis-server,
with a running fleet member that must see each change."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from iamscope.cli import main
from iamscope.fleet import Fleet, SharedSettings
from iamscope.tokens.principal import Principal
from tests.fleet._redis import RedisServer


@pytest.fixture
def config(
    tmp_path: Path, redis: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("TEST_CLI_REDIS", redis.url)
    path = tmp_path / "iamscope.yaml"
    issuer: dict[str, Any] = {"issuer": "https://idp.example", "audience": "api://x"}
    path.write_text(
        yaml.safe_dump(
            {
                "issuers": [
                    {"name": "corp", **issuer, "max_lifetime": 3600},
                    {"name": "ci", **issuer, "issuer": "https://ci.example"},
                ],
                "policy": {"version": "v1", "roles": {}, "bindings": []},
                "shared": {"redis_url_env": "TEST_CLI_REDIS", "namespace": namespace},
            }
        )
    )
    return path


@pytest.fixture
def member(redis: RedisServer, namespace: str) -> Iterator[Fleet]:
    fleet = Fleet(SharedSettings(namespace=namespace, heartbeat=0.2), url=redis.url)
    fleet.report = lambda: {"policy_version": "v1"}
    assert fleet.start()
    yield fleet
    fleet.close()


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(args), out), out.getvalue()


def alice(jti: str | None = None) -> Principal:
    return Principal("corp", "https://idp.example", "alice", "user", time.time() + 60, token_id=jti)


def test_revoke_reaches_a_running_process(config: Path, member: Fleet) -> None:
    version = member.revocations.version
    code, out = cli("revoke", "--config", str(config), "--from", "corp", "--sub", "alice")
    assert code == 0 and "revoked sub of issuer corp" in out
    deadline = time.monotonic() + 1
    while member.revocations.version == version and time.monotonic() < deadline:
        time.sleep(0.01)
    assert member.revocations.is_revoked(alice())
    # Without --until the revocation lapses with the issuer's max_lifetime.
    (revocation,) = member.revocations.revocations()
    assert 3590 < revocation.until - time.time() <= 3600


def test_revoke_needs_to_know_the_issuer(config: Path) -> None:
    code, out = cli("revoke", "--config", str(config), "--jti", "t-1")
    assert code == 2 and "--from" in out and "corp" in out and "ci" in out
    code, out = cli("revoke", "--config", str(config), "--from", "nope", "--jti", "t-1")
    assert code == 2 and "no issuer named 'nope'" in out


def test_revoke_until_and_list(config: Path) -> None:
    soon = time.time() + 120
    assert cli("revoke", "--config", str(config), "--issuer", "ci", "--until", str(soon))[0] == 0
    code, out = cli(
        "revoke",
        "--config",
        str(config),
        "--from",
        "corp",
        "--jti",
        "t-9",
        "--until",
        "2999-01-01T00:00:00",
    )
    assert code == 0 and "2999-01-01" in out
    code, out = cli("revocations", "list", "--config", str(config))
    assert code == 0
    assert "iss\tci\tci" in out and "jti\tcorp\tt-9\tuntil 2999-01-01" in out
    assert out.strip().endswith("2 revocations in force")
    code, out = cli("revoke", "--config", str(config), "--issuer", "ci", "--until", "yesterday")
    assert code == 2 and "ISO 8601" in out


def test_fleet_status_and_broadcasts(config: Path, member: Fleet) -> None:
    seen: list[str] = []
    for event in ("policy", "keys", "drop"):
        member.on(event, lambda fields: seen.append(fields["type"]))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        code, out = cli("fleet", "status", "--config", str(config))
        if "1 live process" in out:
            break
        time.sleep(0.05)
    assert code == 0 and "policy v1" in out and "1 live process" in out
    assert cli("fleet", "reload", "--config", str(config))[0] == 0
    assert cli("fleet", "refresh-keys", "--config", str(config), "--issuer", "corp")[0] == 0
    assert cli("fleet", "drop", "--config", str(config), "--from", "corp", "--sub", "a")[0] == 0
    deadline = time.monotonic() + 1
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["policy", "keys", "drop"]


def test_redis_down_exits_1_and_says_nothing_changed(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TEST_CLI_REDIS", f"redis://127.0.0.1:{port}/0")
    code, out = cli("revoke", "--config", str(config), "--from", "corp", "--sub", "alice")
    assert code == 1 and "nothing was changed" in out


def test_no_shared_block_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        yaml.safe_dump(
            {"issuers": [{"name": "corp", "issuer": "https://idp.example", "audience": "a"}]}
        )
    )
    code, out = cli("fleet", "status", "--config", str(path))
    assert code == 2 and "no 'shared' block" in out
