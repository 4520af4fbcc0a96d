"""enforce_rows: every ORM data path carries the request's row plan, on SQLite and on a
real PostgreSQL, for every persona of the inventory, against a brute-force answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import (
    ForeignKey,
    String,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
    subqueryload,
)
from sqlalchemy.pool import StaticPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iamscope import Access, CompiledPolicy, IAMScopeMiddleware, Principal, load_policy
from iamscope.errors import AccessDenied, PlanUnsupported
from iamscope.integrations.sqlalchemy import enforce_rows
from iamscope.policy import Cmp, RowPlan, TraceScope
from iamscope.testing import LocalIssuer
from tests._http import get
from tests.integrations._inventory import (
    ACCOUNTS,
    PERSONAS,
    POLICY,
    SALES,
    Expected,
    inventory_iam,
    visible_sales,
)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    sales: Mapped[list[Sale]] = relationship(back_populates="account", order_by="Sale.id")


class Sale(Base):
    __tablename__ = "sales"
    id: Mapped[int] = mapped_column(primary_key=True)
    # The attribute is "region"; the column is named differently, as in real schemas.
    region: Mapped[str | None] = mapped_column("region_code", String(10))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int | None]
    account: Mapped[Account] = relationship(back_populates="sales")


DATASETS = {Sale: "sales", Account: "accounts"}


def ids(rows: Any) -> list[int]:
    return sorted(row.id for row in rows)


def run_inventory(session: Session) -> dict[str, Any]:
    """Every query shape, each answered as row ids or a count."""
    out: dict[str, Any] = {}
    out["select entity"] = ids(session.scalars(select(Sale)))
    out["select columns"] = sorted(session.scalars(select(Sale.id)))
    out["count select_from"] = session.scalar(select(func.count()).select_from(Sale))
    out["count column"] = session.scalar(select(func.count(Sale.id)))
    out["sum"] = session.scalar(select(func.coalesce(func.sum(Sale.amount), 0)))
    out["group by"] = sorted(
        [r, n]
        for r, n in session.execute(select(Sale.region, func.count()).group_by(Sale.region))
        if r is not None
    )
    out["legacy query"] = ids(session.query(Sale).all())
    out["legacy count"] = session.query(Sale).count()
    out["filter narrows"] = sorted(session.scalars(select(Sale.id).where(Sale.region == "west")))
    out["get"] = sorted(s.id for row in SALES if (s := session.get(Sale, row["id"])) is not None)
    out["aliased"] = sorted(session.scalars(select(aliased(Sale).id)))
    out["join from account"] = sorted(session.scalars(select(Sale.id).join(Sale.account)))
    out["join to sale"] = sorted(
        session.scalars(select(Sale.id).select_from(Account).join(Account.sales))
    )
    out["outer join"] = sorted(
        sid
        for sid in session.scalars(select(Sale.id).select_from(Account).outerjoin(Account.sales))
        if sid is not None
    )
    out["subquery"] = sorted(
        session.scalars(select(Sale.id).where(Sale.id.in_(select(Sale.id).scalar_subquery())))
    )
    out["exists via any"] = sorted(session.scalars(select(Account.id).where(Account.sales.any())))
    out["union"] = sorted(
        session.scalars(select(Sale.id).union(select(Sale.id).where(Sale.amount > 0)))
    )
    out["accounts"] = ids(session.scalars(select(Account)))
    session.expunge_all()
    out["lazy load"] = sorted(s.id for a in session.scalars(select(Account)) for s in a.sales)
    for name, option in (
        ("selectinload", selectinload),
        ("joinedload", joinedload),
        ("subqueryload", subqueryload),
    ):
        session.expunge_all()
        loaded = session.scalars(select(Account).options(option(Account.sales))).unique()
        out[name] = sorted(s.id for a in loaded for s in a.sales)
    session.expunge_all()
    out["many-to-one"] = sorted(s.account.id for s in session.scalars(select(Sale)))
    out["update rowcount"] = session.execute(
        update(Sale).values(account_id=Sale.account_id)
    ).rowcount
    session.rollback()
    out["delete rowcount"] = session.execute(delete(Sale)).rowcount
    session.rollback()
    return out


def expected(persona: str) -> dict[str, Any]:
    e = Expected(persona)
    return {
        "select entity": e.sales,
        "select columns": e.sales,
        "count select_from": e.count,
        "count column": e.count,
        "sum": e.total,
        "group by": e.by_region,
        "legacy query": e.sales,
        "legacy count": e.count,
        "filter narrows": e.west,
        "get": e.sales,
        "aliased": e.sales,
        "join from account": e.joined,
        "join to sale": e.joined,
        "outer join": e.joined,
        "subquery": e.sales,
        "exists via any": e.accounts_with_sales,
        "union": e.sales,
        "accounts": e.accounts,
        "lazy load": e.joined,
        "selectinload": e.joined,
        "joinedload": e.joined,
        "subqueryload": e.joined,
        "many-to-one": e.sale_accounts,
        "update rowcount": e.count,
        "delete rowcount": e.count,
    }


def fill(engine: Engine) -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Account(**a) for a in ACCOUNTS)
        session.flush()
        session.add_all(Sale(**s) for s in SALES)
        session.commit()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "sqlite":
        # One in-memory database shared by the threads Starlette runs sync endpoints in.
        made = create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS iamscope_rows")
            admin.execute("CREATE DATABASE iamscope_rows")
        own = dsn.replace("dbname=postgres", "dbname=iamscope_rows")
        made = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(own))
    fill(made)
    yield made
    made.dispose()


@pytest.fixture(scope="module")
def app(engine: Engine) -> Iterator[Any]:
    maker = sessionmaker(engine)
    enforcement = enforce_rows(maker, DATASETS)

    def inventory(request: Request) -> JSONResponse:  # sync: Starlette runs it in a thread
        with maker() as session:
            return JSONResponse(run_inventory(session))

    with LocalIssuer() as issuer:
        iam = inventory_iam(issuer)
        app = IAMScopeMiddleware(Starlette(routes=[Route("/inventory", inventory)]), iam)
        yield app, issuer, maker
        iam.close()
    enforcement.remove()


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_query_shape_sees_exactly_the_plan(app: Any, persona: str) -> None:
    asgi, issuer, _ = app
    groups = PERSONAS[persona][0]
    answer = get(asgi, "/inventory", issuer.mint(groups=groups))
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected(persona)


def test_outside_a_request_nothing_is_visible(app: Any) -> None:
    _, _, maker = app
    with maker() as session:
        assert run_inventory(session) == {
            **expected("unbound"),
            "accounts": [],
            "exists via any": [],
        }


def test_the_inventory_tells_personas_apart() -> None:
    """Were two personas to see the same rows, a hook applying the wrong persona's
    plan could pass unnoticed."""
    seen = {persona: tuple(visible_sales(persona)) for persona in PERSONAS}
    assert len({rows for rows in seen.values() if rows}) == 5
    assert len(visible_sales("admin")) == len(SALES)
    assert any(r["region"] is None and r["amount"] is None for r in SALES)


# --- writes, refusals and misuse, with plans given through `access=` ----------------------


def access_of(*groups: str) -> Access:
    policy = CompiledPolicy(load_policy(POLICY))
    who = Principal("local", "https://idp.test", "u1", "user", 2e9, groups=frozenset(groups))
    return policy.resolve(who)


@pytest.fixture
def east_session(engine: Engine) -> Iterator[Session]:
    """A session under the east analyst's plan; nothing it does is committed."""
    maker = sessionmaker(engine)
    east = access_of("sales-east")
    enforcement = enforce_rows(maker, DATASETS, access=lambda: east)
    with maker() as session:
        yield session
        session.rollback()
    enforcement.remove()


