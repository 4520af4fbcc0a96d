"""docs/telemetry.md stays true: its config loads, its Collector config is consistent."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from iamscope.telemetry import TelemetrySettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"


def yaml_blocks() -> list[dict]:  # type: ignore[type-arg]
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]


def test_the_routing_example_is_a_valid_telemetry_block() -> None:
    (block,) = [b for b in yaml_blocks() if "telemetry" in b]
    settings = TelemetrySettings.from_mapping(block["telemetry"])
    assert set(settings.projects) == {"sales", "platform"}


def test_the_collector_config_routes_every_team_to_a_pipeline_that_exists() -> None:
    (collector,) = [b for b in yaml_blocks() if "connectors" in b]
    pipelines = collector["service"]["pipelines"]
    routing = collector["connectors"]["routing"]
    targets = [p for row in routing["table"] for p in row["pipelines"]]
    assert set(targets + routing["default_pipelines"]) <= set(pipelines)
    teams = {re.search(r'== "(\w+)"', row["statement"]).group(1) for row in routing["table"]}  # type: ignore[union-attr]
    assert teams == {"sales", "platform"}
    for name in targets + routing["default_pipelines"]:
        (exporter,) = pipelines[name]["exporters"]
        assert exporter in collector["exporters"]
    assert pipelines["traces/in"]["exporters"] == ["routing"]
