"""README code stays true: every ``python`` block runs, every ``yaml`` block loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from iamscope.config import load_config
from iamscope.telemetry import TelemetrySettings

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", blocks("python"))
def test_python_blocks_run(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(README.parent)  # snippets name files relative to the repository
    monkeypatch.setenv("IAMSCOPE_HASH_KEY", "readme-key")  # as the README says to
    for name in ("LS_TOKEN_SALES", "LS_TOKEN_PLATFORM", "LS_ACCESS_TOKEN"):
        monkeypatch.setenv(name, "readme-token")  # the project tokens the config names
    exec(compile(code, str(README), "exec"), {})  # noqa: S102 - our own README


@pytest.mark.parametrize("text", blocks("yaml"))
def test_yaml_blocks_load(text: str) -> None:
    data = yaml.safe_load(text)
    if "issuers" in data:
        assert load_config(data).issuers
    else:  # a block shown on its own
        (key,) = data
        assert key == "telemetry"
        assert TelemetrySettings.from_mapping(data["telemetry"]).projects


def test_readme_starts_with_the_two_commands() -> None:
    first = blocks("sh")[0]
    assert first.splitlines()[:2] == [
        "make demo   # creates .venv, installs, runs `iamscope demo`",
        "make test   # creates .venv, installs, runs ruff, mypy --strict and the whole test suite",
    ]