def test_a_flush_cannot_write_a_row_outside_the_plan(east_session: Session) -> None:
    mine = east_session.scalars(select(Sale)).first()
    assert mine is not None and mine.region == "east"
    mine.amount = 1  # staying inside the plan is fine
    east_session.flush()
    mine.region = "west"
    with pytest.raises(AccessDenied) as caught:
        east_session.flush()
    assert caught.value.requirement == "rows:sales"
    east_session.rollback()
    east_session.add(Sale(id=1000, region="west", account_id=1, amount=5))
    with pytest.raises(AccessDenied):
        east_session.flush()
    east_session.rollback()
    east_session.add(Sale(id=1001, region="east", account_id=1, amount=5))
    east_session.flush()


def test_bulk_insert_rows_are_checked(east_session: Session) -> None:
    east_session.execute(insert(Sale), [{"id": 2000, "region": "east", "account_id": 1}])
    with pytest.raises(AccessDenied):
        east_session.execute(
            insert(Sale),
            [
                {"id": 2001, "region": "east", "account_id": 1},
                {"id": 2002, "region": None, "account_id": 1},
            ],
        )
    with pytest.raises(PlanUnsupported):  # the plan's column left to a default: cannot check
        east_session.execute(insert(Sale), [{"id": 2003, "account_id": 1}])


