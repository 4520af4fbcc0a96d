"""The demo is a test: it exits 0 only when every outcome matched the rules."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iamscope.demo import run


def test_demo_outcomes_match() -> None:
    out = io.StringIO()
    assert run(out) == 0
    text = out.getvalue()
    assert "all personas saw what the policy says" in text
    assert "MISMATCH" not in text
    for code in ("token_expired", "signature_invalid", "issuer_untrusted", "token_unsupported"):
        assert code in text
    assert "east 100" in text and "checkout 10, payments 10, search 10" in text
    assert '"decision":"deny"' in text and "team=platform" in text  # audit lines and spans


def test_demo_datasette_shows_each_persona_its_rows_on_every_path() -> None:
    out = io.StringIO()
    assert run(out, datasette=True) == 0
    text = out.getvalue()
    assert "calling Datasette (examples/datasette)" in text
    assert "MISMATCH" not in text
    rows = [line for line in text.splitlines() if line.startswith(("east analyst", "admin"))]
    assert any("east 100" in r and " 403 " in r and r.endswith("ok") for r in rows[-2:])
    assert any(" 400 " in r and " 200 " in r and r.endswith("ok") for r in rows[-2:])


def test_demo_fails_when_the_policy_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import iamscope.demo as demo

    text = demo.REFERENCE.read_text().replace(
        "attributes: {region: [east]}", "attributes: {region: [west]}"
    )
    changed = tmp_path / "iamscope.yaml"
    changed.write_text(text)
    monkeypatch.setattr(demo, "REFERENCE", changed)
    out = io.StringIO()
    assert run(out) == 1
    assert "MISMATCH (policy says 200 {'east': 100})" in out.getvalue()


def test_cli_demo_runs_as_installed() -> None:
    exe = Path(sys.executable).with_name("iamscope")
    result = subprocess.run(
        [str(exe), "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "all personas saw what the policy says" in result.stdout


def test_lightstep_without_a_token_keeps_spans_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_ACCESS_TOKEN", raising=False)
    out = io.StringIO()
    assert run(out, lightstep=True) == 0
    assert "LS_ACCESS_TOKEN is not set; spans stay local" in out.getvalue()


def test_serve_keeps_the_app_running_with_ready_tokens() -> None:
    import re
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).with_name("iamscope")
    env = {**os.environ, "IAMSCOPE_DEMO_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [str(exe), "demo", "--serve"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("curl" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None
            lines.append(process.stdout.readline())
        token = re.search(r"Bearer ([\w.-]+)", next(x for x in lines if "curl" in x)).group(1)  # type: ignore[union-attr]
        while True:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/sales", headers={"authorization": f"Bearer {token}"}
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert answer.status_code == 200 and answer.json()["by_region"] == {"east": 100}
    finally:
        process.terminate()
        process.wait(timeout=10)
