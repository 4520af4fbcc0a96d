"""Keys over real loopback HTTP: discovery, rotation, outage, floods, both shells."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from iamscope import errors
from iamscope.testing import LocalIssuer, make_key
from iamscope.tokens import AsyncTokenVerifier, IssuerConfig, KeyPolicy, TokenVerifier
from iamscope.tokens.keys import KeyBuildError, build_jwk
from tests.conftest import FakeClock

JWKS = "/jwks.json"
DISCOVERY = "/.well-known/openid-configuration"


def test_discovery_then_jwks_once(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()])
    for alg in ("RS256", "ES256", "EdDSA"):
        assert verifier.verify(local_issuer.mint(alg=alg)).subject == "user-1"
    assert local_issuer.requests == {DISCOVERY: 1, JWKS: 1}


def test_configured_jwks_uri_skips_discovery(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config(jwks_uri=local_issuer.jwks_uri)])
    assert verifier.verify(local_issuer.mint())
    assert local_issuer.requests == {JWKS: 1}


def test_discovery_naming_another_issuer_is_refused(local_issuer: LocalIssuer) -> None:
    local_issuer.discovery_overrides = {"issuer": "https://evil.example"}
    verifier = TokenVerifier([local_issuer.issuer_config()])
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(local_issuer.mint())
    assert local_issuer.requests[JWKS] == 0


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "ftp://127.0.0.1/jwks", "gopher://x"])
def test_discovery_may_only_point_at_http(local_issuer: LocalIssuer, uri: str) -> None:
    local_issuer.discovery_overrides = {"jwks_uri": uri}
    verifier = TokenVerifier([local_issuer.issuer_config()])
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(local_issuer.mint())


def test_untrusted_issuer_causes_no_discovery(
    local_issuer_factory: Callable[..., LocalIssuer],
) -> None:
    trusted, other = local_issuer_factory(), local_issuer_factory()
    verifier = TokenVerifier([trusted.issuer_config()])
    with pytest.raises(errors.IssuerUntrusted):
        verifier.verify(other.mint())
    assert sum(other.requests.values()) == 0  # no SSRF through `iss`
    assert sum(trusted.requests.values()) == 0


def test_rotation_new_kid_fetched_old_keys_stay(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    old_token = local_issuer.mint(exp=clock.now + 3600)
    assert verifier.verify(old_token)
    clock.advance(31)  # past the refetch cooldown
    new_key = local_issuer.rotate("RS256")
    assert verifier.verify(local_issuer.mint(key=new_key, exp=clock.now + 60))
    assert local_issuer.requests[JWKS] == 2
    assert verifier.verify(old_token)  # both keys still published: merged, not replaced


def test_retired_key_verifies_during_grace_then_not(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    policy = KeyPolicy(removed_key_grace=100)
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock, key_policy=policy)
    old_token = local_issuer.mint(exp=clock.now + 3600)
    assert verifier.verify(old_token)
    new_key = local_issuer.rotate("RS256", retire_old=True)
    clock.advance(11)
    assert verifier.verify(local_issuer.mint(key=new_key, exp=clock.now + 60))  # refetch
    clock.advance(50)
    assert verifier.verify(old_token)  # gone from the JWKS, inside the grace period
    clock.advance(60)
    local_issuer.rotate("ES256")
    assert verifier.verify(local_issuer.mint(alg="ES256", exp=clock.now + 60))  # a merge
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(old_token)  # retired; its kid not looked for since: cannot say 401
    clock.advance(policy.min_refetch)
    with pytest.raises(errors.KeyNotFound):
        verifier.verify(old_token)  # looked for, not there


def test_unknown_kid_flood_costs_one_fetch_per_min_refetch(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock, background=False)
    interval = KeyPolicy().min_refetch
    assert interval <= 1  # contract 9: unknown kids are refetched promptly
    assert verifier.verify(local_issuer.mint(exp=clock.now + 600))
    assert local_issuer.requests[JWKS] == 1
    for round_ in range(3):
        answers = []
        for i in range(200):
            token = local_issuer.mint(headers={"kid": f"random-{round_}-{i}"}, exp=clock.now + 60)
            with pytest.raises((errors.KeyNotFound, errors.KeysUnavailable)) as info:
                verifier.verify(token)
            answers.append(info.value)
        # One fetch per interval, whatever the kids; 401 only for the kid that fetch was
        # made for, the others 503 (the library could not look) with a Retry-After.
        assert local_issuer.requests[JWKS] == 1 + round_
        assert sum(isinstance(a, errors.KeyNotFound) for a in answers) == (1 if round_ else 0)
        for answer in answers:
            if isinstance(answer, errors.KeysUnavailable):
                assert answer.retry_after is not None and 0 <= answer.retry_after <= interval
        clock.advance(interval)


def test_a_kid_found_missing_is_remembered(local_issuer: LocalIssuer, clock: FakeClock) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    assert verifier.verify(local_issuer.mint(exp=clock.now + 9000))
    clock.advance(31)
    token = local_issuer.mint(headers={"kid": "ghost"}, exp=clock.now + 9000)
    with pytest.raises(errors.KeyNotFound):
        verifier.verify(token)
    fetched = local_issuer.requests[JWKS]
    clock.advance(0.5)  # inside min_refetch: a fresh JWKS lacked it, still 401
    with pytest.raises(errors.KeyNotFound):
        verifier.verify(token)
    assert local_issuer.requests[JWKS] == fetched
    clock.advance(0.6)  # remembered no longer than min_refetch: looked for again
    with pytest.raises(errors.KeyNotFound):
        verifier.verify(token)
    assert local_issuer.requests[JWKS] == fetched + 1


def test_outage_at_start_is_keys_unavailable_not_bad_token(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    local_issuer.failure = 503
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    token = local_issuer.mint(exp=clock.now + 600)
    with pytest.raises(errors.KeysUnavailable) as info:
        verifier.verify(token)
    assert info.value.status == 503
    assert not isinstance(info.value, errors.TokenError)
    fetched = sum(local_issuer.requests.values())
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(token)  # inside retry interval: fails fast, no new fetch
    assert sum(local_issuer.requests.values()) == fetched
    local_issuer.failure = None
    clock.advance(6)
    assert verifier.verify(token).subject == "user-1"  # recovers on its own


def test_outage_later_keeps_the_last_good_keys(local_issuer: LocalIssuer, clock: FakeClock) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    assert verifier.verify(local_issuer.mint(exp=clock.now + 600))
    local_issuer.failure = 500
    clock.advance(31)
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(
            local_issuer.mint(headers={"kid": "new-after-rotation"}, exp=clock.now + 60)
        )
    # Known keys keep working through the outage.
    assert verifier.verify(local_issuer.mint(exp=clock.now + 60))


def test_unreachable_issuer_is_keys_unavailable() -> None:
    # A port nobody listens on: connection refused, translated at the boundary.
    cfg = IssuerConfig(name="down", issuer="http://127.0.0.1:9", audience=("a",))
    verifier = TokenVerifier([cfg])
    issuer = LocalIssuer()
    token = issuer.sign_raw(
        b'{"alg":"RS256","kid":"k"}',
        b'{"iss":"http://127.0.0.1:9","aud":"a","sub":"s","exp":9999999999}',
    )
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(token)


def test_slow_issuer_times_out_as_keys_unavailable(local_issuer: LocalIssuer) -> None:
    local_issuer.delay = 1.0
    verifier = TokenVerifier(
        [local_issuer.issuer_config()], key_policy=KeyPolicy(fetch_timeout=0.2)
    )
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(local_issuer.mint())


def test_oversized_key_document_is_refused(local_issuer: LocalIssuer) -> None:
    local_issuer.discovery_overrides = {"padding": "x" * 4096}
    verifier = TokenVerifier([local_issuer.issuer_config()], key_policy=KeyPolicy(max_bytes=1024))
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(local_issuer.mint())


def test_redirects_are_not_followed(local_issuer_factory: Callable[..., LocalIssuer]) -> None:
    issuer = local_issuer_factory()
    elsewhere = local_issuer_factory()
    issuer.redirects["/redirect"] = elsewhere.jwks_uri
    verifier = TokenVerifier([issuer.issuer_config(jwks_uri=issuer.base_url + "/redirect")])
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(issuer.mint())
    assert issuer.requests["/redirect"] == 1
    assert sum(elsewhere.requests.values()) == 0


def test_threads_share_one_refresh(local_issuer: LocalIssuer) -> None:
    local_issuer.delay = 0.2  # keep the first fetch in flight while the others arrive
    verifier = TokenVerifier([local_issuer.issuer_config()])
    tokens = [local_issuer.mint(sub=f"u{i}") for i in range(16)]
    results: list[Any] = [None] * len(tokens)

    def work(i: int) -> None:
        try:
            results[i] = verifier.verify(tokens[i]).subject
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [f"u{i}" for i in range(16)]
    assert local_issuer.requests == {DISCOVERY: 1, JWKS: 1}


def test_async_shell_shares_one_refresh(local_issuer: LocalIssuer) -> None:
    local_issuer.delay = 0.1

    async def main() -> list[str]:
        verifier = AsyncTokenVerifier([local_issuer.issuer_config()])
        try:
            principals = await asyncio.gather(
                *(verifier.verify(local_issuer.mint(sub=f"u{i}")) for i in range(100))
            )
        finally:
            await verifier.aclose()
        return [p.subject for p in principals]

    assert asyncio.run(main()) == [f"u{i}" for i in range(100)]
    assert local_issuer.requests == {DISCOVERY: 1, JWKS: 1}


def test_async_shell_outage_and_flood(local_issuer: LocalIssuer, clock: FakeClock) -> None:
    async def main() -> None:
        verifier = AsyncTokenVerifier([local_issuer.issuer_config()], clock=clock)
        assert await verifier.verify(local_issuer.mint(exp=clock.now + 600))
        clock.advance(KeyPolicy().min_refetch)  # the next fetch requests may cause
        results = await asyncio.gather(
            *(
                verifier.verify(local_issuer.mint(headers={"kid": f"k{i}"}, exp=clock.now + 60))
                for i in range(50)
            ),
            return_exceptions=True,
        )
        # All joined one fetch made after they asked: each kid was looked for, 401.
        assert all(isinstance(r, errors.KeyNotFound) for r in results), results
        local_issuer.failure = 503
        clock.advance(31)
        with pytest.raises(errors.KeysUnavailable):
            await verifier.verify(local_issuer.mint(headers={"kid": "x"}, exp=clock.now + 60))
        await verifier.aclose()

    asyncio.run(main())
    assert local_issuer.requests[JWKS] == 3


def test_shells_share_one_core(local_issuer: LocalIssuer) -> None:
    sync = TokenVerifier([local_issuer.issuer_config()])
    asynchronous = AsyncTokenVerifier(sync.core)
    assert sync.verify(local_issuer.mint())
    assert asyncio.run(asynchronous.verify(local_issuer.mint(sub="b"))).subject == "b"
    assert local_issuer.requests[JWKS] == 1


def test_injected_client_is_used(local_issuer: LocalIssuer) -> None:
    seen: list[str] = []

    def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    client = httpx.Client(event_hooks={"request": [hook]})
    verifier = TokenVerifier([local_issuer.issuer_config()], client=client)
    assert verifier.verify(local_issuer.mint())
    assert seen == [local_issuer.url + DISCOVERY, local_issuer.jwks_uri]


# --- building keys ------------------------------------------------------------------------


def test_small_rsa_keys_are_refused(local_issuer: LocalIssuer) -> None:
    weak = local_issuer.add_key("RS256", bits=1024)
    with pytest.raises(KeyBuildError, match="1024"):
        build_jwk(weak.public_jwk)
    for kid in list(local_issuer.keys):
        if kid != weak.kid:
            local_issuer.retire(kid)
    verifier = TokenVerifier([local_issuer.issuer_config()])
    with pytest.raises(errors.KeysUnavailable):  # a JWKS with no usable key is a failed fetch
        verifier.verify(local_issuer.mint(key=weak))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"use": "enc"}, "signatures"),
        ({"key_ops": ["encrypt"]}, "verify"),
        ({"alg": "ES256"}, "unusable|does not fit"),
        ({"alg": "HS256"}, "unusable"),
        ({"d": "AAAA"}, "private"),
        ({"kid": 5}, "kid"),
        ({"n": "AQAB"}, "unusable|bits"),
    ],
)
def test_unusable_jwks_entries_are_skipped(change: dict[str, Any], reason: str) -> None:
    jwk = {**make_key("RS256").public_jwk, **change}
    with pytest.raises(KeyBuildError, match=reason):
        build_jwk(jwk)


def test_symmetric_jwks_entries_are_refused() -> None:
    with pytest.raises(KeyBuildError):
        build_jwk({"kty": "oct", "k": "c2VjcmV0", "kid": "h"})


def test_ec_key_with_another_curves_alg_is_refused() -> None:
    with pytest.raises(KeyBuildError, match=r"unusable|does not fit"):
        build_jwk({**make_key("ES256").public_jwk, "alg": "ES384"})


def test_ec_key_declares_only_its_curve_algorithm() -> None:
    jwk = dict(make_key("ES384").public_jwk)
    jwk.pop("alg")
    assert build_jwk(jwk).algorithms == {"ES384"}


def test_bad_entries_do_not_spoil_the_set(local_issuer: LocalIssuer) -> None:
    good = local_issuer.key_for("RS256")
    original = local_issuer.jwks
    local_issuer.jwks = lambda: {"keys": [{"kty": "RSA", "n": "bad"}, 7, original()["keys"][0]]}  # type: ignore[method-assign]
    verifier = TokenVerifier([local_issuer.issuer_config()])
    assert verifier.verify(local_issuer.mint(key=good))


# --- per-kid PEM keys (AWS ALB layout) ----------------------------------------------------


def _alb_config(issuer: LocalIssuer, **kw: Any) -> IssuerConfig:
    from iamscope.tokens import PRESETS

    return IssuerConfig(
        name="alb",
        issuer=issuer.url,
        preset=PRESETS["aws-alb"],
        keys_url=issuer.pem_url,
        signers=("arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1",),
        **kw,
    )


def test_pem_keys_are_fetched_per_kid(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([_alb_config(local_issuer)])
    key = local_issuer.key_for("ES256")
    signer = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1"
    token = local_issuer.mint(alg="ES256", aud=None, headers={"signer": signer})
    assert verifier.verify(token).subject == "user-1"
    assert local_issuer.requests == {f"/pem/{key.kid}": 1}


@pytest.mark.parametrize("kid", ["../jwks.json", "a/b", "x?y=1", "..", "k%2f"])
def test_unsafe_kids_are_never_put_in_a_key_url(local_issuer: LocalIssuer, kid: str) -> None:
    verifier = TokenVerifier([_alb_config(local_issuer)])
    signer = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1"
    token = local_issuer.mint(alg="ES256", aud=None, headers={"signer": signer, "kid": kid})
    with pytest.raises(errors.KeyNotFound):  # names no key: 401, and no outage state
        verifier.verify(token)
    assert sum(local_issuer.requests.values()) == 0
    assert verifier.verify(local_issuer.mint(alg="ES256", aud=None, headers={"signer": signer}))


def test_a_new_kid_seen_inside_the_interval_is_503_not_401(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    assert verifier.verify(local_issuer.mint(exp=clock.now + 9000))
    new_key = local_issuer.rotate("RS256")  # published right after our fetch
    token = local_issuer.mint(key=new_key, exp=clock.now + 9000)
    with pytest.raises(errors.KeysUnavailable) as info:
        verifier.verify(token)  # inside min_refetch: the library could not look yet
    assert info.value.retry_after is not None and info.value.retry_after <= 1
    clock.advance(1)
    assert verifier.verify(token).subject == "user-1"  # fetched now, not remembered as missing


# --- found in review: outages, hangs and crashes that must stay typed -------------------


def test_a_cancelled_request_does_not_abandon_the_fetch(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    async def main() -> None:
        verifier = AsyncTokenVerifier([local_issuer.issuer_config()], clock=clock)
        assert await verifier.verify(local_issuer.mint(exp=clock.now + 9000))
        new_key = local_issuer.rotate("RS256")
        clock.advance(31)
        local_issuer.delay = 0.3
        token = local_issuer.mint(key=new_key, exp=clock.now + 9000)
        first = asyncio.create_task(verifier.verify(token))
        second = asyncio.create_task(verifier.verify(token))
        await asyncio.sleep(0.1)
        first.cancel()  # the client went away mid-fetch
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        # The fetch belongs to no request: it finishes, and the waiter gets its keys.
        assert results[1].subject == "user-1"  # type: ignore[union-attr]
        assert local_issuer.requests[JWKS] == 2
        await verifier.aclose()

    asyncio.run(main())


def _drip_server() -> tuple[str, threading.Event]:
    """An HTTP server that answers 200 and then sends one byte every 0.2 s."""
    import socket

    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()
        listener.close()

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{port}/jwks.json", stop


def test_a_dripping_key_server_cannot_hang_verification(local_issuer: LocalIssuer) -> None:
    import time

    url, stop = _drip_server()
    try:
        cfg = local_issuer.issuer_config(jwks_uri=url)
        verifier = TokenVerifier([cfg], key_policy=KeyPolicy(fetch_timeout=0.6))
        started = time.monotonic()
        with pytest.raises(errors.KeysUnavailable):
            verifier.verify(local_issuer.mint())
        assert time.monotonic() - started < 3

        async def main() -> None:
            averifier = AsyncTokenVerifier([cfg], key_policy=KeyPolicy(fetch_timeout=0.6))
            with pytest.raises(errors.KeysUnavailable):
                await averifier.verify(local_issuer.mint())
            await averifier.aclose()

        started = time.monotonic()
        asyncio.run(main())
        assert time.monotonic() - started < 3
    finally:
        stop.set()


@pytest.mark.parametrize(
    "entry",
    [{"key_ops": 1}, {"alg": []}, {"kid": 7}, {"use": ["sig"]}, {"kty": None}, {"crv": 5}],
)
def test_a_malformed_jwks_entry_is_skipped_not_fatal(
    local_issuer: LocalIssuer, entry: dict[str, Any]
) -> None:
    good = local_issuer.key_for("RS256")
    original = local_issuer.jwks
    bad = {**make_key("RS256").public_jwk, **entry}
    local_issuer.jwks = lambda: {"keys": [bad, *original()["keys"]]}  # type: ignore[method-assign]
    verifier = TokenVerifier([local_issuer.issuer_config()])
    assert verifier.verify(local_issuer.mint(key=good))


@pytest.mark.parametrize("uri", ["http://[::1/jwks", "http://a\x00b/jwks", "http://", 5])
def test_unusable_jwks_uri_in_discovery_is_keys_unavailable(
    local_issuer: LocalIssuer, uri: Any
) -> None:
    local_issuer.discovery_overrides = {"jwks_uri": uri}
    for verifier in (TokenVerifier([local_issuer.issuer_config()]),):
        with pytest.raises(errors.KeysUnavailable):
            verifier.verify(local_issuer.mint())

    async def main() -> None:
        averifier = AsyncTokenVerifier([local_issuer.issuer_config()])
        with pytest.raises(errors.KeysUnavailable):
            await averifier.verify(local_issuer.mint())
        await averifier.aclose()

    asyncio.run(main())


def test_discovery_runs_again_after_the_jwks_moved(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    local_issuer.discovery_overrides = {"jwks_uri": local_issuer.base_url + "/old-jwks.json"}
    verifier = TokenVerifier([local_issuer.issuer_config()], clock=clock)
    token = local_issuer.mint(exp=clock.now + 9000)
    with pytest.raises(errors.KeysUnavailable):
        verifier.verify(token)
    local_issuer.discovery_overrides = {}
    clock.advance(6)
    assert verifier.verify(token)
    assert local_issuer.requests[DISCOVERY] == 2


def test_compressed_key_responses_are_refused(local_issuer: LocalIssuer) -> None:
    import gzip
    import http.server
    import json as jsonlib

    body = gzip.compress(jsonlib.dumps(local_issuer.jwks()).encode())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        verifier = TokenVerifier([local_issuer.issuer_config(jwks_uri=url)])
        with pytest.raises(errors.KeysUnavailable):
            verifier.verify(local_issuer.mint())
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_pem_kid_is_key_not_found_not_an_outage(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    verifier = TokenVerifier([_alb_config(local_issuer)], clock=clock)
    signer = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1"
    ghost = local_issuer.mint(
        alg="ES256",
        aud=None,
        headers={"signer": signer, "kid": "0f0e-ghost"},
        exp=clock.now + 600,
    )
    with pytest.raises(errors.KeyNotFound):
        verifier.verify(ghost)
    clock.advance(0.5)
    with pytest.raises(errors.KeyNotFound):  # remembered for min_refetch: no second fetch
        verifier.verify(ghost)
    assert local_issuer.requests["/pem/0f0e-ghost"] == 1
    clock.advance(1)  # requests cause one fetch per min_refetch, whatever the kid
    good = local_issuer.mint(alg="ES256", aud=None, headers={"signer": signer}, exp=clock.now + 600)
    assert verifier.verify(good).subject == "user-1"


def test_verified_claims_cannot_be_changed_by_handlers(local_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier([local_issuer.issuer_config()])
    principal = verifier.verify(local_issuer.mint(realm_access={"roles": ["user"]}, groups=["a"]))
    with pytest.raises(AttributeError):  # a tuple now
        principal.claims["realm_access"]["roles"].append("admin")  # type: ignore[index]
    with pytest.raises(TypeError):
        principal.claims["realm_access"]["x"] = 1  # type: ignore[index]
    assert principal.claims["groups"] == ("a",)