def test_bulk_update_and_delete_touch_only_visible_rows(east_session: Session) -> None:
    east_session.execute(update(Sale).values(amount=-1))
    east_session.execute(delete(Sale).where(Sale.amount != -1))  # nothing east is left
    east_session.commit()  # committed only to read it back with another plan
    try:
        with Session(east_session.get_bind()) as raw:  # a plain session, no enforcement
            changed = raw.execute(text("SELECT id FROM sales WHERE amount = -1")).scalars()
            assert sorted(changed) == visible_sales("east")
            assert raw.scalar(text("SELECT count(*) FROM sales")) == len(SALES)
    finally:
        fill(east_session.get_bind())  # type: ignore[arg-type]


def test_core_statements_on_a_protected_table_are_refused(east_session: Session) -> None:
    with pytest.raises(PlanUnsupported):
        east_session.execute(select(Sale.__table__))
    with pytest.raises(PlanUnsupported):
        east_session.execute(Sale.__table__.delete())
    # Raw SQL strings are beyond the ORM's sight (the README says so): not refused.
    assert east_session.execute(text("SELECT 1")).scalar() == 1


def test_admin_core_statements_run(engine: Engine) -> None:
    maker = sessionmaker(engine)
    admin = access_of("admins")
    enforcement = enforce_rows(maker, DATASETS, access=lambda: admin)
    try:
        with maker() as session:
            assert len(session.execute(select(Sale.__table__)).all()) == len(SALES)
    finally:
        enforcement.remove()


def test_a_session_is_bound_to_the_first_plan_it_ran_under(engine: Engine) -> None:
    maker = sessionmaker(engine)
    who = [access_of("admins")]
    enforcement = enforce_rows(maker, DATASETS, access=lambda: who[0])
    try:
        with maker() as session:
            west = session.get(Sale, 2)  # a west row, held in the identity map
            assert west is not None
            who[0] = access_of("sales-east")
            with pytest.raises(AccessDenied):
                session.scalars(select(Sale)).all()
            with pytest.raises(AccessDenied):
                session.get(Sale, 6)  # not in the identity map: a query, refused
            # Emptied, it holds nothing from the old plan and may serve the new one.
            session.close()
            assert session.get(Sale, 2) is None
            assert session.get(Sale, 4) is not None  # an east row
    finally:
        enforcement.remove()


def test_a_plan_the_renderer_cannot_express_raises(engine: Engine) -> None:
    maker = sessionmaker(engine)
    plan = RowPlan.where(Cmp("eq", "region_code", "east"))  # not a mapped attribute name
    access = Access(frozenset(), frozenset(), {"sales": plan}, TraceScope(()), None, "t")
    enforcement = enforce_rows(maker, DATASETS, access=lambda: access)
    try:
        with maker() as session, pytest.raises(PlanUnsupported):
            session.scalars(select(Sale)).all()
    finally:
        enforcement.remove()


