"""The benchmark harness still runs (a tiny run: this checks it works, never its times)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_verify.py"


def test_verify_benchmark_runs_and_checks_its_contenders() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--rounds", "3", "--repeat-ms", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for label in ("verify_offline", "TokenVerifier.verify", "jwt.decode", "signature only"):
        assert label in result.stdout


def test_resolve_benchmark_runs() -> None:
    bench = BENCH.with_name("bench_resolve.py")
    result = subprocess.run(
        [sys.executable, str(bench), "--sizes", "100", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pycasbin" in result.stdout and "| 100 |" in result.stdout


def test_middleware_benchmark_runs() -> None:
    bench = BENCH.with_name("bench_middleware.py")
    result = subprocess.run(
        [sys.executable, str(bench), "--rounds", "2", "--requests", "40"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "iamscope hit" in result.stdout and "starlette-auth" in result.stdout
