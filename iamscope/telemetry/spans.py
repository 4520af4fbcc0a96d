"""Identity on spans (contract 5): the server span, and every span started inside the
request.

The identity attributes of a principal (``user.hash``, ``user.roles``, issuer, kind,
owner team, policy version) are built once, when its token is first verified, and
cached with it (:func:`compact_attributes`: the part identities have in common is one
dict for all of them): a cache hit only adds the three per-request attributes
(decision, decision id, cache). Nothing here reads identity from inbound baggage or headers: it
comes only from the verified token (a refusal's own span takes just the caller's trace
context from the headers, as any server instrumentation does).

The server span is found wherever the framework's instrumentation starts it: recording
around the middleware (tagged there), started inside the request (tagged by the
ownership processor), or absent for a refusal (one of iamscope's own). Attributes are
written through a version-gated fast path (:func:`put`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from iamscope.engine.decision import request_decision

if TYPE_CHECKING:
    from iamscope.engine.decision import Decision
    from iamscope.policy.access import Access
    from iamscope.tokens.principal import Principal

__all__ = [
    "FAST_PATH_ENV",
    "FAST_PATH_SDK",
    "CachedAttributes",
    "OwnershipSpanProcessor",
    "TraceOwners",
    "compact_attributes",
    "identity_attributes",
    "refusal_span",
    "sdk_version_supported",
    "strip_inbound_baggage",
    "trace_owners",
    "use_fast_path",
]

log = logging.getLogger("iamscope")

USER_HASH = "user.hash"
ENDUSER_ID = "enduser.id"
USER_ROLES = "user.roles"
ISSUER = "iamscope.issuer"
KIND = "iamscope.principal.kind"
OWNER = "iamscope.owner.team"
POLICY_VERSION = "iamscope.policy.version"
DECISION = "iamscope.decision"
DECISION_ID = "iamscope.decision_id"
CACHE = "iamscope.cache"
CODE = "iamscope.code"

Attributes = Mapping[str, AttributeValue]


def identity_attributes(
    principal: Principal, access: Access, user_hash: str | None, *, enduser_id: bool = False
) -> dict[str, AttributeValue]:
    """What a span says about who caused it (built once per cached token)."""
    attributes: dict[str, AttributeValue] = {
        ISSUER: principal.issuer,
        KIND: principal.kind,
        USER_ROLES: tuple(sorted(access.roles)),
        POLICY_VERSION: access.policy_version,
    }
    if user_hash is not None:
        attributes[USER_HASH] = user_hash
    if enduser_id:
        attributes[ENDUSER_ID] = principal.subject
    if access.owner is not None:
        attributes[OWNER] = access.owner
    return attributes


#: The attributes that name one identity: whatever else :func:`identity_attributes`
#: writes, every identity with the same issuer, kind, roles, owner and policy has too.
_OWN = (USER_HASH, ENDUSER_ID)


class CachedAttributes(Mapping[str, AttributeValue]):
    """A cached identity's span attributes without a dict of their own: the part it
    shares with every identity alike (one dict for all of them) and its one attribute
    of its own (``user.hash``; ``enduser.id`` when that alone is on). At 100k cached
    tokens a dict each was the largest single item of an entry (~120 bytes); this is
    56. Read-only, as the dict it replaces was to everyone but the cache."""

    __slots__ = ("name", "shared", "value")

    def __init__(self, shared: Attributes, name: str, value: AttributeValue) -> None:
        self.shared = shared  # never holds ``name``: compact_attributes split it off
        self.name = name
        self.value = value

    def __getitem__(self, key: str) -> AttributeValue:
        if key == self.name:
            return self.value
        return self.shared[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.shared
        yield self.name

    def __len__(self) -> int:
        return len(self.shared) + 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_plain(self)!r})"


def compact_attributes(
    attributes: Attributes, share: Callable[[Attributes], Attributes]
) -> Attributes:
    """``attributes`` (:func:`identity_attributes`) as a cache entry keeps them: what
    identities have in common through ``share``, which hands back one equal mapping
    for all of them, and an identity's own value beside it. Equal to ``attributes``."""
    own = [(name, attributes[name]) for name in _OWN if name in attributes]
    if not own:
        return share(attributes)
    shared = share({name: v for name, v in attributes.items() if name not in _OWN})
    if len(own) == 1:
        return CachedAttributes(shared, *own[0])
    return _key_sharing_dict([*shared.items(), *own])  # both: enduser.id is opt-in (PII)


class _KeySharing:
    """Never used for itself: its instances' ``__dict__`` are what :func:`_key_sharing_dict`
    hands out."""


