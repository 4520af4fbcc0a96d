"""Settings for the example project: only what a stateless JSON API needs.

No database and no contrib apps: iamscope verifies a bearer token on every request, so
the example needs no sessions, auth models or admin.
"""

from __future__ import annotations

import os

# DEV DEFAULT ONLY: a deployment sets DJANGO_SECRET_KEY. The example signs nothing with
# it, but Django refuses to start without one.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-iamscope-example-dev-only")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

ROOT_URLCONF = "examples.django_app.urls"
WSGI_APPLICATION = "examples.django_app.wsgi.application"  # for `django-admin runserver`
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []  # iamscope wraps the WSGI app instead (see wsgi.py)
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
