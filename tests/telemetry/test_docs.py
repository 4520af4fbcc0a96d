"""docs/telemetry.md stays true: its config loads, its Collector configs use only what
the routing connector documents, current component names, and receivers no stranger
can send to."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from iamscope.policy import PolicyStore
from iamscope.telemetry import TelemetrySettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"

# The routing connector's settings as its README documents them
# (opentelemetry-collector-contrib, connector/routingconnector/README.md): `match_once`
# was removed in v0.120.0; `request` context takes only `condition`.
ROUTING_KEYS = {"table", "default_pipelines", "error_mode"}
ROUTE_KEYS = {"context", "statement", "condition", "pipelines"}
CONTEXTS = {"resource", "span", "metric", "datapoint", "log", "request"}
ERROR_MODES = {"propagate", "ignore", "silent"}
# Renamed in collector v0.144.0; the old names are deprecated aliases.
DEPRECATED_TYPES = {"otlp": "otlp_grpc", "otlphttp": "otlp_http"}
OWNER_CONDITION = re.compile(r'^attributes\["iamscope\.owner\.team"\] == "(\w+)"$')


def yaml_blocks() -> list[dict[str, Any]]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]


def collectors() -> list[dict[str, Any]]:
    return [b for b in yaml_blocks() if "connectors" in b]


def kind(component: str) -> str:
    return component.split("/")[0]


def test_the_routing_example_is_a_valid_telemetry_block() -> None:
    (block,) = [b for b in yaml_blocks() if "telemetry" in b]
    settings = TelemetrySettings.from_mapping(block["telemetry"])
    assert set(settings.projects) == {"sales", "platform"}


def test_the_gateway_blocks_are_valid_gateway_configs() -> None:
    blocks = [b for b in yaml_blocks() if "gateway" in b]
    assert len(blocks) == 2  # the Collector recipe's, and the limits
    # The gateway's settings module is moving into a package; either home will do.
    for name in ("iamscope.gateway.settings", "iamscope.gateway_settings"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for block in blocks:
            settings = module.GatewaySettings.from_mapping(block["gateway"])
            assert settings.upstream == "otlp" and settings.token_header == "authorization"
        return
    pytest.fail("no gateway settings module")


def test_the_attest_example_is_a_valid_policy_granting_attest_by_name() -> None:
    (block,) = [b for b in yaml_blocks() if "policy" in b]
    policy = PolicyStore(block["policy"]).current.policy
    traces = policy.roles["checkout-service"].traces
    assert any("attest" in grant.actions for grant in traces)


def test_there_are_two_collector_recipes_behind_the_gateway_and_direct() -> None:
    contexts = [
        {row.get("context", "resource") for row in c["connectors"]["routing"]["table"]}
        for c in collectors()
    ]
    assert contexts == [{"resource"}, {"span"}]


@pytest.mark.parametrize("collector", collectors())
def test_the_routing_connector_uses_only_documented_settings(collector: dict[str, Any]) -> None:
    (name,) = collector["connectors"]
    assert kind(name) == "routing"
    routing = collector["connectors"][name]
    assert set(routing) <= ROUTING_KEYS
    assert routing.get("error_mode", "propagate") in ERROR_MODES
    teams = set()
    for row in routing["table"]:
        assert set(row) <= ROUTE_KEYS, row
        assert ("statement" in row) != ("condition" in row), "exactly one of the two"
        assert row.get("context", "resource") in CONTEXTS
        assert row["pipelines"]
        match = OWNER_CONDITION.match(row.get("condition", ""))
        assert match is not None, row
        teams.add(match.group(1))
    assert teams == {"sales", "platform"}


@pytest.mark.parametrize("collector", collectors())
def test_every_route_reaches_a_pipeline_with_a_current_exporter(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"]
    routing = collector["connectors"]["routing"]
    targets = [p for row in routing["table"] for p in row["pipelines"]]
    for name in targets + routing["default_pipelines"]:
        assert name in pipelines and pipelines[name]["receivers"] == ["routing"]
        (exporter,) = pipelines[name]["exporters"]
        assert exporter in collector["exporters"]
    assert pipelines["traces/in"]["exporters"] == ["routing"]
    for component in collector["exporters"]:
        assert kind(component) not in DEPRECATED_TYPES, (
            f"{component}: use {DEPRECATED_TYPES[kind(component)]}"
        )
    processors = {kind(p) for p in collector.get("processors", {})}
    assert "groupbyattrs" not in processors  # routing has a span context now


@pytest.mark.parametrize("collector", collectors())
def test_receivers_are_neither_open_to_all_nor_unauthenticated(collector: dict[str, Any]) -> None:
    extensions = set(collector.get("service", {}).get("extensions", []))
    for protocols in (r["protocols"] for r in collector["receivers"].values()):
        for name, protocol in protocols.items():
            assert not protocol["endpoint"].startswith(("0.0.0.0", ":")), name  # noqa: S104
            authenticator = protocol.get("auth", {}).get("authenticator")
            client_ca = protocol.get("tls", {}).get("client_ca_file")
            assert authenticator or client_ca, f"{name}: anyone may send"
            if authenticator:
                assert authenticator in collector["extensions"]
                assert authenticator in extensions  # declared *and* enabled