def test_remove_uninstalls_the_listeners(engine: Engine) -> None:
    maker = sessionmaker(engine)
    enforce_rows(maker, DATASETS).remove()
    with maker() as session:
        assert len(session.scalars(select(Sale)).all()) == len(SALES)


def test_only_mapped_classes_are_accepted() -> None:
    with pytest.raises(TypeError):
        enforce_rows(sessionmaker(), {int: "sales"})
    with pytest.raises(TypeError):
        enforce_rows(object(), DATASETS)


# --- async: the same listeners, reached through AsyncSession's sync session ---------------


@pytest.mark.parametrize("persona", ["east", "auditor", "no-region"])
@pytest.mark.parametrize("how", ["async_sessionmaker", "AsyncSession"])
def test_async_sessions_carry_the_same_plan(tmp_path: Path, persona: str, how: str) -> None:
    pytest.importorskip("aiosqlite")
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    fill(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    who = access_of(*(PERSONAS[persona][0] or []))
    e = Expected(persona)

    async def inventory() -> dict[str, Any]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
        maker = async_sessionmaker(engine)
        target: Any = maker if how == "async_sessionmaker" else maker()
        enforcement = enforce_rows(target, DATASETS, access=lambda: who)
        session = target() if how == "async_sessionmaker" else target
        try:
            accounts = await session.scalars(select(Account).options(selectinload(Account.sales)))
            got = [r["id"] for r in SALES if await session.get(Sale, r["id"]) is not None]
            return {
                "select": sorted((await session.scalars(select(Sale.id))).all()),
                "count": await session.scalar(select(func.count()).select_from(Sale)),
                "get": got,
                "selectinload": sorted(s.id for a in accounts for s in a.sales),
                "update": (await session.execute(update(Sale).values(account_id=1))).rowcount,
            }
        finally:
            await session.rollback()
            await session.close()
            enforcement.remove()
            await engine.dispose()

    assert asyncio.run(inventory()) == {
        "select": e.sales,
        "count": e.count,
        "get": e.sales,
        "selectinload": e.joined,
        "update": e.count,
    }


def test_updates_that_could_escape_the_plan_are_refused(east_session: Session) -> None:
    hidden = next(r["id"] for r in SALES if r["region"] == "west")
    with pytest.raises(PlanUnsupported):  # bulk UPDATE by primary key ignores criteria
        east_session.execute(update(Sale), [{"id": hidden, "amount": 0}])
    for assignment in ({"region": "west"}, {Sale.region: "west"}, {"region_code": "west"}):
        with pytest.raises(PlanUnsupported):  # would move visible rows out of the plan
            east_session.execute(update(Sale).values(assignment))
    east_session.rollback()
    with Session(east_session.get_bind()) as raw:
        amount = text("SELECT amount FROM sales WHERE id = :id")
        assert raw.execute(amount, {"id": hidden}).scalar() != 0
        west = text("SELECT count(*) FROM sales WHERE region_code = 'west'")
        assert raw.execute(west).scalar() == len(visible_sales("west"))
    # Columns the plan does not read may be set; the criteria keep it to visible rows.
    assert east_session.execute(update(Sale).values(amount=7)).rowcount == Expected("east").count


class Refund(Sale):
    """A mapped subclass (single-table inheritance would do as well): the parent's plan
    holds for its rows, reads and writes alike."""

    __tablename__ = "refunds"
    id: Mapped[int] = mapped_column(ForeignKey("sales.id"), primary_key=True)
    reason: Mapped[str | None] = mapped_column(String(40))


def test_a_mapped_subclass_carries_its_parent_s_plan(east_session: Session) -> None:
    Refund.__table__.create(east_session.connection(), checkfirst=True)
    east_session.add(Refund(id=500, region="east", account_id=1, amount=1, reason="late"))
    east_session.flush()
    east_session.add(Refund(id=501, region="west", account_id=1, amount=1, reason="late"))
    with pytest.raises(AccessDenied):
        east_session.flush()
    east_session.rollback()
