"""Command line: ``iamscope demo | lint | explain | test | gateway | doctor | token`` and,
for a fleet, ``revoke | revocations | fleet`` (:mod:`iamscope.cli.fleet`).

This module is the parser and the dispatch; the commands live in ``policy`` (lint,
explain, test), ``doctor``, ``token`` and ``fleet``, the gateway in :mod:`iamscope.gateway`, the
demo in :mod:`iamscope.demo`. Exit codes (``exit_codes``) are distinct so scripts and
CI can tell outcomes apart: 0 success; 1 lint errors, failed policy tests or doctor
errors; 2 the input could not be loaded (bad config, bad test file, bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from iamscope.cli import doctor as doctor_command
from iamscope.cli import fleet as fleet_commands
from iamscope.cli import policy as policy_commands
from iamscope.cli import token as token_command
from iamscope.cli.exit_codes import OK, UNUSABLE
from iamscope.config import load_config
from iamscope.errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="iamscope")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the analytics app on local issuers, as ten personas")
    demo.add_argument(
        "--serve", action="store_true", help="then keep the app and issuers running (curl lines)"
    )
    demo.add_argument(
        "--datasette",
        action="store_true",
        help="also the Datasette example under the same policy (with --serve: serve it)",
    )
    demo.add_argument(
        "--lightstep",
        action="store_true",
        help="also send the spans to Lightstep (token from LS_ACCESS_TOKEN)",
    )
    lint = sub.add_parser("lint", help="check a config or policy file")
    lint.add_argument("file")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    explain = sub.add_parser("explain", help="what an identity would get, and why")
    explain.add_argument("--config", required=True)
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--claims", help="JSON claims (mapped, not verified)")
    who.add_argument("--token", help="a token, verified against the configured issuers")
    explain.add_argument("--issuer", help="issuer name (default: by the claims' iss)")
    test = sub.add_parser("test", help="run policy tests written as data")
    test.add_argument("file")
    gateway = sub.add_parser("gateway", help="run the identity-aware OTLP gateway (uvicorn)")
    gateway.add_argument("--config", required=True)
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=4318)
    doctor = sub.add_parser(
        "doctor",
        help="check a deployment's config: issuers, keys, policy, telemetry, gateway",
        description=(
            "One line per finding (ok / warn / error), then a summary. Exit 0 without "
            "errors, 1 with any error, 2 when the config cannot be loaded. Environment "
            "variables are reported as set or missing, never their values."
        ),
    )
    doctor.add_argument("--config", required=True)
    doctor.add_argument(
        "--offline", action="store_true", help="skip network checks (discovery, JWKS)"
    )
    doctor.add_argument(
        "--timeout", type=float, default=3.0, help="seconds per key fetch (default 3)"
    )
    token = sub.add_parser(
        "token",
        help="mint a development token from a local issuer",
        description=(
            "Mint a token signed by a throwaway local issuer, for trying the examples. "
            "With --serve the issuer keeps running on 127.0.0.1 until Ctrl-C and the "
            "output shows its URL, JWKS URL and an issuers config entry trusting it: "
            "that is the useful mode. Without --serve the signing key dies with this "
            "process, so the token verifies against nothing: only the token is printed "
            "(stdout), with a note and its claims on stderr, for decoding or for "
            "`iamscope explain --claims`. (Printing the JWKS instead would not help: "
            "issuers take a jwks_uri URL, not inline keys.)"
        ),
    )
    token.add_argument(
        "--issuer-port", type=int, default=0, help="port to serve on (default: a free one)"
    )
    token.add_argument("--sub", default="dev-user", help="subject (default: dev-user)")
    token.add_argument("--groups", default="", help="comma-separated groups, e.g. sales-east")
    token.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="K=V",
        help="extra claim (repeatable); V is read as JSON when it parses, else as a string",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--serve", action="store_true", help="keep the issuer running until Ctrl-C")
    fleet_commands.add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from iamscope.demo import run

            return run(out, serve=args.serve, lightstep=args.lightstep, datasette=args.datasette)
        if args.command == "lint":
            return policy_commands.lint(Path(args.file), args.strict, out)
        if args.command == "explain":
            return policy_commands.explain(args, out)
        if args.command == "gateway":
            return _gateway(Path(args.config), args.host, args.port)
        if args.command == "doctor":
            return doctor_command.run(Path(args.config), args.offline, args.timeout, out)
        if args.command == "token":
            return token_command.run(args, out)
        if args.command in fleet_commands.COMMANDS:
            return fleet_commands.run(args, out)
        return policy_commands.run_tests(Path(args.file), out)
    except ConfigError as exc:
        out.write(f"error: {exc}\n")
        return UNUSABLE


# --- gateway -------------------------------------------------------------------------


def _gateway(path: Path, host: str, port: int) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("the gateway needs uvicorn: pip install 'iamscope[gateway]'") from None

    from iamscope.engine.engine import IAMScope
    from iamscope.gateway.app import OTLPGateway

    config = load_config(path)
    if config.gateway is None:
        raise ConfigError("no 'gateway' block", source=str(path), key="gateway")
    app = OTLPGateway(IAMScope.from_config(config), config.gateway)
    uvicorn.run(app, host=host, port=port, log_level="info")
    return OK
