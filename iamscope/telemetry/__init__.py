"""Telemetry: identity on spans, metrics, OTLP export routed by owning team.

See :mod:`iamscope.telemetry.spans` (contract 5), :mod:`iamscope.telemetry.export`
(contract 6) and :mod:`iamscope.telemetry.metrics`.
"""

from iamscope.telemetry.export import RoutingSpanExporter, build_exporter, configure
from iamscope.telemetry.metrics import Metrics
from iamscope.telemetry.settings import Project, TelemetrySettings
from iamscope.telemetry.spans import (
    OwnershipSpanProcessor,
    TraceOwners,
    identity_attributes,
    trace_owners,
)

__all__ = [
    "Metrics",
    "OwnershipSpanProcessor",
    "Project",
    "RoutingSpanExporter",
    "TelemetrySettings",
    "TraceOwners",
    "build_exporter",
    "configure",
    "identity_attributes",
    "trace_owners",
]
