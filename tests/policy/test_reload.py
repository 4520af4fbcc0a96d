"""Hot reload: atomic swap, last good policy kept on error, version in every Access, and
a file taken only once its content has settled (never a half-written prefix)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from iamscope.policy import to_predicate
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


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, version: str, permission: str = "x:read") -> None:
    path.write_text(POLICY.format(version=version, permission=permission))
    # Make the change visible to mtime polling even on coarse-grained filesystems.
    stamp = time.time() + int(version)
    os.utime(path, (stamp, stamp))


def test_reload_swaps_and_versions_show_in_access(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    seen: list[ReloadResult] = []
    clock = Clock()
    store = PolicyStore(path, on_reload=seen.append, settle=1.0, clock=clock)
    assert store.current.resolve(WHO).policy_version == "1"
    assert store.poll() is None  # unchanged file
    write(path, "2", "y:read")
    assert store.poll() is None  # changed: settling
    clock.now += 0.5
    assert store.poll() is None and store.current.version == "1"
    clock.now += 0.5
    result = store.poll()
    assert result is not None and result.changed and result.version == "2"
    access = store.current.resolve(WHO)
    assert access.policy_version == "2" and access.can("y:read") and not access.can("x:read")
    assert store.generation == 2
    assert [r.version for r in seen] == ["2"]


def test_invalid_policy_is_refused_and_the_last_good_keeps_serving(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    store = PolicyStore(path, settle=0)
    before = store.current
    path.write_text(POLICY.format(version="2", permission="x:read").replace("viewer]", "viewr]"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    result = store.poll()
    assert result is not None and not result.changed
    assert result.error is not None and "did you mean 'viewer'" in str(result.error)
    assert str(result.error).startswith(f"{path}:5:")
    assert store.current is before
    assert store.generation == 1
    assert store.current.resolve(WHO).policy_version == "1"
    assert store.poll() is None  # reported once, not at every poll


def test_a_change_that_keeps_changing_is_not_taken_until_it_settles(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    clock = Clock()
    store = PolicyStore(path, settle=1.0, clock=clock)
    for version in ("2", "3", "4"):  # each new content restarts the settle time
        write(path, version)
        assert store.poll() is None
        clock.now += 0.9
        assert store.poll() is None
    assert store.current.version == "1"
    clock.now += 0.1
    result = store.poll()
    assert result is not None and result.version == "4"


def test_a_touched_file_is_not_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    store = PolicyStore(path, settle=0)
    os.utime(path, (time.time() + 60, time.time() + 60))
    assert store.poll() is None and store.generation == 1


def test_a_change_undone_before_it_settles_is_never_taken(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "1")
    clock = Clock()
    store = PolicyStore(path, settle=1.0, clock=clock)
    original = path.read_bytes()
    write(path, "2")
    assert store.poll() is None
    path.write_bytes(original)
    clock.now += 5
    assert store.poll() is None and store.generation == 1


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
    store = PolicyStore(path, settle=0.05)
    store.watch(interval=0.02)
    try:
        write(path, "2")
        deadline = time.monotonic() + 5
        while store.current.version != "2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.current.version == "2"
    finally:
        store.close()


# --- a file rewritten in place, in parts, under load ---------------------------------------

# The second part completes the sales rule; the first alone is a valid policy whose rule
# lacks the amount condition, so it shows every east row: wider than either version.
HEAD = """\
version: "{version}"
attributes:
  region: {{multi: true}}
bindings:
  - {{groups: [g], roles: [analyst], attributes: {{region: [east]}}}}
roles:
  analyst:
    rows:
      sales:
        region: $region
"""
TAIL = "        amount: {{lt: {limit}}}\n"
BIG_EAST_SALE = {"region": "east", "amount": 500}  # no version shows it; the prefix does
MID_EAST_SALE = {"region": "east", "amount": 150}  # version 2 shows it, version 1 not


class Counter:
    """A count other threads can wait on, without timing anything."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = threading.Condition()

    def bump(self) -> None:
        with self._changed:
            self.value += 1
            self._changed.notify_all()

    def wait_for_more(self, more: int) -> None:
        with self._changed:
            target = self.value + more
            if not self._changed.wait_for(lambda: self.value >= target, timeout=30):
                raise AssertionError("the other thread stopped making progress")


def run_in_background(step: Callable[[], None], stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            step()
            time.sleep(0.0005)  # let the writer in

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def rewrite_in_parts_under_load(path: Path, settle: float) -> list[bool]:
    """Rewrite ``path`` in place, in two parts a (fake) 100 ms apart, while one thread
    polls and another resolves; for each answer, whether it showed the big east sale."""
    path.write_text((HEAD + TAIL).format(version="1", limit=100))
    clock = Clock()
    store = PolicyStore(path, settle=settle, clock=clock)
    polls, answers, shown = Counter(), Counter(), []

    def poll() -> None:
        store.poll()
        polls.bump()

    def resolve() -> None:
        plan = store.current.resolve(WHO).rows_for("sales")
        shown.append(to_predicate(plan)(BIG_EAST_SALE))
        answers.bump()

    stop = threading.Event()
    threads = [run_in_background(poll, stop), run_in_background(resolve, stop)]
    try:
        with path.open("w") as handle:  # truncates: rewritten in place
            handle.write(HEAD.format(version="2"))
            handle.flush()
            polls.wait_for_more(3)  # the prefix was seen...
            clock.now += 0.1  # ...and stays for the 100 ms between the parts
            polls.wait_for_more(3)
            answers.wait_for_more(3)
            handle.write(TAIL.format(limit=200))
        polls.wait_for_more(3)
        clock.now += settle + 0.5  # past the settle time, whatever the float rounding
        polls.wait_for_more(3)
        answers.wait_for_more(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    # The whole second version ends up in force either way.
    assert store.current.version == "2"
    assert to_predicate(store.current.resolve(WHO).rows_for("sales"))(MID_EAST_SALE)
    return shown


def test_no_answer_comes_from_a_half_written_file(tmp_path: Path) -> None:
    shown = rewrite_in_parts_under_load(tmp_path / "policy.yaml", settle=1.0)
    assert len(shown) >= 6 and not any(shown)


def test_without_a_settle_time_the_prefix_decides_answers(tmp_path: Path) -> None:
    """The control, so the test above can fail: with ``settle=0`` the same rewrite is
    taken half-written and answers show the sale neither version allows."""
    shown = rewrite_in_parts_under_load(tmp_path / "policy.yaml", settle=0)
    assert any(shown)
