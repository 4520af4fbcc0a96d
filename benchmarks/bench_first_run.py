"""First run: `make demo` and `make test` from a fresh clone with cold installer caches.

The repository's HEAD commit (a committed state, as CI's clean clone sees it; changes not
committed are not in it) is cloned into a temporary directory, and ``make demo`` runs
there, timed as a whole: Python's ``venv``, pip fetching ``uv`` from PyPI, ``uv``
installing the runtime dependencies from PyPI, then the demo itself, which must exit 0
and print that every persona saw what the policy says. The installers start cold: pip's
and uv's caches (``PIP_CACHE_DIR``, ``UV_CACHE_DIR``, ``XDG_CACHE_HOME``) point at an
empty temporary directory, pip reads no configuration file (``PIP_CONFIG_FILE`` is
``/dev/null``: this machine's configuration adds local indexes and wheel directories a
new machine lacks), uv none (``UV_NO_CONFIG``), and no ``PIP_*``/``UV_*`` variable of
this shell is passed on. ``make demo`` is then run once more in the same clone, where
nothing is left to install: the demo's own time.

With ``--test``, ``make test`` (ruff, mypy and the whole suite, ``CI=true``) runs in a
second fresh clone, cold in the same way, and its time is reported; without it that
half is reported as not measured in this run, never as met. The times are wall-clock, so
other work on the machine stretches them: the load average at the start is reported.
``--dry-run`` clones but runs no ``make``: a smoke run of the harness itself, which
``benchmarks/run --quick`` uses (nothing is measured, and both halves say so).

What this machine cannot emulate: the Debian packages the tests install on a new
machine (PostgreSQL, redis-server, wrk) are already installed, so ``make test`` here
does not include their ``apt-get`` time; Python itself is already installed; the
operating system's file cache is warm (the interpreter, git objects); the clone is
local, not over the network; DNS, TLS and any CDN cache between this machine and PyPI
may be warm from earlier runs.

DESIGN.md budget: ``make demo`` ≤ 60 s on a fresh machine, ``make test`` ≤ 5 min.

    .venv/bin/python benchmarks/bench_first_run.py [--write] [--test] [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _readme import intro_of, write_section

ROOT = Path(__file__).resolve().parent.parent
DEMO_BUDGET = 60.0  # seconds, DESIGN.md "Budgets"
TEST_BUDGET = 300.0
DEMO_OK = "all personas saw what the policy says"
# Variables that would let the clone reuse this shell's state: its imports, its make, its
# virtualenv. PIP_* and UV_* go too (see cold_env).
INHERITED = ("PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


@dataclass(frozen=True, slots=True)
class Run:
    command: str
    seconds: float
    returncode: int
    output: str


def cold_env(cache: Path) -> dict[str, str]:
    """This shell's environment without what would make the installers warm.

    Trust settings (``SSL_CERT_FILE`` and the like) stay: they say how this machine
    reaches PyPI, not what it already has."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in INHERITED and not k.startswith(("PIP_", "UV_"))
    }
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # pip reads no configuration file at all
        PIP_CACHE_DIR=str(cache / "pip"),
        UV_CACHE_DIR=str(cache / "uv"),
        UV_NO_CONFIG="1",
        XDG_CACHE_HOME=str(cache / "xdg"),
    )
    return env


def fresh_clone(dest: Path) -> str:
    """Clone this repository's HEAD commit into ``dest``; its commit id."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", commit], check=True)
    return commit


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> Run:
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    took = time.perf_counter() - started
    return Run(" ".join(command), took, done.returncode, done.stdout)


def failed(run: Run, expected: str | None = None) -> str | None:
    """Why ``run`` does not count as a success, or None."""
    if run.returncode != 0:
        return f"failed (exit {run.returncode})"
    if expected is not None and expected not in run.output:
        return f"exit 0 but no {expected!r} in its output"
    return None


def installer(clone: Path) -> str:
    """Which installer the Makefile ended up using in ``clone`` (uv, or pip without it)."""
    uv = clone / ".venv" / "bin" / "uv"
    if not uv.exists():
        return "pip (uv could not be had)"
    shown = subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout
    return shown.strip() or "uv"


@dataclass(frozen=True, slots=True)
class DemoResult:
    commit: str
    cold: Run | None  # None: not run (--dry-run)
    again: Run | None
    installer: str


def measure_demo(tmp: Path, dry_run: bool) -> DemoResult:
    clone = tmp / "demo"
    commit = fresh_clone(clone)
    if dry_run:
        return DemoResult(commit, None, None, "none (--dry-run)")
    env = cold_env(tmp / "demo-cache")
    cold = timed(["make", "demo"], clone, env)
    again = timed(["make", "demo"], clone, env) if failed(cold, DEMO_OK) is None else None
    return DemoResult(commit, cold, again, installer(clone))


def measure_test(tmp: Path) -> Run:
    clone = tmp / "test"
    fresh_clone(clone)
    env = cold_env(tmp / "test-cache") | {"CI": "true"}
    return timed(["make", "test"], clone, env)


def pytest_counts(output: str) -> str:
    """The last pytest summary's counts and time ("2,812 passed, 9 skipped in 250 s of
    pytest": the rest of `make test` is installing, ruff and mypy), or ""."""
    # "=== 2812 passed, 9 skipped in 250.12s (0:04:10) ===", or the same bare with -q
    found = re.findall(r"^=* ?(\d+ \w+(?:, \d+ \w+)*) in ([\d.]+)s", output, re.MULTILINE)
    if not found:
        return ""
    counts, seconds = found[-1]
    parts = re.findall(r"(\d+) (\w+)", counts)
    shown = ", ".join(f"{int(n):,} {what}" for n, what in parts)
    return f"{shown} in {float(seconds):.0f} s of pytest"


