"""Claims of every JSON type, for every preset, through the real middlewares.

Each case signs a token with the issuer's real key (a LocalIssuer on loopback), sets one
claim or header member the preset reads to a string, a number, a boolean, null, a list or
an object, and sends it through IAMScopeMiddleware (ASGI) and IAMScopeWSGIMiddleware. The
answer is 200, 401 or 403, never a 500; a value of a type the rule cannot read is a 401
with the code that names the fault. The cases are generated from each preset's own
declaration (its claim map and ``claim_types``), and a coverage test fails when a preset
reads a claim the scenarios below do not exercise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from iamscope import IAMScope, IAMScopeMiddleware, IAMScopeWSGIMiddleware, KeyPolicy, errors
from iamscope.policy import PolicyStore
from iamscope.telemetry.audit import ListSink
from iamscope.testing import LocalIssuer
from iamscope.tokens import PRESETS, IssuerConfig
from iamscope.tokens.claims import BOOLEAN, OBJECT, STRING, Kind

Path = tuple[str, ...]  # nested keys: ("kubernetes.io", "namespace")

NS = "https://acme.example"
ALB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/orders/1a2b"
ALB_CLIENT = "3n4b5urk1ft4fl3mg5e62d9ado"
PEM_URL = "<the issuer's per-kid PEM URL>"  # filled in per issuer

#: One value of each JSON type.
JSON_VALUES: dict[str, Any] = {
    "string": "x",
    "number": 7,
    "boolean": True,
    "null": None,
    "list": ["x"],
    "object": {"x": "y"},
}


@dataclass(frozen=True)
class Scenario:
    """A preset's valid token: issuer settings, claims and header members."""

    preset: str
    claims: Mapping[str, Any]  # None: the claim is absent (on top of LocalIssuer's defaults)
    settings: Mapping[str, Any] = field(default_factory=dict)
    alg: str = "RS256"
    header: Mapping[str, Any] = field(default_factory=dict)
    #: Header members the preset reads, with the code a wrong type answers.
    header_reads: Mapping[str, str] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {
    s.preset: s
    for s in (
        Scenario(
            "generic",
            {
                "groups": ["g"],
                "scope": "openid",
                "scp": ["orders.read"],
                "jti": "j-1",
                "client_id": "orders-app",  # read by the kind rule (RFC 9068)
            },
            header_reads={
                "alg": "header_invalid",
                "kid": "header_invalid",
                "typ": "header_invalid",
            },
        ),
        Scenario(
            "okta",
            {
                "cid": "0oa1",
                "uid": "00u1",
                "scp": ["openid"],
                "groups": ["Everyone"],
                "email": "a@acme.example",
            },
        ),
        Scenario(
            "entra",
            {
                "oid": "00000000-0000-0000-66f3-3332eca7ea81",
                "tid": "t-1",
                "roles": ["Orders.Admin"],
                "groups": ["g-1"],
                "scp": "Orders.Read",
                "idtyp": "user",
                "preferred_username": "alice@acme.example",
                "upn": "alice@acme.example",
                "unique_name": "alice@acme.example",
                "email": "alice@acme.example",
                "azp": "c-1",
                "appid": "c-1",
                "_claim_names": {"other": "src1"},
                "hasgroups": False,
            },
        ),
        Scenario(
            "google",
            {"hd": "acme.example", "email": "a@acme.example", "email_verified": True},
            settings={"hosted_domains": ("acme.example",)},
        ),
        Scenario(
            "cognito",
            {
                "aud": None,  # access tokens carry the app client in client_id
                "token_use": "access",
                "client_id": "api://local",
                "username": "alice",
                "cognito:username": "alice",
                "cognito:groups": ["g"],
                "scope": "openid",
                "email": "a@acme.example",
            },
        ),
        Scenario(
            "keycloak",
            {
                "realm_access": {"roles": ["r"]},
                "resource_access": {"orders-api": {"roles": ["orders-admin"]}},
                "groups": ["/g"],
                "preferred_username": "alice",
                "scope": "openid",
                "email": "a@acme.example",
                "azp": "orders-web",
                "typ": "Bearer",
            },
            settings={"client_id": "orders-api"},
        ),
        Scenario(
            "auth0",
            {
                f"{NS}/groups": ["g"],
                f"{NS}/roles": ["r"],
                f"{NS}/email": "a@acme.example",
                "email": "a@acme.example",
                "scope": "openid",
                "permissions": ["read:orders"],
                "gty": "password",
                "azp": "c-1",
            },
            settings={"namespace": NS},
        ),
        Scenario(
            "github-actions",
            {
                "aud": "https://github.com/acme",
                "repository_owner": "acme",
                "repository": "acme/orders",
                "repository_id": "74",
                "environment": "prod",
                "ref": "refs/heads/main",
                "ref_type": "branch",
                "workflow": "deploy",
                "job_workflow_ref": "acme/orders/.github/workflows/d.yml@refs/heads/main",
                "event_name": "push",
                "actor": "alice",
                "runner_environment": "github-hosted",
            },
            settings={"audience": ("https://github.com/acme",)},
        ),
        Scenario(
            "gitlab-ci",
            {
                "namespace_path": "acme/platform",
                "project_path": "acme/platform/orders",
                "environment": "prod",
                "environment_protected": "true",
                "ref": "main",
                "ref_type": "branch",
                "ref_protected": "true",
                "pipeline_source": "push",
                "user_login": "alice",
                "runner_environment": "gitlab-hosted",
            },
            settings={"owners": ("acme",)},
        ),
        Scenario(
            "kubernetes",
            {
                "sub": "system:serviceaccount:orders:api",
                "kubernetes.io": {
                    "namespace": "orders",
                    "serviceaccount": {"name": "api", "uid": "u-1"},
                    "pod": {"name": "api-0", "uid": "u-2"},
                },
            },
        ),
        Scenario("spiffe", {"sub": "spiffe://acme.example/ns/orders/sa/api"}),
        Scenario(
            "google-iap",
            {"email": "a@acme.example", "hd": "acme.example"},
            settings={"hosted_domains": ("acme.example",)},
            alg="ES256",
        ),
        Scenario(
            "aws-alb",
            {"groups": ["g"], "email": "a@acme.example"},
            settings={
                "audience": (),
                "keys_url": PEM_URL,
                "signers": (ALB_ARN,),
                "client_id": ALB_CLIENT,
            },
            alg="ES256",
            header={"signer": ALB_ARN, "client": ALB_CLIENT},
            header_reads={"signer": "signer_invalid", "client": "signer_invalid"},
        ),
        Scenario(
            "cloudflare-access",
            {"email": "a@acme.example", "country": "NL", "common_name": "c.access"},
        ),
        Scenario(
            "pomerium",
            {"groups": ["g"], "email": "a@acme.example", "user": "u-1"},
            alg="ES256",
        ),
    )
}


