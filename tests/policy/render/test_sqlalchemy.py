"""Row plans in SQLAlchemy ORM queries: a mapped class is an allow-list of attributes."""

from __future__ import annotations

import pytest
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from iamscope.policy import ALL, NONE, And, Cmp, Or, RowPlan, to_predicate
from iamscope.policy.render.sqlalchemy import to_sqlalchemy
from iamscope.policy.rows import UnsupportedPlan


class Base(DeclarativeBase):
    pass


class Sale(Base):
    __tablename__ = "sales"
    id: Mapped[int] = mapped_column(primary_key=True)
    # The attribute is "region"; the column is named differently in the database.
    region: Mapped[str | None] = mapped_column("region_code", String)
    amount: Mapped[int | None]


ROWS = [
    {"id": 1, "region": "east", "amount": 10},
    {"id": 2, "region": "west", "amount": 50},
    {"id": 3, "region": None, "amount": 5},
    {"id": 4, "region": "east", "amount": None},
]


@pytest.fixture(scope="module")
def session() -> Session:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    session = Session(engine)
    session.add_all(Sale(**row) for row in ROWS)
    session.commit()
    return session


@pytest.mark.parametrize(
    "plan",
    [
        ALL,
        NONE,
        RowPlan.where(Cmp("in", "region", ("east",))),
        RowPlan.where(Or((Cmp("eq", "region", "west"), Cmp("lt", "amount", 10)))),
        RowPlan.where(And((Cmp("ne", "region", "west"), Cmp("is_null", "amount", False)))),
    ],
)
def test_orm_query_sees_what_the_predicate_sees(session: Session, plan: RowPlan) -> None:
    got = {s.id for s in session.scalars(select(Sale).where(to_sqlalchemy(plan, Sale)))}
    keep = to_predicate(plan)
    assert got == {r["id"] for r in ROWS if keep(r)}


def test_orm_allow_list_is_the_mapped_attributes() -> None:
    with pytest.raises(UnsupportedPlan):
        to_sqlalchemy(RowPlan.where(Cmp("eq", "region_code", "east")), Sale)
    with pytest.raises(TypeError):
        to_sqlalchemy(ALL, int)