def verdict(seconds: float, budget: float) -> str:
    return "met" if seconds <= budget else "NOT met"


def demo_line(demo: DemoResult) -> str:
    if demo.cold is None:
        return (
            "First run, make demo: not measured in this run (--dry-run) "
            "(budget ≤ 60 s: not measured)"
        )
    why = failed(demo.cold, DEMO_OK)
    if why is not None:
        return (
            f"First run, make demo: {why} after {demo.cold.seconds:.1f} s (budget ≤ 60 s: NOT met)"
        )
    again = f"; the demo alone {demo.again.seconds:.1f} s" if demo.again is not None else ""
    return (
        f"First run, make demo: {demo.cold.seconds:.1f} s from a fresh clone, cold caches{again} "
        f"(budget ≤ 60 s: {verdict(demo.cold.seconds, DEMO_BUDGET)})"
    )


def suite_line(test: Run | None) -> str:
    if test is None:
        return (
            "First run, make test: not measured in this run (--test measures it) "
            "(budget ≤ 5 min: not measured)"
        )
    why = failed(test)
    if why is not None:
        return f"First run, make test: {why} after {test.seconds:.1f} s (budget ≤ 5 min: NOT met)"
    counts = pytest_counts(test.output) or "pytest's counts not found"
    return (
        f"First run, make test: {_minutes(test.seconds)} from a fresh clone, cold caches, "
        f"CI=true; {counts} (budget ≤ 5 min: {verdict(test.seconds, TEST_BUDGET)})"
    )


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s ({seconds:.0f} s)" if minutes else f"{seconds:.1f} s"


CANNOT = (
    "Not emulated: Debian packages the tests install on a new machine (PostgreSQL, "
    "redis-server, wrk) are already here, so `make test` excludes their apt-get time; "
    "Python is preinstalled; the OS file cache is warm; the clone is local; DNS, TLS "
    "and CDN caches on the way to PyPI may be warm."
)


def render(demo: DemoResult, test: Run | None, load: str = "") -> str:
    """``load``: the load averages at the start, which say whether other work shared the
    machine (these are wall-clock times: a busy machine stretches them)."""
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            demo_line(demo),
            "",
            suite_line(test),
            "",
            f"Commit {demo.commit[:12]}; installer {demo.installer}; {os.cpu_count()} cores; "
            f"Python {platform.python_version()} (`python3` on PATH builds the venv); "
            + (f"load average at the start (1/5/15 min) {load}; " if load else "")
            + f"{date}.",
            "",
            CANNOT,
        ]
    )


def show_failure(run: Run) -> None:
    """The end of a failed command's output, on stderr, so the cause is at hand."""
    if failed(run) is not None:
        sys.stderr.write(f"--- {run.command} (exit {run.returncode}), last lines:\n")
        sys.stderr.write(run.output[-4000:] + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make demo / make test from a fresh clone")
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    parser.add_argument("--test", action="store_true", help="also time make test (~5 min)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="clone, but run no make: a smoke run of the harness (nothing measured)",
    )
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="iamscope-first-run-") as name:
        tmp = Path(name)
        demo = measure_demo(tmp, args.dry_run)
        if demo.cold is not None:
            show_failure(demo.cold)
        test = measure_test(tmp) if args.test and not args.dry_run else None
        if test is not None:
            show_failure(test)
    block = render(demo, test, load)
    print(block)
    if args.write:
        write_section("first_run", "First run (`bench_first_run.py`)", intro_of(__doc__), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
