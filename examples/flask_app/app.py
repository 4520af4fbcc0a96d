"""iamscope in an existing Flask app: wrap the WSGI app once, decorate views.

IAMSCOPE_CONFIG=examples/policy/iamscope.yaml flask --app examples.flask_app.app run
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from opentelemetry import trace

from iamscope import IAMScope, IAMScopeWSGIMiddleware, current, require


def create_app(iam: IAMScope | None = None) -> Flask:
    app = Flask(__name__)

    @app.get("/whoami")
    def whoami() -> Any:
        access = current()
        assert access is not None  # the middleware refused the request otherwise
        # A span of the app's own: under OpenTelemetry it carries the caller's identity.
        with trace.get_tracer(__name__).start_as_current_span("whoami.lookup"):
            return {"roles": sorted(access.roles), "owner": access.owner}

    @app.get("/sales")
    @require(permission="sales:read")
    def sales() -> Any:
        return {"rows": ["east-1"]}

    # The two lines iamscope adds to an existing Flask app:
    iam = iam or IAMScope.from_config()  # IAMSCOPE_CONFIG names the config file
    app.wsgi_app = IAMScopeWSGIMiddleware(app.wsgi_app, iam)  # type: ignore[method-assign]
    return app