# --- what each claim may be ---------------------------------------------------------------

ANY_SCALAR_OR_LIST = frozenset({"string", "number", "boolean", "list"})


@dataclass(frozen=True)
class Rule:
    """The JSON types a reader accepts, and the code a value of another type answers."""

    accepts: frozenset[str]
    code: frozenset[str]


def _kind_types(kind: Kind) -> frozenset[str]:
    names = {STRING: "string", BOOLEAN: "boolean", OBJECT: "object"}
    return frozenset({names[kind]})


def rules(scenario: Scenario) -> dict[Path, Rule]:
    """Every claim the preset reads (built from its declaration), with its rule."""
    cfg = config(scenario, None)
    cmap = cfg.claim_map
    strings = cmap.allow_string or cmap.delimiter is not None
    typed = frozenset({"claim_type_invalid"})
    mapped = frozenset({"claim_mapping_invalid", "claim_not_list"})
    out: dict[Path, Rule] = {
        ("iss",): Rule(frozenset({"string"}), frozenset({"issuer_untrusted"})),
        ("aud",): Rule(frozenset({"string", "list"}), frozenset({"audience_invalid"})),
        ("jti",): Rule(frozenset({"string"}), typed),
    }
    for name in ("exp", "nbf", "iat"):
        out[(name,)] = Rule(frozenset({"number"}), typed)
    for path in cmap.subject[1:]:  # fallbacks are read only when the first is absent
        out[split(scenario, path)] = Rule(frozenset(JSON_VALUES), typed)
    out[split(scenario, cmap.subject[0])] = Rule(frozenset({"string"}), typed)
    for path in cmap.groups + cmap.roles:
        accepts = {"list", "string"} if strings else {"list"}
        out[split(scenario, path)] = Rule(frozenset(accepts), mapped)
    for path in cmap.scopes:
        out[split(scenario, path)] = Rule(frozenset({"string", "list"}), mapped)
    for paths in cmap.attributes.values():
        # Only the first path present is read (fallbacks: Entra's upn after
        # preferred_username); the others must merely never crash.
        out[split(scenario, paths[0])] = Rule(ANY_SCALAR_OR_LIST, mapped)
        for path in paths[1:]:
            out.setdefault(split(scenario, path), Rule(frozenset(JSON_VALUES), mapped))
    for name, kind in cfg.preset.claim_types.items():
        out[(name,)] = Rule(_kind_types(kind), typed)
    for path in list(out):  # the objects a nested path passes through
        for depth in range(1, len(path)):
            out.setdefault(path[:depth], Rule(frozenset({"object"}), mapped))
    return out


