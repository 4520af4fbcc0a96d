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
