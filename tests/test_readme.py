"""README code stays true: every ``python`` block runs, every ``yaml`` block loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from iamscope.config import load_config
from iamscope.fleet import SharedSettings
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
        assert key in ("telemetry", "shared")
        if key == "telemetry":
            assert TelemetrySettings.from_mapping(data["telemetry"]).projects
        else:
            assert SharedSettings.from_mapping(data["shared"]).stale_after == 30


def test_readme_starts_with_the_two_commands() -> None:
    first = blocks("sh")[0]
    assert first.splitlines()[:2] == [
        "make demo   # creates .venv, installs, runs `iamscope demo`",
        "make test   # creates .venv, installs, runs ruff, mypy --strict and the whole test suite",
    ]


def test_configuration_reference_matches_the_loaders() -> None:
    from iamscope.config import TOP_LEVEL_KEYS
    from iamscope.engine.cache import CACHE_KEYS
    from iamscope.fleet.settings import SHARED_KEYS
    from iamscope.gateway.settings import _KEYS as GATEWAY_KEYS
    from iamscope.policy import loader
    from iamscope.telemetry.settings import _KEYS as TELEMETRY_KEYS
    from iamscope.telemetry.settings import _PROJECT_KEYS
    from iamscope.tokens.issuer import _CLAIM_KEYS
    from iamscope.tokens.issuer import _KEYS as ISSUER_KEYS
    from iamscope.tokens.key_policy import KEY_POLICY_KEYS

    text = README.read_text()
    table = text.split("<!-- config-reference:start -->")[1].split("<!-- config-reference:end -->")[
        0
    ]
    documented = {}
    for line in table.strip().splitlines()[2:]:  # after the header and its separator
        block, keys = (cell.strip() for cell in line.strip("|").split("|"))
        documented[block] = tuple(re.findall(r"`([^`]+)`", keys))
    expected = {
        "top level": TOP_LEVEL_KEYS,
        "`issuers[]`": ISSUER_KEYS,
        "`issuers[].claims`": _CLAIM_KEYS,
        "`issuers[].keys`": KEY_POLICY_KEYS,
        "`policy`": loader._POLICY_KEYS,
        "`policy.attributes.*`": loader._ATTRIBUTE_KEYS,
        "`policy.roles.*`": loader._ROLE_KEYS,
        "`policy.roles.*.traces[]`": loader._TRACE_KEYS,
        "`policy.bindings[]`": loader._BINDING_KEYS,
        "`telemetry`": TELEMETRY_KEYS,
        "`telemetry.projects.*`, `telemetry.default_project`": _PROJECT_KEYS,
        "`cache`": CACHE_KEYS,
        "`gateway`": GATEWAY_KEYS,
        "`shared`": SHARED_KEYS,
    }
    assert documented == {block: tuple(keys) for block, keys in expected.items()}
