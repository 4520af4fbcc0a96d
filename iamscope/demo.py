"""``iamscope demo``: the verifier end to end on an embedded issuer (no network).

Until the policy and the analytics app land, the demo does the smallest honest thing:
it starts two real :class:`LocalIssuer` instances on loopback, trusts one of them
through OIDC discovery, and verifies a set of tokens — good ones from several provider
shapes and a row of attacks — printing what each became or why it was refused. It
exits non-zero if any outcome differs from what the rules say (the demo is a test).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from iamscope.errors import IAMScopeError
from iamscope.testing import LocalIssuer
from iamscope.tokens.issuer import IssuerConfig
from iamscope.tokens.providers import PRESETS
from iamscope.tokens.verifier import TokenVerifier


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    token: Callable[[], str]
    expect: str  # "ok" or an error code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _cases(corp: LocalIssuer, ci: LocalIssuer, rogue: LocalIssuer) -> list[Case]:
    now = int(time.time())
    good = corp.mint(alg="ES256", sub="00u1east", groups=["sales-east"], scp=["sales:read"])
    head, body, sig = good.split(".")
    none_header = _b64(b'{"alg":"none"}')
    forged_body = _b64(
        json.dumps(
            {**json.loads(base64.urlsafe_b64decode(body + "==")), "groups": ["admins"]}
        ).encode()
    )
    return [
        Case("okta user, RS256", lambda: corp.mint(sub="00u1east", groups=["sales-east"]), "ok"),
        Case("okta user, ES256", lambda: good, "ok"),
        Case(
            "github actions workload",
            lambda: ci.mint(
                aud="https://github.com/acme",
                sub="repo:acme/checkout:environment:staging",
                repository="acme/checkout",
                repository_owner="acme",
                environment="staging",
            ),
            "ok",
        ),
        Case("expired", lambda: corp.mint(iat=now - 600, exp=now - 300), "token_expired"),
        Case("wrong audience", lambda: corp.mint(aud="api://other"), "audience_invalid"),
        Case(
            "groups edited after signing",
            lambda: f"{head}.{forged_body}.{sig}",
            "signature_invalid",
        ),
        Case(
            "alg none",
            lambda: f"{none_header}.{body}.",
            "token_unsupported",
        ),
        Case(
            "signed by another issuer's key, claiming corp",
            lambda: rogue.mint(iss=corp.url, headers={"kid": corp.key_for("RS256").kid}),
            "signature_invalid",
        ),
        Case("untrusted issuer", lambda: rogue.mint(), "issuer_untrusted"),
        Case(
            "embedded jwk header",
            lambda: corp.mint(headers={"jwk": {"kty": "RSA"}}),
            "header_invalid",
        ),
    ]


def run(out: TextIO) -> int:
    with LocalIssuer() as corp, LocalIssuer(("RS256",)) as ci, LocalIssuer() as rogue:
        verifier = TokenVerifier(
            [
                IssuerConfig(
                    name="corp", issuer=corp.url, audience=(corp.audience,), preset=PRESETS["okta"]
                ),
                IssuerConfig(
                    name="ci",
                    issuer=ci.url,
                    audience=("https://github.com/acme",),
                    preset=PRESETS["github-actions"],
                ),
            ]
        )
        failures = 0
        out.write(f"iamscope demo: issuers on {corp.url} (corp) and {ci.url} (ci)\n\n")
        out.write(f"{'case':48} {'expected':20} {'got':20} result\n")
        for case in _cases(corp, ci, rogue):
            got, detail = _outcome(verifier, case.token())
            ok = got == case.expect
            failures += not ok
            out.write(f"{case.name:48} {case.expect:20} {got:20} {'ok' if ok else 'MISMATCH'}\n")
            if detail:
                out.write(f"{'':48} {detail}\n")
        fetches = corp.requests["/jwks.json"] + ci.requests["/jwks.json"]
        out.write(f"\nJWKS fetched {fetches} times for {len(_cases(corp, ci, rogue))} tokens.\n")
        verifier.close()
    out.write("all outcomes as expected\n" if not failures else f"{failures} MISMATCHES\n")
    return 1 if failures else 0


def _outcome(verifier: TokenVerifier, token: str) -> tuple[str, str]:
    try:
        p = verifier.verify(token)
    except IAMScopeError as exc:
        return exc.code, ""
    attrs = ", ".join(f"{k}={'|'.join(v)}" for k, v in sorted(p.attributes.items()))
    groups = ",".join(sorted(p.groups)) or "-"
    return "ok", f"{p.issuer}/{p.kind} groups={groups} {attrs}".rstrip()