def _key_sharing_dict(items: list[tuple[str, AttributeValue]]) -> dict[str, AttributeValue]:
    """A plain dict that keeps only its values: CPython gives the instances of one class
    key-sharing dicts (one key table for all of them). For an identity's span
    attributes with two values of its own, about 120 bytes instead of 272 for a dict of
    its own; anywhere else (other keys, another order, another interpreter) it is simply
    a dict."""
    holder = _KeySharing()
    for name, value in items:
        setattr(holder, name, value)
    found: dict[str, AttributeValue] = holder.__dict__
    return found


def _plain(attributes: Attributes) -> dict[str, AttributeValue]:
    """A new dict equal to ``attributes`` (a :class:`CachedAttributes`' two parts copied
    in C, not read key by key through the Mapping methods)."""
    if type(attributes) is CachedAttributes:
        copied = {**attributes.shared}
        copied[attributes.name] = attributes.value
        return copied
    return {**attributes}


def _write_verdict(attributes: dict[str, AttributeValue], decision: Decision) -> None:
    # put()'s fast path writes the same, inlined; the tests run both paths and compare.
    attributes[DECISION] = "allow" if decision.allowed else "deny"
    attributes[DECISION_ID] = decision.decision_id
    attributes[CACHE] = decision.cache
    if decision.error is not None:
        attributes[CODE] = decision.error.code


_NO_ATTRIBUTES: Attributes = {}


class TraceOwners:
    """Who owns which spans, as iamscope decided it — what the routing exporter routes
    by, rather than a span attribute that any processor (a baggage copier, say) could
    have set.

    * span id → owner, recorded by :class:`OwnershipSpanProcessor` for every span
      started inside a request, and taken back when the span is exported;
    * trace id → owner, decided at the server span, for the trace's other spans
      (started before the middleware ran, or in a thread without the context), so a
      trace is not split across projects.

    Bounded; the oldest entries are forgotten first. Nothing is recorded until a routing
    exporter switches it on (``active``)."""

    def __init__(self, max_traces: int = 100_000) -> None:
        #: Claims are recorded only once a routing exporter reads them.
        self.active = False
        self._owners: dict[int, str] = {}
        self._spans: dict[int, str] = {}
        self._max = max_traces
        self._lock = threading.Lock()

    def claim_span(self, span_id: int, owner: str) -> None:
        spans = self._spans
        with self._lock:
            while len(spans) >= self._max:
                del spans[next(iter(spans))]
            spans[span_id] = owner

    def take_span(self, span_id: int) -> str | None:
        return self._spans.pop(span_id, None)

    def claim(self, trace_id: int, owner: str) -> None:
        owners = self._owners
        if owners.get(trace_id) is not None:
            return  # decided once: a later request reusing the trace id cannot move it
        with self._lock:
            while len(owners) >= self._max:
                del owners[next(iter(owners))]
            owners.setdefault(trace_id, owner)

    def get(self, trace_id: int) -> str | None:
        return self._owners.get(trace_id)


#: The process's trace owners, shared by the middlewares and the routing exporter.
trace_owners = TraceOwners()


#: The opentelemetry-sdk minor versions whose span internals :func:`put` was tested
#: against, [first, past the last): the fast path is never taken outside them, and
#: ``tests/telemetry/test_spans.py`` fails if a version inside them changes the fields.
FAST_PATH_SDK = ((1, 25), (1, 46))
#: ``0``/``off`` forces the public ``set_attributes`` path (what another SDK gets).
FAST_PATH_ENV = "IAMSCOPE_OTEL_FAST_PATH"

# The SDK span class put() may write directly, once probed (None: the public path).
_SDK_SPAN: type | None = None
_probed = False