def split(scenario: Scenario, path: str) -> Path:
    """A dotted claim path as nested keys of the scenario's payload (names may hold dots)."""
    node: Any = payload(scenario)
    keys: list[str] = []
    rest = path
    while isinstance(node, dict) and rest not in node:
        head = max((k for k in node if rest.startswith(k + ".")), key=len, default=None)
        if head is None:
            break
        keys.append(head)
        node, rest = node[head], rest[len(head) + 1 :]
    return (*keys, rest)


def payload(scenario: Scenario, iss: str = "http://127.0.0.1:9") -> dict[str, Any]:
    """The scenario's valid payload: every generic claim present, then its own."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": "api://local",
        "sub": "user-1",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "jti": "j-1",
    }
    claims.update(scenario.claims)
    return {k: v for k, v in claims.items() if v is not None}


# --- the real parts ----------------------------------------------------------------------


def config(scenario: Scenario, issuer: LocalIssuer | None) -> IssuerConfig:
    """The scenario's issuer settings, trusting ``issuer`` (or a placeholder, offline)."""
    base = issuer.base_url if issuer else "http://127.0.0.1:9"
    settings: dict[str, Any] = {"audience": ("api://local",), "jwks_uri": base + "/jwks.json"}
    # A case sending an unknown kid (a string of its own) makes a fetch; the defaults would
    # answer 503 to one that came within min_refetch of another fetch, or when a loaded
    # machine takes the loopback fetch past request_wait. Both are tested in
    # tests/tokens/test_key_lifecycle.py; here the answer must depend on the token only.
    settings["keys"] = KeyPolicy(min_refetch=0.001, request_wait=30.0)
    settings.update(scenario.settings)
    if settings.get("keys_url") == PEM_URL:
        settings["keys_url"] = base + "/pem/{kid}"
    url = issuer.url if issuer else base
    return IssuerConfig(name="idp", issuer=url, preset=PRESETS[scenario.preset], **settings)


