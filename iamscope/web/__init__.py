"""The web shells over the engine: ``asgi`` and ``wsgi`` middlewares, ``decorators``
(``require(...)``), ``fastapi`` (dependencies). Public names are re-exported by
:mod:`iamscope`; ``iamscope.web.fastapi`` is imported on its own (it needs FastAPI).
"""
