"""The benchmark harnesses still run (tiny runs: this checks they work, never their times)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._postgres import apt_install

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_verify_benchmark_runs_and_checks_its_contenders() -> None:
    out = run("bench_verify.py", "--rounds", "3", "--repeat-ms", "2")
    for label in ("verify_offline", "TokenVerifier.verify", "jwt.decode", "signature only"):
        assert label in out


def test_resolve_benchmark_runs() -> None:
    out = run("bench_resolve.py", "--sizes", "100", "--rounds", "1")
    assert "pycasbin" in out and "| 100 |" in out
    assert "| 10,000 |" not in out  # only what was measured is reported


def test_middleware_benchmark_runs() -> None:
    out = run("bench_middleware.py", "--rounds", "2", "--requests", "40")
    assert "iamscope hit" in out and "starlette-auth" in out


def test_telemetry_benchmark_runs() -> None:
    out = run("bench_telemetry.py", "--rounds", "2", "--number", "20")
    assert "per request, server span" in out and "per child span" in out


def test_gateway_benchmark_runs() -> None:
    if shutil.which("wrk") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install("wrk")  # like PostgreSQL: the suite sets up what it needs
    if shutil.which("wrk") is None:
        pytest.skip("wrk (Debian package) is missing and cannot be installed here")
    out = run("bench_gateway.py", "--seconds", "1", "--rounds", "1")
    assert "iamscope gateway" in out and "pass-through proxy" in out


def test_resolve_benchmark_dumps_its_figures(tmp_path: Path) -> None:
    dump = tmp_path / "resolve.json"
    run("bench_resolve.py", "--sizes", "100", "--rounds", "2", "--json", str(dump))
    sizes = json.loads(dump.read_text())["sizes"]
    assert list(sizes) == ["100"]
    assert set(sizes["100"]) == {"cold", "first", "interned", "pycasbin"}
    assert len(sizes["100"]["cold"]["samples"]) == 2


def test_hit_ratio_benchmark_runs(tmp_path: Path) -> None:
    dump = tmp_path / "hit.json"
    flags = ["--rounds", "1", "--misses", "2", "--requests", "20", "--json", str(dump)]
    out = run("bench_hit_ratio.py", *flags)
    for ratio in ("0", "0.5", "0.9", "0.99", "1"):
        assert f"| hit ratio {ratio} |" in out
    assert "| bare |" in out
    assert list(json.loads(dump.read_text())["ratios"]) == ["0", "0.5", "0.9", "0.99", "1"]


def test_memory_benchmark_runs() -> None:
    out = run("bench_memory.py", "--tokens", "200")
    assert "Bytes per cached token at 200 tokens" in out and "iamscope/cache.py" in out


def test_run_lists_every_benchmark() -> None:
    out = run("run", "--list")
    for script in sorted(BENCHMARKS.glob("bench_*.py")):
        assert f"`{script.name} --write" in out
    assert "test_unknown_kid_flood" in out


def test_run_writes_a_summary_with_plots(tmp_path: Path) -> None:
    """The whole pipeline, tiny rounds, into a README of its own: every figure the
    summary needs is found in what the scripts print (a change there fails here)."""
    if shutil.which("wrk") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install("wrk")
    if shutil.which("wrk") is None:
        pytest.skip("wrk (Debian package) is missing and cannot be installed here")
    readme = tmp_path / "README.md"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run"), "--quick", "--readme", str(readme)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\n## Summary")
    assert "<!-- summary:start -->" in text and "| Budget (DESIGN.md) |" in text
    for section in ("verify", "resolve", "middleware", "hit_ratio", "memory", "gateway"):
        assert f"<!-- {section}:start -->" in text
    for png in ("policy_size.png", "hit_ratio.png"):
        assert (tmp_path / "plots" / png).read_bytes().startswith(b"\x89PNG")
        assert f"](plots/{png})" in text
