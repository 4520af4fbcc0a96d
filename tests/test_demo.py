"""The demo is a test: it exits 0 only when every outcome matched the rules."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from iamscope.demo import run


def test_demo_outcomes_match() -> None:
    out = io.StringIO()
    assert run(out) == 0
    text = out.getvalue()
    assert "all outcomes as expected" in text
    assert "MISMATCH" not in text
    for code in ("token_expired", "signature_invalid", "issuer_untrusted", "token_unsupported"):
        assert code in text


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
    assert "all outcomes as expected" in result.stdout
