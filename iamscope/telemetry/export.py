"""Export presets over OTLP, routing by owning team, and a one-call set-up.

Every preset is OTLP plus headers (contract 6), so any OTLP backend works: ``lightstep``
is the ``lightstep-access-token`` header and, unless an endpoint is configured or set by
the standard ``OTEL_EXPORTER_OTLP_*`` variables, Lightstep's US ingest; ``otlp`` is
whatever the config and the standard variables say; ``console`` prints; ``none`` exports
nothing. The headers of ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`` go with every preset.
Project tokens come from environment variables named in the config, never from the file.

:class:`RoutingSpanExporter` splits each batch by ``iamscope.owner.team`` (falling back
to the trace's owner decided at the server span, then to the default project) and hands
each part to that team's exporter. A failing exporter is logged and counted; it never
raises into the application and never holds up the other teams' parts.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from iamscope.errors import ConfigError
from iamscope.telemetry.metrics import ERROR_TYPE, Metrics
from iamscope.telemetry.settings import (
    LIGHTSTEP_HEADER,
    Project,
    TelemetrySettings,
    project_token,
)
from iamscope.telemetry.spans import OWNER, OwnershipSpanProcessor, TraceOwners, trace_owners

__all__ = ["RoutingSpanExporter", "build_exporter", "configure"]

log = logging.getLogger("iamscope")

LIGHTSTEP_HTTP = "https://ingest.lightstep.com/traces/otlp/v0.9"
LIGHTSTEP_GRPC = "ingest.lightstep.com:443"
_HEADER_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")


class RoutingSpanExporter(SpanExporter):
    """Sends each span to its owner team's exporter; unknown owners to ``default``."""

    def __init__(
        self,
        routes: Mapping[str, SpanExporter],
        default: SpanExporter,
        *,
        owners: TraceOwners = trace_owners,
        metrics: Metrics | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.default = default
        self._owners = owners
        owners.active = True
        self._metrics = metrics
        self._lock = threading.Lock()
        #: Spans each route failed to deliver ("" is the default project).
        self.failed: dict[str, int] = {}

    def route(self, span: ReadableSpan) -> str:
        """The team whose project gets this span ("" for the default project): the owner
        iamscope recorded for the span, else its trace's — never the span's attributes,
        which other processors can write."""
        context = span.context
        if context is None:
            return ""
        owner = self._owners.take_span(context.span_id) or self._owners.get(context.trace_id)
        return owner if owner is not None and owner in self.routes else ""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        parts: dict[str, list[ReadableSpan]] = {}
        for span in spans:
            parts.setdefault(self.route(span), []).append(span)
        result = SpanExportResult.SUCCESS
        for team, part in parts.items():
            exporter = self.routes[team] if team else self.default
            error = "export_failed"  # the exporter said so (it logs why)
            try:
                outcome = exporter.export(part)
            except Exception as exc:  # an exporter bug must not reach the app or other teams
                log.exception("iamscope: exporting spans for %r raised", team or "default")
                outcome, error = SpanExportResult.FAILURE, _qualified_name(type(exc))
            if outcome is not SpanExportResult.SUCCESS:
                result = SpanExportResult.FAILURE
                self._failed(team, len(part), error)
        return result

    def _failed(self, team: str, count: int, error: str) -> None:
        with self._lock:
            self.failed[team] = self.failed.get(team, 0) + count
        log.warning(
            "iamscope: %d spans for %r were not delivered", count, team or "the default project"
        )
        if self._metrics is not None:
            self._metrics.export_failures.add(count, {OWNER: team or "default", ERROR_TYPE: error})

    def shutdown(self) -> None:
        for exporter in self._exporters():
            try:
                exporter.shutdown()
            except Exception:
                log.exception("iamscope: an exporter failed to shut down")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        flushed = True
        for exporter in self._exporters():  # every one, even after one fails
            try:
                flushed = exporter.force_flush(timeout_millis) and flushed
            except Exception:
                log.exception("iamscope: an exporter failed to flush")
                flushed = False
        return flushed

    def _exporters(self) -> list[SpanExporter]:
        return [*self.routes.values(), self.default]


def _qualified_name(kind: type) -> str:
    """An exception type as ``error.type`` wants it: fully qualified."""
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def build_exporter(
    settings: TelemetrySettings,
    *,
    environ: Mapping[str, str] | None = None,
    metrics: Metrics | None = None,
) -> SpanExporter | None:
    """The exporter the settings describe (None for ``none``). Reads tokens from the
    environment now: a missing one is a ConfigError, not spans sent unauthenticated;
    for settings read from a file, it names the file and the line."""
    env = os.environ if environ is None else environ
    try:
        return _build_exporter(settings, env, metrics)
    except ConfigError as exc:
        raise settings.locate(exc) from None


def _build_exporter(
    settings: TelemetrySettings, env: Mapping[str, str], metrics: Metrics | None
) -> SpanExporter | None:
    if settings.exporter == "none":
        return None
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    make = _otlp_factory(settings, env)
    default = make(settings.default_project, "default_project")
    if not settings.projects:
        return default
    header = settings.token_header or (LIGHTSTEP_HEADER if settings.exporter == "lightstep" else "")
    if header and header.lower() in {k.lower() for k in _env_headers(env)}:
        # The OpenTelemetry SDK adds OTEL_EXPORTER_OTLP_HEADERS to every exporter: a
        # project key there would reach every team's project.
        raise ConfigError(
            f"telemetry: {header} is set in OTEL_EXPORTER_OTLP_HEADERS, which goes to every "
            "project; give each project its token_env instead",
            key="token_header",
        )
    routes = {
        team: make(project, f"projects.{team}") for team, project in settings.projects.items()
    }
    return RoutingSpanExporter(routes, default, metrics=metrics)


def _otlp_factory(
    settings: TelemetrySettings, env: Mapping[str, str]
) -> Callable[[Project, str], SpanExporter]:
    lightstep = settings.exporter == "lightstep"
    header = settings.token_header or (LIGHTSTEP_HEADER if lightstep else None)
    grpc = settings.protocol == "grpc"

    def make(project: Project, name: str) -> SpanExporter:
        headers = _env_headers(env)
        try:
            token = project_token(
                "telemetry", name, project, lightstep=lightstep, header=header, env=env
            )
        except ConfigError as exc:  # the project's own line, not the block's
            raise settings.locate(exc, project.line) from None
        if token is not None:
            headers[token[0]] = token[1]
        # The config's endpoint, then the standard variables, then the preset's own: a
        # lightstep preset pointed elsewhere by OTEL_EXPORTER_OTLP_* goes there.
        endpoint = project.endpoint or settings.endpoint or standard_endpoint(env, grpc=grpc)
        if endpoint is None and lightstep:
            endpoint = LIGHTSTEP_GRPC if grpc else LIGHTSTEP_HTTP
        return _otlp(grpc, endpoint, headers or None)

    return make


def standard_endpoint(env: Mapping[str, str], *, grpc: bool) -> str | None:
    """Where the standard variables send traces, as the OTLP exporters read them:
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (plus ``/v1/traces`` over HTTP); None when neither is set."""
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base:
        return None
    return base if grpc else base.rstrip("/") + "/v1/traces"


def _env_headers(env: Mapping[str, str]) -> dict[str, str]:
    # Passing headers to an OTLP exporter replaces the ones from the standard variables;
    # merge them so OTEL_EXPORTER_OTLP_HEADERS keeps working beside a project token.
    from opentelemetry.util.re import parse_env_headers

    for name in _HEADER_ENVS:
        if env.get(name):
            try:
                return dict(parse_env_headers(env[name], liberal=True))
            except TypeError:  # an SDK without `liberal`: values must be URL-encoded there
                return dict(parse_env_headers(env[name]))
    return {}


def _otlp(grpc: bool, endpoint: str | None, headers: dict[str, str] | None) -> SpanExporter:
    if grpc:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GRPCExporter,
            )
        except ImportError:
            raise ConfigError(
                "telemetry protocol grpc needs the grpc extra: pip install 'iamscope[grpc]'",
                key="protocol",
            ) from None
        insecure = endpoint is not None and endpoint.startswith("http://")
        return GRPCExporter(endpoint=endpoint, headers=headers, insecure=insecure or None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, headers=headers)


