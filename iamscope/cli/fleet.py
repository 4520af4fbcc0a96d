"""Operators' commands for a fleet (contract 10): ``iamscope revoke``, ``iamscope
revocations list`` and ``iamscope fleet status|reload|refresh-keys|drop``.

Each reads the config file's ``shared:`` block (the Redis URL from the environment
variable it names) and talks to Redis directly: no running process is needed, and
every live process acts on the change within a second. A write that cannot reach
Redis exits 1 and says so: a revocation that did not land is not a revocation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import TextIO

from iamscope.cli.exit_codes import FAILED, OK
from iamscope.config import Config, load_config
from iamscope.errors import ConfigError, RevocationsUnavailable
from iamscope.fleet import Fleet
from iamscope.fleet.state import Kind

__all__ = ["add_parsers", "run"]

COMMANDS = ("revoke", "revocations", "fleet")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    revoke = sub.add_parser(
        "revoke",
        help="revoke for every worker and replica (Redis, from the shared: block)",
        description=(
            "Revoke tokens fleet-wide: by token id (--jti), subject (--sub), signing key "
            "(--kid) or a whole issuer (--issuer). --from names the configured issuer the "
            "jti, subject or key belongs to (needed when the config trusts several). The "
            "revocation lapses at --until (epoch seconds or ISO 8601), by default when no "
            "token it could match can still be valid (the issuer's max_lifetime, else "
            "shared.revocation_ttl)."
        ),
    )
    revoke.add_argument("--config", required=True, help="the iamscope config file")
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--sub", help="a subject")
    what.add_argument("--jti", help="a token id")
    what.add_argument("--kid", help="a signing key id")
    what.add_argument("--issuer", metavar="NAME", help="every token of this issuer")
    revoke.add_argument("--from", dest="source", metavar="NAME", help="the issuer of the above")
    revoke.add_argument("--until", help="when it lapses (epoch seconds or ISO 8601)")

    listing = sub.add_parser("revocations", help="the fleet's revocations in force")
    listing.add_argument("action", choices=["list"])
    listing.add_argument("--config", required=True, help="the iamscope config file")

    fleet = sub.add_parser(
        "fleet",
        help="the fleet's live processes, or a broadcast to all of them",
        description=(
            "status: every live process (host, pid, policy version, key set age, last "
            "sync). reload: every process reloads its policy file now. refresh-keys: "
            "every process refetches keys (--issuer NAME, default all). drop: every "
            "process forgets the cached decisions of --from NAME --sub S."
        ),
    )
    fleet.add_argument("action", choices=["status", "reload", "refresh-keys", "drop"])
    fleet.add_argument("--config", required=True, help="the iamscope config file")
    fleet.add_argument("--issuer", metavar="NAME", help="refresh-keys: only this issuer")
    fleet.add_argument("--from", dest="source", metavar="NAME", help="drop: the issuer")
    fleet.add_argument("--sub", help="drop: the subject")


def run(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(Path(args.config))
    if config.shared is None:
        raise ConfigError("no 'shared' block: nothing to share", source=args.config, key="shared")
    fleet = Fleet(config.shared)
    try:
        if args.command == "revoke":
            return _revoke(args, config, fleet, out)
        if args.command == "revocations":
            return _list(fleet, out)
        return _fleet(args, config, fleet, out)
    except RevocationsUnavailable as exc:
        out.write(f"error: {exc.message}: nothing was changed\n")
        return FAILED
    finally:
        fleet.close()


def _issuer(config: Config, name: str | None, what: str) -> str:
    names = [cfg.name for cfg in config.issuers]
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"{what}: say which issuer with --from (one of {', '.join(names)})")
        return names[0]
    if name not in names:
        raise ConfigError(f"{what}: no issuer named {name!r} (one of {', '.join(names)})")
    return name


def _until(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--until: not epoch seconds nor ISO 8601: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _revoke(args: argparse.Namespace, config: Config, fleet: Fleet, out: TextIO) -> int:
    named: list[tuple[Kind, str | None]] = [
        ("iss", args.issuer),
        ("sub", args.sub),
        ("jti", args.jti),
        ("kid", args.kid),
    ]
    kind, value = next((k, v) for k, v in named if v is not None)
    if kind == "iss":
        issuer = value = _issuer(config, value, "--issuer")
    else:
        issuer = _issuer(config, args.source, f"--{kind}")
    until = _until(args.until)
    if until is None:
        lifetime = next(c.max_lifetime for c in config.issuers if c.name == issuer)
        if lifetime is not None:
            until = time.time() + lifetime
    revocation = fleet.revoke(kind, issuer, value, until)
    lapses = dt.datetime.fromtimestamp(revocation.until, dt.UTC).isoformat(timespec="seconds")
    out.write(f"revoked {kind} of issuer {issuer} until {lapses}\n")
    return OK


def _list(fleet: Fleet, out: TextIO) -> int:
    rows = fleet.listed()
    for r in rows:
        lapses = dt.datetime.fromtimestamp(r.until, dt.UTC).isoformat(timespec="seconds")
        out.write(f"{r.kind}\t{r.issuer}\t{r.value}\tuntil {lapses}\n")
    out.write(f"{len(rows)} revocation{'s' if len(rows) != 1 else ''} in force\n")
    return OK


def _fleet(args: argparse.Namespace, config: Config, fleet: Fleet, out: TextIO) -> int:
    if args.action == "status":
        now = time.time()
        reports = fleet.processes()
        for p in reports:
            age = "-" if p.key_set_age is None else f"{p.key_set_age:.0f} s"
            sync = "never" if p.last_sync is None else f"{now - p.last_sync:.1f} s ago"
            out.write(
                f"{p.host}\tpid {p.pid}\tpolicy {p.policy_version or '-'}\tkeys {age}\t"
                f"last sync {sync}\n"
            )
        versions = {p.policy_version for p in reports}
        out.write(f"{len(reports)} live process{'es' if len(reports) != 1 else ''}")
        out.write(f"; policy versions differ: {sorted(versions)}\n" if len(versions) > 1 else "\n")
        return OK
    if args.action == "reload":
        fleet.broadcast("policy")
    elif args.action == "refresh-keys":
        name = _issuer(config, args.issuer, "--issuer") if args.issuer else ""
        fleet.broadcast("keys", issuer=name)
    else:
        if args.sub is None:
            raise ConfigError("drop: say whose cached decisions with --sub (and --from)")
        fleet.broadcast("drop", issuer=_issuer(config, args.source, "--sub"), subject=args.sub)
    out.write(f"broadcast {args.action} to the fleet\n")
    return OK