def policy(scenario: Scenario) -> dict[str, Any]:
    """A policy that reads every claim the preset reads again, in resolve: as an attribute
    source (rendered into a row rule) and as a binding on claim values, so a claim of an
    odd type is also answered, never a crash, where the policy meets it."""
    paths = sorted(".".join(path) for path in rules(scenario))
    names = [f"c{i}" for i in range(len(paths))]
    return {
        "version": "1",
        "attributes": {
            name: {"multi": True, "claim": path} for name, path in zip(names, paths, strict=True)
        },
        "roles": {
            "reader": {
                "permissions": ["orders:read"],
                "rows": {"orders": {name: f"${name}" for name in names}},
            }
        },
        "bindings": [{"groups": ["g"], "roles": ["reader"]}]
        + [{"issuer": "idp", "claims": {path: ["x"]}, "roles": ["reader"]} for path in paths],
    }


@dataclass
class Env:
    """One scenario's issuer and the two engines its tokens go through."""

    issuer: LocalIssuer
    cfg: IssuerConfig
    asgi: IAMScope  # behind IAMScopeMiddleware: the async verifier
    wsgi: IAMScope  # behind IAMScopeWSGIMiddleware: the sync verifier


@pytest.fixture(scope="module")
def envs() -> Iterator[Callable[[Scenario], Env]]:
    """Per scenario, made on first use and shared by its cases.

    Shared because each engine's HTTP clients load the CA bundle (~50 ms apiece): per
    case, the ~1,200 cases would take minutes. Safe because every case sends a token of
    its own (decisions are cached per token) and the engines are never reconfigured.
    """
    made: dict[str, Env] = {}

    def env(scenario: Scenario) -> Env:
        if scenario.preset not in made:
            issuer = LocalIssuer(algorithms=(scenario.alg,)).start()
            cfg = config(scenario, issuer)
            made[scenario.preset] = Env(issuer, cfg, engine(cfg, scenario), engine(cfg, scenario))
        return made[scenario.preset]

    yield env
    for each in made.values():
        each.asgi.close()
        each.wsgi.close()
        each.issuer.stop()


def engine(cfg: IssuerConfig, scenario: Scenario) -> IAMScope:
    store = PolicyStore(policy(scenario), issuers=(cfg,))
    return IAMScope([cfg], store, audit=ListSink(), hash_key=b"k" * 32)


def sign(
    issuer: LocalIssuer, scenario: Scenario, claims: Mapping[str, Any], header: Mapping[str, Any]
) -> str:
    """Sign exactly these members (null kept: LocalIssuer.mint drops None claims)."""
    key = issuer.key_for(scenario.alg)
    full_header = {"alg": scenario.alg, "typ": "JWT", "kid": key.kid, **header}
    return issuer.sign_raw(
        json.dumps(full_header).encode(), json.dumps(claims).encode(), key=key, alg=scenario.alg
    )


def token_headers(cfg: IssuerConfig, token: str) -> list[tuple[str, str]]:
    source = cfg.token_source
    value = f"Bearer {token}" if source.kind == "bearer" else token
    return [(source.header_name, value)]


