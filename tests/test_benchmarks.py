"""The benchmark harnesses still run (tiny runs: this checks they work, never their times)."""

from __future__ import annotations

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