def put(span: trace.Span | Span, attributes: Attributes, verdict: Decision | None = None) -> None:
    """``span.set_attributes`` for attributes iamscope built itself (strings and tuples
    of strings, checked when they were built), and, given a ``verdict``, that request's
    decision beside them (without merging them into a new dict first: the identity is
    a cached principal's, the verdict one request's).

    The SDK re-validates every value on every call, recursively: measured here at about
    2 µs per attribute, ten times the whole budget for tagging a request. For an SDK
    span of a tested version (:data:`FAST_PATH_SDK`) with no value-length limit and room
    for them, the values go straight into the span's attribute dict under the same two
    locks ``set_attributes`` takes; anything else (another SDK or version, limits set,
    internals that moved, :data:`FAST_PATH_ENV` off) takes the public path.
    """
    if type(span) is _SDK_SPAN:
        sdk: Any = span
        bounded = sdk._attributes
        # Not BoundedAttributes._immutable: the SDK's end() sets it with _end_time, under
        # the span lock, and _end_time is checked under that lock below.
        if type(bounded) is BoundedAttributes and bounded.max_value_len is None:
            # acquire/release rather than "with": the two locks cost 0.2 µs this way,
            # 0.35 µs with "with" (CPython 3.11), a sixth of the server span's budget.
            span_lock, dict_lock = sdk._lock, bounded._lock
            span_lock.acquire()
            try:
                if sdk._end_time is None:
                    dict_lock.acquire()
                    try:
                        values = bounded._dict
                        maxlen = bounded.maxlen
                        # A cached identity's two parts are read directly: through its
                        # Mapping methods, len() and update() run in Python.
                        own = attributes if type(attributes) is CachedAttributes else None
                        shared = attributes if own is None else own.shared
                        # Counted as all new, with an own value and 4 verdict attributes
                        # whether or not they come: the public path takes any write that
                        # might evict, and evicts as the SDK does.
                        if maxlen is None or len(values) + len(shared) + 5 <= maxlen:
                            values.update(shared)
                            if own is not None:
                                values[own.name] = own.value
                            if verdict is not None:  # _write_verdict, inlined: a call less
                                values[DECISION] = "allow" if verdict.allowed else "deny"
                                values[DECISION_ID] = verdict.decision_id
                                values[CACHE] = verdict.cache
                                if verdict.error is not None:
                                    values[CODE] = verdict.error.code
                            return
                    finally:
                        dict_lock.release()
            finally:
                span_lock.release()
    elif not _probed:  # the first call decides, not the import
        use_fast_path()
        if _SDK_SPAN is not None and type(span) is _SDK_SPAN:
            put(span, attributes, verdict)
            return
    if verdict is not None:  # one set_attributes call: each costs a lock and a check
        attributes = _plain(attributes)
        _write_verdict(attributes, verdict)
    span.set_attributes(attributes)


def use_fast_path(enabled: bool | None = None) -> bool:
    """Whether :func:`put` may write SDK spans' attributes directly; returns the answer.

    None decides from the installed SDK (its version inside :data:`FAST_PATH_SDK`, the
    fields where :func:`put` expects them) and :data:`FAST_PATH_ENV`; False forces the
    public path (the tests run both); True asks for the fast path, which is still
    refused outside the tested versions."""
    global _SDK_SPAN, _probed
    if enabled is None:
        enabled = os.environ.get(FAST_PATH_ENV, "").lower() not in {"0", "off", "false", "no"}
    _SDK_SPAN = _sdk_span_type() if enabled and sdk_version_supported() else None
    _probed = True
    return _SDK_SPAN is not None


def sdk_version_supported(version: str | None = None) -> bool:
    """Whether an opentelemetry-sdk version (the installed one by default) is one the
    fast path was tested with."""
    try:
        found = version or importlib.metadata.version("opentelemetry-sdk")
        major, minor = (int(part) for part in found.split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False  # an SDK we cannot identify gets the public path
    return FAST_PATH_SDK[0] <= (major, minor) < FAST_PATH_SDK[1]


def fast_path_problems(span: object) -> list[str]:
    """What is not where :func:`put` expects it on an SDK span (empty: all in place)."""
    problems = []
    if not isinstance(span, Span):
        return [f"{type(span).__name__} is not the SDK's Span"]
    bounded = getattr(span, "_attributes", None)
    if type(bounded) is not BoundedAttributes:
        problems.append(f"Span._attributes is {type(bounded).__name__}, not BoundedAttributes")
    else:
        if not isinstance(getattr(bounded, "_dict", None), dict):
            problems.append("BoundedAttributes._dict is not a dict")
        for name in ("maxlen", "max_value_len"):
            if not hasattr(bounded, name):
                problems.append(f"BoundedAttributes.{name} is gone")
        if not _is_lock(getattr(bounded, "_lock", None)):
            problems.append("BoundedAttributes._lock is not a lock")
    if not _is_lock(getattr(span, "_lock", None)):
        problems.append("Span._lock is not a lock")
    if getattr(span, "_end_time", 0) is not None:
        problems.append("Span._end_time is not None on a live span")
    return problems


def _is_lock(lock: object) -> bool:
    return callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None))


def _sdk_span_type() -> type | None:
    """The SDK's concrete span class, if the internals :func:`put` relies on are where
    it expects them (checked on a real span); else None."""
    try:
        probe = TracerProvider(shutdown_on_exit=False).get_tracer("iamscope").start_span("p")
        problems = fast_path_problems(probe)
        if not problems:
            return type(probe)
        log.debug("iamscope: span attributes take the SDK's public path: %s", problems)
    except Exception:  # an SDK whose internals moved: the public path is always right
        log.debug("iamscope: span attributes take the SDK's public path", exc_info=True)
    return None


def tag(span: trace.Span, decision: Decision, owners: TraceOwners = trace_owners) -> None:
    """Put the decision on a recording server span (contract 5)."""
    attributes = decision.attributes  # no truth test: a CachedAttributes' len() is Python
    put(span, _NO_ATTRIBUTES if attributes is None else attributes, decision)
    if owners.active:
        access = decision.access
        if access is not None and access.owner is not None:
            owners.claim(span.get_span_context().trace_id, access.owner)


