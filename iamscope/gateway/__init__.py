"""The OTLP gateway (``iamscope gateway``): ``app`` (the ASGI app that checks who may
write which project's traces and forwards them), ``settings`` (the config file's
``gateway`` block). Re-exports nothing: :mod:`iamscope.config` reads
``gateway.settings`` without loading the app.
"""
