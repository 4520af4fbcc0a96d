"""The WSGI middleware on real Flask and Django apps (sync key shell, threads)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask
import httpx
import pytest

from iamscope import IAMScope, IAMScopeWSGIMiddleware, current, require
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from tests.web._engine import engine


@pytest.fixture
def iam(local_issuer: LocalIssuer) -> Iterator[IAMScope]:
    scope = engine(local_issuer, public_paths=("/health",))
    yield scope
    scope.close()


def make_flask(iam: IAMScope) -> flask.Flask:
    app = flask.Flask("iamscope-test")

    @app.get("/whoami")
    def whoami() -> Any:
        access = current()
        assert access is not None and flask.request.environ["iamscope.access"] is access
        decision = flask.request.environ["iamscope.decision"]
        return {
            "subject": decision.principal.subject,
            "roles": sorted(access.roles),
            "regions": list(access.attributes["region"].values),
        }

    @app.get("/sales")
    @require(permission="sales:read")
    def sales() -> Any:
        return {"ok": True}

    @app.get("/traces/<project>")
    @require(trace="read", project_param="project")
    def traces(project: str) -> Any:
        return {"project": project}

    @app.get("/stream")
    def stream() -> Any:
        def body() -> Iterator[str]:
            for _ in range(3):
                access = current()
                yield (sorted(access.roles)[0] if access else "none") + "\n"

        return app.response_class(body())

    @app.get("/health")
    def health() -> Any:
        return {"access": current() is not None}

    app.wsgi_app = IAMScopeWSGIMiddleware(app.wsgi_app, iam)  # type: ignore[method-assign]
    return app


def client(app: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_flask_views(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    with client(make_flask(iam)) as http:
        token = local_issuer.mint(sub="alice", groups=["sales-east"])
        assert http.get("/whoami", headers=bearer(token)).json() == {
            "subject": "alice",
            "roles": ["analyst"],
            "regions": ["east"],
        }
        assert http.get("/sales", headers=bearer(token)).json() == {"ok": True}
        assert http.get("/traces/checkout", headers=bearer(token)).status_code == 200
        denied = http.get("/traces/payments", headers=bearer(token))
        assert denied.status_code == 403
        assert denied.headers["content-type"] == "application/problem+json"
        assert denied.json()["code"] == "trace_scope_required"
        nobody = local_issuer.mint(groups=["marketing"])
        assert http.get("/sales", headers=bearer(nobody)).json()["code"] == "permission_required"
        missing = http.get("/whoami")
        assert missing.status_code == 401 and missing.json()["code"] == "token_missing"
        assert missing.headers["www-authenticate"] == 'Bearer realm="iamscope"'
        assert http.get("/health").json() == {"access": False}
    _assert_refusal_linked(iam, denied)


def _assert_refusal_linked(iam: IAMScope, denied: httpx.Response) -> None:
    """The view's 403 and its audit event carry the middleware's decision id."""
    assert isinstance(iam.audit, ListSink)
    refusals = [e for e in iam.audit.events if e["code"] == denied.json()["code"]]
    (refused,) = [e for e in refusals if e["decision_id"] == denied.json()["decision_id"]]
    linked = [e for e in iam.audit.events if e["decision_id"] == refused["decision_id"]]
    assert [e["decision"] for e in linked] == ["deny"]  # the request's one event


def test_cache_hits_take_the_fast_path_like_asgi(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    app = client(make_flask(iam))
    headers = bearer(local_issuer.mint(groups=["sales-east"]))
    assert app.get("/whoami", headers=headers).status_code == 200  # verified and cached

    def no_full_decision(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cache hit went down the full decision path")

    iam.decide = no_full_decision  # type: ignore[method-assign]
    assert app.get("/whoami", headers=headers).status_code == 200
    assert app.get("/sales", headers=headers).status_code == 200


def test_flask_streaming_body_keeps_the_access_current(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    with client(make_flask(iam)) as http:
        token = local_issuer.mint(groups=["sales-east"])
        assert http.get("/stream", headers=bearer(token)).text == "analyst\n" * 3
    assert current() is None


def test_an_unclosed_response_does_not_leak_into_the_next_request(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    app = make_flask(iam)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/stream",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "HTTP_AUTHORIZATION": f"Bearer {local_issuer.mint(groups=['sales-east'])}",
    }
    body = app.wsgi_app(environ, lambda status, headers: None)
    assert b"".join(body) == b"analyst\n" * 3  # read but never closed, as a sloppy server might
    with client(app) as http:
        assert http.get("/health").json() == {"access": False}
    assert current() is None


def test_joined_authorization_headers_are_a_bad_request(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.mint()
    app = make_flask(iam)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/whoami",
        "HTTP_AUTHORIZATION": f"Bearer {token}, Bearer {token}",
    }
    seen: list[str] = []
    body = b"".join(app.wsgi_app(environ, lambda status, headers: seen.append(status)))
    assert seen == ["400 Bad Request"] and b"request_invalid" in body


def test_threads_with_distinct_identities(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    app = make_flask(iam)
    tokens = [local_issuer.mint(sub=f"user-{i}", groups=[f"team-{i % 10}"]) for i in range(200)]

    def one(i: int) -> None:
        with client(app) as http:
            body = http.get("/whoami", headers=bearer(tokens[i])).json()
        assert body["subject"] == f"user-{i}" and body["regions"] == [f"r{i % 10}"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(200)))
    assert local_issuer.requests["/jwks.json"] == 1


def test_concurrent_sync_misses_on_one_token_verify_once(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    token = local_issuer.mint(groups=["sales-east"])
    calls = 0
    lock = threading.Lock()
    verify = iam.verifier.verify

    def counting(t: str) -> Any:
        nonlocal calls
        with lock:
            calls += 1
        threading.Event().wait(0.05)
        return verify(t)

    iam.verifier.verify = counting  # type: ignore[method-assign]
    headers = [(b"authorization", f"Bearer {token}".encode())]
    with ThreadPoolExecutor(max_workers=16) as pool:
        decisions = list(pool.map(lambda _: iam.decide(headers), range(32)))
    assert all(d.allowed for d in decisions)
    assert calls == 1


# --- Django ------------------------------------------------------------------------------


def _django_app(iam: IAMScope) -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tests-only",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["test"],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    return IAMScopeWSGIMiddleware(get_wsgi_application(), iam)


def _django_whoami(request: Any) -> Any:
    from django.http import JsonResponse

    access = current()
    assert access is not None and request.META["iamscope.access"] is access
    return JsonResponse({"roles": sorted(access.roles)})


@require(permission="sales:read")
def _django_sales(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"ok": True})


def _urls() -> list[Any]:
    from django.urls import path

    return [path("whoami", _django_whoami), path("sales", _django_sales)]


def __getattr__(name: str) -> Any:  # Django reads ROOT_URLCONF.urlpatterns lazily
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)


def test_django_views(iam: IAMScope, local_issuer: LocalIssuer) -> None:
    with client(_django_app(iam)) as http:
        analyst = local_issuer.mint(groups=["sales-east"])
        assert http.get("/whoami", headers=bearer(analyst)).json() == {"roles": ["analyst"]}
        assert http.get("/sales", headers=bearer(analyst)).json() == {"ok": True}
        nobody = local_issuer.mint(groups=["marketing"])
        denied = http.get("/sales", headers=bearer(nobody))
        assert denied.status_code == 403
        assert denied.headers["content-type"] == "application/problem+json"
        assert denied.json()["code"] == "permission_required"
        assert http.get("/whoami").status_code == 401
    _assert_refusal_linked(iam, denied)


def test_require_in_a_plain_wsgi_app_is_a_403_not_a_500(
    iam: IAMScope, local_issuer: LocalIssuer
) -> None:
    @require(roles=["admin"])
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"secret"]

    wrapped = IAMScopeWSGIMiddleware(app, iam)
    with client(wrapped) as http:
        denied = http.get("/", headers=bearer(local_issuer.mint(groups=["sales-east"])))
        assert denied.status_code == 403 and denied.json()["code"] == "role_required"
        assert "secret" not in denied.text
        allowed = http.get("/", headers=bearer(local_issuer.mint(groups=["admins"])))
        assert allowed.text == "secret"