# Set once the ownership processor has put a verdict on a server span started inside a
# request: then such spans exist in this process, and a request with no span recording
# when iamscope decided is not a reason to warn. (Not per request: a handler run in a
# thread pool gets a copied context, whose changes the middleware never sees.)
_inner_server_spans = threading.Event()


class OwnershipSpanProcessor(SpanProcessor):
    """Stamps the request's identity attributes on every span started inside it.

    Reads the ContextVar the middleware sets, so it follows the request into handlers,
    into threads started with a copied context (``asyncio.to_thread``,
    ``contextvars.copy_context().run``) and into tasks created during the request.
    Spans started outside any request are left alone.

    A SERVER span started inside the request gets the whole verdict, as the middleware
    tags one that was already recording: Flask's and Django's instrumentors start their
    server span inside the application, after iamscope decided.
    """

    def __init__(self, owners: TraceOwners = trace_owners) -> None:
        self._last: tuple[int, Attributes | None] = (0, None)
        self._owners = owners

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        decision = request_decision.get()
        if decision is None:
            return
        if span.kind is SpanKind.SERVER:
            tag(span, decision, self._owners)
            if not _inner_server_spans.is_set():
                _inner_server_spans.set()
            return
        last = self._last  # one request's spans in a row share one dict
        if last[0] != decision.seq:
            last = self._last = (decision.seq, _stamp(decision))
        stamp = last[1]
        if stamp is None:
            return
        put(span, stamp)
        access = decision.access
        if self._owners.active and access is not None and access.owner is not None:
            self._owners.claim_span(span.get_span_context().span_id, access.owner)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _stamp(decision: Decision) -> Attributes | None:
    """What the spans inside a request carry: its identity and decision id (None: no
    identity, nothing to stamp). Built once a request, so a span's only test is None."""
    attributes = decision.attributes
    if not attributes:
        return None
    stamp = _plain(attributes)
    stamp[DECISION_ID] = decision.decision_id
    return stamp


def strip_inbound_baggage() -> Token[Context] | None:
    """Drop ``iamscope.*`` baggage the caller sent, so nothing downstream can mistake
    it for ours. Returns a token for :func:`opentelemetry.context.detach`, or None when
    there was nothing to drop."""
    current = otel_context.get_current()
    names = [name for name in baggage.get_all(current) if name.startswith("iamscope.")]
    if not names:
        return None
    for name in names:
        current = baggage.remove_baggage(name, current)
    return otel_context.attach(current)


def refusal_span(
    decision: Decision, method: str, path: str, status: int, header: Callable[[str], str | None]
) -> None:
    """A SERVER span for a request refused while no span was recording: the framework
    instrumentation (Flask's, Django's) would have started it inside the application,
    which a refused request never reaches. Parented on the caller's trace context
    (``header`` reads a request header by lower-case name). Nothing when no SDK tracer
    provider is set; an error here is logged, never raised into the request."""
    if trace.get_current_span().get_span_context().is_valid:
        return  # an instrumentation outside has this request's span: it chose not to sample
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return
    try:
        carrier = {
            name: value
            for name in propagate.get_global_textmap().fields
            if (value := header(name.lower())) is not None
        }
        parent = propagate.extract(carrier)
        span = provider.get_tracer("iamscope").start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": path,
                "http.response.status_code": status,
            },
        )
        put(span, decision.attributes or _NO_ATTRIBUTES, decision)
        span.end()
    except Exception:
        log.warning("iamscope: the refusal's span could not be recorded", exc_info=True)


_warned = threading.Event()


def warn_if_untraced(span: trace.Span) -> None:
    """One warning when a tracer provider is configured yet a request ended with no
    server span carrying iamscope's verdict: none was recording when iamscope decided
    (``span``, the current one then), and the ownership processor has never seen one
    start inside a request."""
    if _warned.is_set() or _inner_server_spans.is_set():
        return
    if span.get_span_context().is_valid:
        return  # there is a server span outside; it was not sampled
    provider: Any = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return
    _warned.set()
    log.warning(
        "iamscope: a tracer provider is configured but no server span carried the "
        "request's identity and decision. Either nothing starts server spans (instrument "
        "the framework: run under opentelemetry-instrument, or FastAPIInstrumentor / "
        "FlaskInstrumentor / DjangoInstrumentor, in any order with iamscope), or the "
        "ownership processor is missing from the provider (iamscope.telemetry.configure() "
        "adds it to the provider you have; IAMSCOPE_CONFIG does it under "
        "opentelemetry-instrument). A request the sampler dropped looks the same. "
        "See docs/telemetry.md."
    )
