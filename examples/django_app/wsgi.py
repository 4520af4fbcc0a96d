"""WSGI entry point: Django's application, wrapped by iamscope.

    export IAMSCOPE_CONFIG=examples/policy/iamscope.yaml IAMSCOPE_HASH_KEY=...
    gunicorn examples.django_app.wsgi

or ``DJANGO_SETTINGS_MODULE=examples.django_app.settings django-admin runserver``.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from iamscope import IAMScope, IAMScopeWSGIMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")


def create_application(iam: IAMScope) -> IAMScopeWSGIMiddleware:
    """The project's WSGI app behind ``iam`` (tests pass one trusting a local issuer)."""
    return IAMScopeWSGIMiddleware(get_wsgi_application(), iam)


# The line iamscope adds to an existing wsgi.py (IAMSCOPE_CONFIG names the config file):
application = IAMScopeWSGIMiddleware(get_wsgi_application(), IAMScope.from_config())
