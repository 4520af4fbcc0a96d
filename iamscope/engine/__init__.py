"""The engine: a request's headers in, a :class:`~iamscope.engine.decision.Decision` out.

``decision`` (the verdict, its id, the request ContextVar), ``cache`` (token digest →
Principal and Access), ``engine`` (:class:`~iamscope.engine.engine.IAMScope`: extract,
verify, resolve, cache, audit) and ``answers`` (refusals as RFC 6750 / RFC 9457 HTTP
answers). Import from the submodules or from :mod:`iamscope`: this module re-exports
nothing, so that telemetry can import ``engine.decision`` without loading the engine.
"""
