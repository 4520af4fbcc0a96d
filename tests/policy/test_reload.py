"""Hot reload: atomic swap, last good policy kept on error, version in every Access."""

from __future__ import annotations

import os
import time
from pathlib import Path

from iamscope.policy.reload import PolicyStore, ReloadResult
from iamscope.tokens import Principal

POLICY = """\
version: "{version}"
roles:
  viewer: {{permissions: [{permission}]}}
bindings:
  - {{groups: [g], roles: [viewer]}}
"""

WHO = Principal("corp", "https://corp.example", "s", "user", 1e12, groups=frozenset({"g"}))


def write(path: Path, version: str, permission: str = "x:read") -> None:
    path.write_text(POLICY.format(version=version, permission=permission))
    # Make the change visible to mtime polling even on coarse-grained filesystems.
    stamp = time.time() + int(version)
    os.utime(path, (stamp, stamp))


def test_reload_swaps_and_versions_show_in_access(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    seen: list[ReloadResult] = []
    store = PolicyStore(path, on_reload=seen.append)
    assert store.current.resolve(WHO).policy_version == "1"
    assert store.poll() is None  # unchanged file
    write(path, "2", "y:read")
    result = store.poll()
    assert result is not None and result.changed and result.version == "2"
    access = store.current.resolve(WHO)
    assert access.policy_version == "2" and access.can("y:read") and not access.can("x:read")
    assert store.generation == 2
    assert [r.version for r in seen] == ["2"]


def test_invalid_policy_is_refused_and_the_last_good_keeps_serving(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    store = PolicyStore(path)
    before = store.current
    path.write_text(POLICY.format(version="2", permission="x:read").replace("viewer]", "viewr]"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    result = store.poll()
    assert result is not None and not result.changed
    assert result.error is not None and "did you mean 'viewer'" in str(result.error)
    assert store.current is before
    assert store.generation == 1
    assert store.current.resolve(WHO).policy_version == "1"


def test_explicit_reload_from_a_mapping() -> None:
    store = PolicyStore(
        {"version": "a", "roles": {"r": {}}, "bindings": [{"groups": ["g"], "roles": ["r"]}]}
    )
    result = store.reload({"version": "b", "roles": {}, "bindings": []})
    assert result.changed and store.current.version == "b"
    assert store.current.resolve(WHO).roles == frozenset()


def test_watch_thread_picks_up_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    store = PolicyStore(path)
    store.watch(interval=0.02)
    try:
        write(path, "2")
        deadline = time.monotonic() + 5
        while store.current.version != "2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.current.version == "2"
    finally:
        store.close()
