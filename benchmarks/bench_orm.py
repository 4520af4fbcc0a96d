"""What the automatic SQLAlchemy row criteria add to a simple ORM query.

One query per request, as an app runs it: open a Session, load 20 east sales
(``select(Sale).where(Sale.region == "east", Sale.id <= 80)``), close it; SQLite in
memory, 1,000 rows, SQLAlchemy's statement cache warm. Every contender returns the same
20 rows, so the differences are the criteria, not the rows. Contenders, in interleaved
rounds:

* **unfiltered**: no iamscope at all (the baseline);
* **enforce_rows, plan all**: the ``do_orm_execute`` listener with an ``all`` plan (no
  criteria added: the listener's own cost);
* **enforce_rows, region IN**: the listener adding ``with_loader_criteria`` for an
  east analyst's ``region IN ('east')`` plan;
* **hand-written filter**: the same criteria written into the query by hand
  (``.where(to_sqlalchemy(plan, Sale))``): what the automatic hook replaces.

Each figure is the median of the rounds' µs per query; the ratios are medians of the
per-round ratios to the unfiltered query of the same round, with their min-max.

    .venv/bin/python benchmarks/bench_orm.py [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable

from _readme import intro_of, write_section
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from iamscope import Access, CompiledPolicy, Principal, load_policy
from iamscope.integrations.sqlalchemy import enforce_rows
from iamscope.policy.render.sqlalchemy import to_sqlalchemy

REGIONS = ("east", "west", "north", "south")
POLICY = {
    "version": "bench",
    "attributes": {"region": {"multi": True}},
    "roles": {
        "analyst": {"rows": {"sales": {"region": "$region"}}},
        "admin": {"rows": {"sales": "all"}},
    },
    "bindings": [
        {"groups": ["sales-east"], "roles": ["analyst"], "attributes": {"region": ["east"]}},
        {"groups": ["admins"], "roles": ["admin"]},
    ],
}


class Base(DeclarativeBase):
    pass


class Sale(Base):
    __tablename__ = "sales"
    id: Mapped[int] = mapped_column(primary_key=True)
    region: Mapped[str] = mapped_column(String(10))
    amount: Mapped[int]


def access_of(group: str) -> Access:
    who = Principal("bench", "https://idp", "u", "user", 2e9, groups=frozenset({group}))
    return CompiledPolicy(load_policy(POLICY)).resolve(who)


def contenders() -> dict[str, Callable[[], int]]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Sale(id=i, region=REGIONS[i % 4], amount=i) for i in range(1, 1001))
        session.commit()
    query = select(Sale).where(Sale.region == "east", Sale.id <= 80)
    east, admin = access_of("sales-east"), access_of("admins")

    def runner(maker: sessionmaker[Session], statement: object = query) -> Callable[[], int]:
        def one() -> int:
            with maker() as session:
                return len(session.scalars(statement).all())  # type: ignore[call-overload]

        return one

    plain = sessionmaker(engine)
    unrestricted = sessionmaker(engine)
    enforce_rows(unrestricted, {Sale: "sales"}, access=lambda: admin)
    filtered = sessionmaker(engine)
    enforce_rows(filtered, {Sale: "sales"}, access=lambda: east)
    by_hand = query.where(to_sqlalchemy(east.rows_for("sales"), Sale))
    found = {
        "unfiltered": runner(plain),
        "enforce_rows, plan all": runner(unrestricted),
        "enforce_rows, region IN": runner(filtered),
        "hand-written filter": runner(plain, by_hand),
    }
    counts = {name: run() for name, run in found.items()}
    # The figures mean something only if each contender returns what it should.
    if set(counts.values()) != {20}:
        raise SystemExit(f"contenders returned the wrong rows: {counts}")
    return found


def measure(rounds: int, number: int) -> dict[str, list[float]]:
    found = contenders()
    results: dict[str, list[float]] = {name: [] for name in found}
    for r in range(rounds):
        for name in list(found) if r % 2 == 0 else reversed(found):
            seconds = timeit.timeit(found[name], number=number)
            results[name].append(seconds / number * 1e6)
    return results


def render(results: dict[str, list[float]]) -> str:
    base = results["unfiltered"]
    rows = [
        "| contender | median µs/query | min-max | ratio to unfiltered (min-max) |",
        "|---|---:|---:|---:|",
    ]
    for name, times in results.items():
        ratios = [t / b for t, b in zip(times, base, strict=True)]
        rows.append(
            f"| {name} | {statistics.median(times):.1f} | {min(times):.1f}-{max(times):.1f} | "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    auto = statistics.median(results["enforce_rows, region IN"])
    hand = statistics.median(results["hand-written filter"])
    rows += [
        "",
        f"Automatic criteria against the same filter written by hand: {auto - hand:+.1f} µs "
        f"per query ({auto / hand:.2f}x).",
        f"{len(base)} rounds; Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cost of automatic ORM row criteria")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--number", type=int, default=1000)
    args = parser.parse_args(argv)
    block = render(measure(args.rounds, args.number))
    print(block)
    if args.write:
        heading = "Automatic ORM row filters (`bench_orm.py`)"
        write_section("orm", heading, intro_of(__doc__), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