def configure(
    settings: TelemetrySettings | Mapping[str, object] | None = None,
    *,
    resource: Resource | None = None,
    set_global: bool = True,
    metrics: Metrics | None = None,
    provider: TracerProvider | None = None,
) -> TracerProvider:
    """The ownership processor and the configured exporter (batched) on a TracerProvider.

    * ``provider=``: added to that provider.
    * Else, with ``set_global`` (the default) and an SDK TracerProvider already global
      (``opentelemetry-instrument``, or your own set-up): added to it. OpenTelemetry
      refuses to replace a global provider, and keeping it keeps its resource, sampler
      and instrumentations.
    * Else a new provider (resource from ``OTEL_SERVICE_NAME`` /
      ``OTEL_RESOURCE_ATTRIBUTES``), made global only with ``set_global``.

    A provider is configured once: a second call for it changes nothing and says so.
    """
    if settings is None:
        settings = TelemetrySettings()
    elif not isinstance(settings, TelemetrySettings):
        settings = TelemetrySettings.from_mapping(settings)
    if provider is None and set_global:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current
    if provider is not None:
        if resource is not None:
            log.warning("iamscope: the tracer provider exists, so resource= is not applied")
        _attach(provider, settings, metrics, existing=True)
        return provider
    provider = TracerProvider(resource=resource or Resource.create())
    _attach(provider, settings, metrics, existing=False)
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


# Providers iamscope has added its processors to: a second configure() must not stamp
# and export every span twice.
_configured: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
_configured_lock = threading.Lock()


def _attach(
    provider: TracerProvider,
    settings: TelemetrySettings,
    metrics: Metrics | None,
    *,
    existing: bool,
) -> None:
    exporter = build_exporter(settings, metrics=metrics)  # a ConfigError before any change
    with _configured_lock:
        if provider in _configured:
            log.warning("iamscope: telemetry is already configured on this tracer provider")
            if exporter is not None:
                exporter.shutdown()
            return
        _configured.add(provider)
    provider.add_span_processor(OwnershipSpanProcessor())
    if exporter is None:
        return
    provider.add_span_processor(BatchSpanProcessor(exporter))
    standard = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if existing and standard not in ("", "none"):
        # The provider's own exporter (opentelemetry-instrument's, from this variable)
        # still sends every span, unrouted: each span would leave twice.
        log.warning(
            "iamscope: OTEL_TRACES_EXPORTER=%s exports every span beside iamscope's %s "
            "exporter, so spans leave twice. Set OTEL_TRACES_EXPORTER=none to export "
            "only through iamscope (routed by owner), or telemetry.exporter: none to keep "
            "the standard exporter alone.",
            standard,
            settings.exporter,
        )