async def _asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_ok(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


def through_asgi(iam: IAMScope, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=IAMScopeMiddleware(_asgi_ok, iam))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/orders", headers=headers)

    response = asyncio.run(run())
    return response.status_code, _body(response.content, response.status_code)


def through_wsgi(iam: IAMScope, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/orders", "wsgi.url_scheme": "http"}
    for name, value in headers:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: list[str] = []
    app = IAMScopeWSGIMiddleware(_wsgi_ok, iam)
    body = b"".join(app(environ, lambda status, hdrs, exc_info=None: seen.append(status)))
    status = int(seen[0].split()[0])
    return status, _body(body, status)


def _body(content: bytes, status: int) -> dict[str, Any]:
    if status == 200:
        return {}
    problem: dict[str, Any] = json.loads(content)
    return problem


def answer(
    envs: Callable[[Scenario], Env],
    scenario: Scenario,
    claims: Callable[[dict[str, Any]], None] = lambda payload: None,
    header: Callable[[dict[str, Any]], None] = lambda header: None,
) -> tuple[int, dict[str, Any]]:
    """The ASGI answer for the scenario's token after ``claims``/``header`` edit it; the
    WSGI middleware (the sync verifier) must give the same answer."""
    env = envs(scenario)
    body = payload(scenario, env.issuer.url)
    claims(body)
    head = dict(scenario.header)
    header(head)
    headers = token_headers(env.cfg, sign(env.issuer, scenario, body, head))
    asgi = through_asgi(env.asgi, headers)
    wsgi = through_wsgi(env.wsgi, headers)
    assert (asgi[0], asgi[1].get("code")) == (wsgi[0], wsgi[1].get("code"))
    for engine_ in (env.asgi, env.wsgi):  # a fresh token each time: a real verification
        assert engine_.audit.events[-1]["cache"] == "miss"  # type: ignore[attr-defined]
    return asgi


def set_path(payload: dict[str, Any], path: Path, value: Any) -> None:
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


HEADER = "<header>"  # a path's first key: a member of the protected header, not a claim


def cases() -> list[Any]:
    out = []
    for name, scenario in SCENARIOS.items():
        paths = dict(rules(scenario))
        for member, code in scenario.header_reads.items():
            paths[(HEADER, member)] = Rule(frozenset({"string"}), frozenset({code}))
        for path, rule in paths.items():
            for kind in JSON_VALUES:
                label = ".".join(path).replace(HEADER, "header")
                out.append(pytest.param(name, path, rule, kind, id=f"{name}-{label}-{kind}"))
    return out


# --- the tests ------------------------------------------------------------------------------


def test_every_preset_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_scenario_token_is_accepted(envs: Callable[[Scenario], Env], name: str) -> None:
    # The baseline: refusals below prove the rule fired, not a misconfigured scenario.
    assert answer(envs, SCENARIOS[name])[0] == 200


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_carry_every_claim_the_preset_maps(name: str) -> None:
    # A claim the scenario lacks would still be tested (set to each type), but only a
    # present one shows that its valid value passes: keep the scenarios complete.
    scenario = SCENARIOS[name]
    base = payload(scenario)
    absent = {key for key, value in scenario.claims.items() if value is None}
    for path in rules(scenario):
        if path[0] in absent:
            continue
        node: Any = base
        for key in path:
            assert isinstance(node, dict) and key in node, (name, path)
            node = node[key]


@pytest.mark.parametrize(("name", "path", "rule", "kind"), cases())
def test_a_claim_or_header_member_of_any_json_type_is_answered_never_a_crash(
    envs: Callable[[Scenario], Env], name: str, path: Path, rule: Rule, kind: str
) -> None:
    value = JSON_VALUES[kind]
    if path[0] == HEADER:
        status, problem = answer(envs, SCENARIOS[name], header=lambda h: h.update({path[1]: value}))
    else:
        status, problem = answer(envs, SCENARIOS[name], claims=lambda c: set_path(c, path, value))
    assert status in (200, 401, 403)
    if kind not in rule.accepts and value is not None:
        assert status == 401
        assert problem["code"] in rule.code


class Recording(dict[str, Any]):
    """A payload that remembers which claims were read."""

    def __init__(self, data: Mapping[str, Any], seen: set[str]) -> None:
        super().__init__(data)
        self.seen = seen

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_preset_rules_read_only_declared_claims(name: str) -> None:
    # kind, check and audience may read only what the preset's claim map, its
    # claim_types or the generic rules type-check first; a new read needs a declaration.
    scenario = SCENARIOS[name]
    cfg = config(scenario, None)
    declared = {path[0] for path in rules(scenario)}
    preset = cfg.preset
    for claims in (payload(scenario), {}):
        seen: set[str] = set()
        recording = Recording(claims, seen)
        preset.kind(recording)
        try:
            preset.check(dict(scenario.header), recording, cfg)
            if preset.audience is not None:
                preset.audience(recording, cfg)
        except errors.IAMScopeError:
            pass  # a refusal is fine here: only the reads matter
        assert seen <= declared, (name, seen - declared)
