"""The OTLP gateway (``iamscope gateway``): ``app`` (the ASGI app that checks who may
write which project's traces and forwards them), ``otlp`` (the OTLP/HTTP wire: bodies
in, answers out, resource attributes read and stamped), ``settings`` (the config file's
``gateway`` block). Re-exports nothing: :mod:`iamscope.config` reads
``gateway.settings`` without loading the app.
"""
