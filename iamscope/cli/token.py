"""``iamscope token``: a development token from a throwaway local issuer, which with
``--serve`` keeps running for the examples to trust."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from iamscope.cli.exit_codes import OK
from iamscope.errors import ConfigError
from iamscope.testing import LocalIssuer

_MINT_COMMAND = "iamscope token"


def _dev_issuer(port: int) -> LocalIssuer:
    """A started LocalIssuer (RS256 only) on a chosen loopback port; 0 picks a free one."""
    try:
        return LocalIssuer(("RS256",), port=port).start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}", source=_MINT_COMMAND
        ) from None


def _token_claims(args: argparse.Namespace) -> dict[str, Any]:
    if args.ttl <= 0:
        raise ConfigError("--ttl must be a positive number of seconds", source=_MINT_COMMAND)
    if not 0 <= args.issuer_port <= 65535:
        raise ConfigError("--issuer-port must be between 0 and 65535", source=_MINT_COMMAND)
    if args.issuer_port and not args.serve:
        raise ConfigError("--issuer-port only means something with --serve", source=_MINT_COMMAND)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if groups:
        claims["groups"] = groups
    for item in args.claim:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--claim takes NAME=VALUE, got {item!r}", source=_MINT_COMMAND)
        try:
            claims[name] = json.loads(raw)
        except ValueError:
            claims[name] = raw
    return claims


def run(args: argparse.Namespace, out: TextIO) -> int:
    claims = _token_claims(args)
    issuer = _dev_issuer(args.issuer_port)
    try:
        token = issuer.mint(claims)
        out.write(token + "\n")
        if not args.serve:
            payload = issuer.claims(**claims)
            sys.stderr.write(
                "note: this token's signing key existed only in this process, so it "
                "verifies against nothing. Run `iamscope token --serve` for a token plus a "
                "running issuer to configure, or see what these claims would get with\n"
                f"  iamscope explain --config CONFIG --claims '{json.dumps(payload)}'\n"
            )
            return OK
        out.write(_serving(issuer, claims))
        out.flush()
        with contextlib.suppress(KeyboardInterrupt):
            _wait_for_interrupt()
        out.write("stopped\n")
        return OK
    finally:
        issuer.stop()


def _serving(issuer: LocalIssuer, claims: Mapping[str, Any]) -> str:
    payload = issuer.claims(**claims)
    aud = payload.get("aud")
    audience = json.dumps(aud) if aud is not None else "[]"
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(payload["exp"]))
    return (
        f"issuer:   {issuer.url}\n"
        f"jwks_uri: {issuer.jwks_uri}\n"
        f"expires:  {expires}\n"
        "\n"
        "# an issuers entry trusting this issuer (YAML, generic preset: groups from 'groups'):\n"
        "issuers:\n"
        "  - name: local\n"
        f"    issuer: {issuer.url}\n"
        f"    audience: {audience}\n"
        "\n"
        "try: iamscope explain --config CONFIG --token TOKEN\n"
        "serving until Ctrl-C\n"
    )


def _wait_for_interrupt() -> None:  # pragma: no cover - replaced in tests
    while True:
        time.sleep(3600)
