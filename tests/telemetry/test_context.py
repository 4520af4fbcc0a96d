"""telemetry/context.py: the recording span read straight from the runtime context,
and the public path it falls back to, give the same answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from iamscope.telemetry import context


@pytest.fixture(params=[True, False], ids=["fast", "public"])
def path(request: pytest.FixtureRequest) -> Iterator[bool]:
    used = context.use_fast_path(request.param)
    assert used is request.param  # this API's internals are where the fast path looks
    yield used
    context.use_fast_path()


def test_the_recording_span_is_found_on_both_paths(path: bool) -> None:
    tracer = TracerProvider().get_tracer("test")
    assert context.recording_span() is None  # no span at all
    with tracer.start_as_current_span("server") as span:
        assert context.recording_span() is span
        with trace.use_span(trace.INVALID_SPAN):
            assert context.recording_span() is None
    assert context.recording_span() is None
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with unsampled.start_as_current_span("server"):
        assert context.recording_span() is None  # there, but not recording


def test_a_value_that_is_not_a_span_is_never_taken_for_one(path: bool) -> None:
    from opentelemetry.trace.propagation import _SPAN_KEY

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("server") as span:
        assert context.recording_span() is span  # its class is known from now on
        for _ in range(2):  # and knowing it lets nothing else through
            token = otel_context.attach(otel_context.set_value(_SPAN_KEY, "not a span"))
            try:
                assert context.recording_span() is None
            finally:
                otel_context.detach(token)
        assert context.recording_span() is span
