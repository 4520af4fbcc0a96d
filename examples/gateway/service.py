"""A service exporting its spans through the iamscope OTLP gateway with its own identity.

The service holds no project access key: each export carries the workload's own
short-lived token (here read from a file, as Kubernetes projects service-account tokens
and rotates them), and the gateway decides which project the spans may go to.

The lines a service adds (instead of a project token in OTEL_EXPORTER_OTLP_HEADERS):

    session = requests.Session()
    session.auth = WorkloadToken("/var/run/secrets/tokens/otlp")   # re-read per export
    exporter = OTLPSpanExporter(endpoint=GATEWAY + "/v1/traces", session=session)
"""

from __future__ import annotations

from pathlib import Path

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


class WorkloadToken(requests.auth.AuthBase):
    """Bearer auth from a token file, read on every request: rotated tokens just work."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = "Bearer " + self.path.read_text().strip()
        return request


def tracer_provider(gateway: str, token_file: str | Path, resource: Resource) -> TracerProvider:
    session = requests.Session()
    session.auth = WorkloadToken(token_file)
    exporter = OTLPSpanExporter(endpoint=gateway.rstrip("/") + "/v1/traces", session=session)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


if __name__ == "__main__":  # pragma: no cover - manual run against a running gateway
    import os
    import sys

    provider = tracer_provider(
        os.environ.get("GATEWAY", "http://127.0.0.1:4318"),
        os.environ.get("TOKEN_FILE", "/var/run/secrets/tokens/otlp"),
        Resource.create({"service.name": "checkout-api", "deployment.environment.name": "staging"}),
    )
    with provider.get_tracer("example").start_as_current_span("hello"):
        pass
    sys.exit(0 if provider.force_flush() else 1)
