"""Memory held per cached token, with 100k tokens in the cache.

Real tokens all the way: a ``LocalIssuer`` mints 100k EdDSA tokens (distinct ``sub``
and ``jti``, one group; ``iss``, ``aud``, ``iat``, ``exp``) before anything is measured.
An entry keeps no claims (``TokenCache.compact``), so a token's size matters little; what
each holds of its own is its digest, subject, ``jti``, times and ``user.hash`` (an entry is
its compact ``Principal``; its span attributes share one dict with every identity alike).
An ``IAMScope`` (defaults, but audit to a sink that drops events and a cache sized not
to evict) fetches the keys and resolves the group's Access once; the issuer is then
stopped. With ``tracemalloc`` tracing, every token goes through ``IAMScope.decide``,
the path of a cache miss: verification, mapping to a ``Principal``, policy resolution
(the Access is interned, so all entries share one), span attributes and
``TokenCache.put_allowed`` (whose entry is the compact principal). Transient garbage is
collected; what is still allocated afterwards, divided by the number of tokens, is the
figure, broken down by the source file that allocated it. The signature algorithm does
not change what is held (the signature is not kept); EdDSA only makes minting and
verifying 100k tokens quick.

DESIGN.md budget: ≤ 700 B per cached token at 100k tokens (shared Access objects).

    .venv/bin/python benchmarks/bench_memory.py [--write] [--tokens 100000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from _readme import intro_of, write_section
from bench_middleware import POLICY, NullSink

import iamscope
from iamscope import IAMScope
from iamscope.engine.cache import CacheSettings
from iamscope.policy import PolicyStore
from iamscope.testing import LocalIssuer

BUDGET = 700  # bytes per cached token, DESIGN.md "Budgets"
ALG = "EdDSA"
PACKAGE = Path(iamscope.__file__).resolve().parent


def where(filename: str) -> str:
    path = Path(filename).resolve()
    if path.is_relative_to(PACKAGE):
        return f"`iamscope/{path.relative_to(PACKAGE)}`"
    return f"`{path.name}` (outside iamscope)"


def measure(count: int) -> tuple[float, dict[str, tuple[int, int]], int]:
    """(bytes per token, {file: (bytes, blocks)} retained, token length)."""
    with LocalIssuer((ALG,)) as issuer:
        exp = int(time.time()) + 3600
        tokens = [
            issuer.mint(
                alg=ALG, sub=f"user-{i:06d}", jti=f"{i:016x}", groups=["sales-east"], exp=exp
            )
            for i in range(count)
        ]
        requests = [[(b"authorization", f"Bearer {t}".encode())] for t in tokens]
        iam = IAMScope(
            [issuer.issuer_config(algorithms=(ALG,))],
            PolicyStore(POLICY),
            hash_key=b"k" * 32,
            audit=NullSink(),
            audit_hits=0.0,
            cache=CacheSettings(max_entries=count + 10),
        )
        warm = issuer.mint(alg=ALG, sub="warm", groups=["sales-east"], exp=exp)
        assert iam.decide([(b"authorization", f"Bearer {warm}".encode())]).allowed
    # The issuer is stopped: from here on nothing can touch the network.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for headers in requests:
        if not iam.decide(headers).allowed:
            raise SystemExit("a token was refused: the figure would measure nothing")
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()

    entries = list(iam.cache.allowed.values())
    if len(entries) != count + 1:
        raise SystemExit(f"expected {count + 1} cached tokens, found {len(entries)}")
    if len({id(e.access) for e in entries}) != 1:
        raise SystemExit("cached entries do not share one Access object")
    if len({id(e) for e in entries}) != count + 1:  # an entry is its token's Principal
        raise SystemExit("expected one Principal per token")
    held: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for stat in after.compare_to(before, "filename"):
        name = where(stat.traceback[0].filename)
        held[name] += stat.size_diff
        blocks[name] += stat.count_diff
    total = sum(held.values())
    iam.close()
    return total / count, {k: (held[k], blocks[k]) for k in held}, len(tokens[0])


def render(per_token: float, files: dict[str, tuple[int, int]], count: int, size: int) -> str:
    rows = ["| allocated in | bytes per token | blocks per token |", "|---|---:|---:|"]
    shown = sorted(files.items(), key=lambda kv: -kv[1][0])
    rest = [0, 0]
    for name, (held, blocks) in shown:
        if abs(held) / count < 1:  # under a byte a token: noise, folded into "other"
            rest[0] += held
            rest[1] += blocks
            continue
        rows.append(f"| {name} | {held / count:,.0f} | {blocks / count:.1f} |")
    rows.append(f"| other | {rest[0] / count:,.0f} | {rest[1] / count:.1f} |")
    rows.append(f"| **total** | **{per_token:,.0f}** | |")
    verdict = "met" if per_token <= BUDGET else "NOT met"
    rows += [
        "",
        f"Bytes per cached token at {count:,} tokens: {per_token:,.0f} B "
        f"(budget ≤ {BUDGET} B: {verdict}); {ALG} tokens of {size} characters, one "
        f"Access shared by all entries. Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="memory held per cached token")
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    parser.add_argument("--tokens", type=int, default=100_000, help="tokens cached (100000)")
    args = parser.parse_args(argv)
    if args.tokens < 1:
        parser.error("--tokens must be positive")
    per_token, files, size = measure(args.tokens)
    block = render(per_token, files, args.tokens, size)
    print(block)
    if args.write:
        write_section("memory", "Memory (`bench_memory.py`)", intro_of(__doc__), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
