"""PostgreSQL row-level security (iamscope.policy.render.rls) against a real server.

A superuser creates the table and installs the policy from ``create_policy_sql``; the
application connects as a plain login role, so RLS applies to it. For each principal,
the ids the database shows under the policy after ``apply_rls`` must equal the ids of
``to_sql(access.rows_for("sales"))`` on the same table and of ``to_predicate`` over the
same rows in Python: one resolution, three enforcement points, the same rows.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import psycopg  # a dev dependency: missing means a broken install, not a skip
import pytest

from iamscope.policy import (
    AttributeSpec,
    Binding,
    CompiledPolicy,
    Policy,
    Role,
    RoleRows,
    policy_from_mapping,
)
from iamscope.policy.access import Access, AttributeValue
from iamscope.policy.render.python import to_predicate
from iamscope.policy.render.rls import apply_rls, create_policy_sql, rls_settings
from iamscope.policy.render.sql import quote_identifier, to_sql
from iamscope.policy.rows import And, AttrRef, Cmp, UnsupportedPlan
from iamscope.policy.traces import TraceScope
from iamscope.tokens import Principal

Row = dict[str, Any]

INJECTION = "'; DROP TABLE sales; --"
BACKSLASH = "O'Brien\\"  # a quote and a trailing backslash: breaks naive quoting both ways
COMMA = "a,b"
DQUOTE = 'x"y'
REGIONS = ["east", "west", "north", "south", "Zürich", "O'Brien", COMMA, None]
ACCOUNTS = [f"acct-{n:02d}" for n in range(6)] + [INJECTION, BACKSLASH, "東京", DQUOTE, "", None]
OWNERS = ["alice", "bob", "carol", "O'Brien", COMMA, "東京"]
COLUMNS = ("id", "region", "account", "amount", "deleted", "owner")


def make_rows(count: int = 240, seed: int = 20261123) -> list[Row]:
    rng = random.Random(seed)
    return [
        {
            "id": row_id,
            "region": rng.choice(REGIONS),
            "account": rng.choice(ACCOUNTS),
            "amount": None if rng.random() < 0.15 else rng.randint(-50, 1000),
            "deleted": rng.random() < 0.3,
            "owner": rng.choice(OWNERS),
        }
        for row_id in range(1, count + 1)
    ]


ROWS = make_rows()
ALL_IDS = frozenset(row["id"] for row in ROWS)

POLICY = {
    "version": "rls-1",
    "attributes": {
        "region": {"multi": True},
        "account": {"multi": False},
        "owner": {"multi": False, "claim": "preferred_username"},
        "teams": {"multi": True, "claim": "teams"},
    },
    "roles": {
        "analyst": {"rows": {"sales": {"region": "$region"}}},
        "admin": {"rows": {"sales": "all"}},
        "auditor": {
            "rows": {
                "sales": [
                    {"account": {"ne": "$account"}, "deleted": False},
                    {"region": {"not_in": "$region"}, "amount": {"lt": 100}},
                ]
            }
        },
        "reviewer": {
            "rows": {
                "sales": [
                    {"not": {"owner": "$owner"}, "amount": {"ge": 900}},
                    {"account": {"in": "$teams"}},
                    {"region": {"ne": "$teams"}, "deleted": True, "amount": {"gt": 950}},
                ]
            }
        },
        "floor": {
            "rows": {
                "sales": [
                    {"owner": {"lt": "$owner"}, "amount": {"gt": 500}},
                    {"region": None, "amount": {"le": 10.5}},
                    {"account": [BACKSLASH, INJECTION, "東京"]},
                    {"or": [{"region": {"ne": "north"}}, {"deleted": True}], "amount": {"lt": -40}},
                ]
            }
        },
        "elsewhere": {"rows": {"other": "all"}},
    },
    "bindings": [
        {"groups": ["sales-east"], "roles": ["analyst"], "attributes": {"region": ["east"]}},
        {"groups": ["sales-west"], "roles": ["analyst"], "attributes": {"region": ["west"]}},
        {"groups": ["admins"], "roles": ["admin"]},
        {"groups": ["audit"], "roles": ["auditor"], "attributes": {"account": "acct-03"}},
        {"groups": ["audit-bare"], "roles": ["auditor"]},
        {
            "groups": ["audit-east"],
            "roles": ["auditor"],
            "attributes": {"region": ["east", "Zürich"]},
        },
        {"groups": ["review"], "roles": ["reviewer"]},
        {"groups": ["floor"], "roles": ["floor"]},
        {"groups": ["elsewhere"], "roles": ["elsewhere"]},
    ],
}


def principal(*groups: str, **claims: Any) -> Principal:
    return Principal(
        issuer="corp",
        issuer_url="https://corp.example",
        subject="s",
        kind="user",
        expires_at=1e10,
        groups=frozenset(groups),
        claims=claims,
    )


PRINCIPALS: dict[str, Principal] = {
    "east": principal("sales-east"),
    "east-and-west": principal("sales-east", "sales-west"),
    "admin": principal("admins"),
    "admin-and-analyst": principal("admins", "sales-east"),
    "no-roles": principal("strangers"),
    "auditor": principal("audit"),
    "auditor-without-attributes": principal("audit-bare"),
    "auditor-with-region-only": principal("audit-east"),
    "auditor-and-analyst": principal("audit", "sales-west"),
    "reviewer-hostile-claims": principal(
        "review", preferred_username="O'Brien", teams=["東京", INJECTION, COMMA, DQUOTE, BACKSLASH]
    ),
    "reviewer-without-claims": principal("review"),
    "reviewer-owner-only": principal("review", preferred_username=COMMA),
    "floor": principal("floor", preferred_username="bob"),
    "floor-without-owner": principal("floor"),
    "other-dataset-only": principal("elsewhere"),
}


@pytest.fixture(scope="module")
def compiled() -> CompiledPolicy:
    return CompiledPolicy(policy_from_mapping(POLICY))


# --- the database ----------------------------------------------------------------------


@dataclass
class Database:
    admin: Any  # a superuser connection, autocommit: RLS never applies to it
    app_dsn: str  # a plain login role's DSN, the table's search_path set
    schema: str
    app_role: str

    def connect_app(self, **kwargs: Any) -> Any:
        return psycopg.connect(self.app_dsn, **kwargs)

    def copy_table(self, name: str) -> None:
        """A private copy of ``sales`` for tests that install other policies."""
        table = quote_identifier(name)
        self.admin.execute(f"CREATE TABLE {table} (LIKE sales INCLUDING ALL)")
        self.admin.execute(f"INSERT INTO {table} SELECT * FROM sales")  # noqa: S608
        self.admin.execute(f"GRANT SELECT ON {table} TO {quote_identifier(self.app_role)}")

    def install(self, policy: Policy, table: str = "sales", **kwargs: Any) -> None:
        for statement in create_policy_sql(policy, "sales", table, COLUMNS, **kwargs):
            self.admin.execute(statement)

    def filtered_ids(self, access: Access, table: str = "sales") -> set[int]:
        """What to_sql's fragment selects, run without RLS (the superuser)."""
        where, params = to_sql(access.rows_for("sales"), COLUMNS, param_style="format")
        query = f"SELECT id FROM {quote_identifier(table)} WHERE {where}"  # noqa: S608
        return {row_id for (row_id,) in self.admin.execute(query, params)}

    def visible_ids(self, conn: Any, access: Access | None, table: str = "sales") -> set[int]:
        """What the app role sees under RLS, in one transaction, after apply_rls."""
        with conn.transaction():
            if access is not None:
                apply_rls(conn, access)
            query = f"SELECT id FROM {quote_identifier(table)}"  # noqa: S608
            return {row_id for (row_id,) in conn.execute(query)}


@pytest.fixture(scope="module")
def db(postgres_dsn: str, compiled: CompiledPolicy) -> Iterator[Database]:
    schema = f"iamscope_rls_{os.getpid()}"
    app_role = f"iamscope_rls_app_{os.getpid()}"
    password = secrets.token_hex(16)  # unused under trust auth; lets a given DSN's server work
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"SET search_path TO {schema}")
        admin.execute(
            'CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT COLLATE "C",'
            ' account TEXT COLLATE "C", amount INTEGER, deleted BOOLEAN NOT NULL,'
            ' owner TEXT COLLATE "C" NOT NULL)'
        )
        with admin.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO sales VALUES (%(id)s, %(region)s, %(account)s, %(amount)s,"
                " %(deleted)s, %(owner)s)",
                ROWS,
            )
        # CREATE ROLE takes no parameters; the password is hex, safe to inline.
        admin.execute(f"CREATE ROLE {app_role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {app_role}")
        admin.execute(f"GRANT SELECT ON sales TO {app_role}")
        app_dsn = psycopg.conninfo.make_conninfo(
            postgres_dsn, user=app_role, password=password, options=f"-c search_path={schema}"
        )
        database = Database(admin, app_dsn, schema, app_role)
        database.install(compiled.policy)
        try:
            yield database
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.execute(f"DROP OWNED BY {app_role}")
            admin.execute(f"DROP ROLE {app_role}")


@pytest.fixture
def app(db: Database) -> Iterator[Any]:
    with db.connect_app() as conn:
        yield conn


def python_ids(access: Access) -> set[int]:
    keep = to_predicate(access.rows_for("sales"), columns=COLUMNS)
    return {row["id"] for row in ROWS if keep(row)}


# --- one resolution, three enforcement points ------------------------------------------


@pytest.mark.parametrize("name", list(PRINCIPALS))
def test_rls_shows_the_rows_the_resolved_plan_selects(
    db: Database, app: Any, compiled: CompiledPolicy, name: str
) -> None:
    access = compiled.resolve(PRINCIPALS[name])
    expected = db.filtered_ids(access)
    assert python_ids(access) == expected, "to_predicate disagrees with to_sql"
    assert db.visible_ids(app, access) == expected


def test_principals_cover_all_none_and_proper_subsets(compiled: CompiledPolicy) -> None:
    # The equality above means little if every principal saw everything or nothing.
    seen = {name: python_ids(compiled.resolve(p)) for name, p in PRINCIPALS.items()}
    assert seen["admin"] == seen["admin-and-analyst"] == ALL_IDS
    for name in ("no-roles", "auditor-without-attributes", "reviewer-without-claims"):
        assert seen[name] == set(), name
    assert seen["other-dataset-only"] == set()
    subsets = [ids for ids in seen.values() if ids and ids != ALL_IDS]
    assert len(subsets) >= 8
    assert len({frozenset(ids) for ids in subsets}) == len(subsets)


def test_missing_attribute_never_widens(compiled: CompiledPolicy) -> None:
    # `account ne $account` over a missing account would match most rows if a missing
    # value meant "no constraint"; the rule must be dropped instead.
    bare = compiled.resolve(PRINCIPALS["auditor-without-attributes"])
    assert bare.missing == {"account", "region"}
    region_only = compiled.resolve(PRINCIPALS["auditor-with-region-only"])
    assert region_only.missing == {"account"}
    ids = python_ids(region_only)
    assert ids and all(
        row["amount"] is not None and row["amount"] < 100 for row in ROWS if row["id"] in ids
    )


# --- the settings ----------------------------------------------------------------------


def test_settings_are_json_values_of_roles_and_attributes(compiled: CompiledPolicy) -> None:
    access = compiled.resolve(PRINCIPALS["reviewer-hostile-claims"])
    settings = rls_settings(access)
    assert set(settings) == {"iamscope.roles", "iamscope.attributes"}
    assert json.loads(settings["iamscope.roles"]) == ["reviewer"]
    assert json.loads(settings["iamscope.attributes"]) == {
        "owner": ["O'Brien"],
        "teams": ["東京", INJECTION, COMMA, DQUOTE, BACKSLASH],
    }
    assert rls_settings(access, prefix="app_rls").keys() == {"app_rls.roles", "app_rls.attributes"}


def test_hostile_setting_values_round_trip_as_data(app: Any, compiled: CompiledPolicy) -> None:
    access = compiled.resolve(PRINCIPALS["reviewer-hostile-claims"])
    with app.transaction():
        apply_rls(app, access)
        (attributes,) = app.execute(
            "SELECT current_setting('iamscope.attributes')::jsonb"
        ).fetchone()
        (teams,) = app.execute(
            "SELECT array_agg(v) FROM jsonb_array_elements_text("
            "current_setting('iamscope.attributes')::jsonb -> 'teams') AS v"
        ).fetchone()
    assert attributes == json.loads(rls_settings(access)["iamscope.attributes"])
    assert teams == ["東京", INJECTION, COMMA, DQUOTE, BACKSLASH]


def test_settings_end_with_the_transaction(
    db: Database, app: Any, compiled: CompiledPolicy
) -> None:
    admin = compiled.resolve(PRINCIPALS["admin"])
    east = compiled.resolve(PRINCIPALS["east"])
    assert db.visible_ids(app, admin) == ALL_IDS  # commits
    # The same pooled connection, next request: nothing of the admin's is left.
    assert db.visible_ids(app, None) == set()
    (roles,) = app.execute("SELECT current_setting('iamscope.roles', true)").fetchone()
    app.rollback()
    assert roles in ("", None)
    assert db.visible_ids(app, east) == db.filtered_ids(east)
    # A rolled-back transaction ends them just the same.
    with pytest.raises(psycopg.errors.DivisionByZero), app.transaction():
        apply_rls(app, admin)
        app.execute("SELECT 1 / 0")
    assert db.visible_ids(app, None) == set()


def test_a_second_principal_replaces_the_first_whole(
    db: Database, app: Any, compiled: CompiledPolicy
) -> None:
    with_account = compiled.resolve(PRINCIPALS["auditor"])
    without = compiled.resolve(PRINCIPALS["auditor-with-region-only"])
    assert "account" in with_account.attributes and "account" not in without.attributes
    with app.transaction():
        apply_rls(app, with_account)
        apply_rls(app, without)  # must not inherit the first principal's account
        ids = {row_id for (row_id,) in app.execute("SELECT id FROM sales")}
    assert ids == db.filtered_ids(without) != db.filtered_ids(with_account)


def test_no_roles_and_no_settings_see_nothing(
    db: Database, app: Any, compiled: CompiledPolicy
) -> None:
    nobody = compiled.resolve(PRINCIPALS["no-roles"])
    assert nobody.roles == frozenset()
    assert json.loads(rls_settings(nobody)["iamscope.roles"]) == []
    assert db.visible_ids(app, nobody) == set()
    assert db.visible_ids(app, None) == set()


def test_forged_settings_fail_closed(app: Any) -> None:
    # Not a defence against untrusted SQL (it could set anything); a check that odd
    # shapes never read as "present".
    forged = [
        ('{"admin": true}', "{}"),
        ('"admin"', "{}"),
        ('["auditor"]', '{"account": "acct-03", "region": {"east": 1}}'),
        ('["auditor"]', '{"account": [], "region": null}'),
        ('["auditor"]', '{"account": ["acct-03", "acct-04"]}'),
        ('["analyst"]', '["east"]'),
    ]
    for roles, attributes in forged:
        with app.transaction():
            app.execute(
                "SELECT set_config('iamscope.roles', %s, true),"
                " set_config('iamscope.attributes', %s, true)",
                [roles, attributes],
            )
            assert list(app.execute("SELECT id FROM sales")) == [], (roles, attributes)


def test_apply_rls_refuses_autocommit(db: Database, compiled: CompiledPolicy) -> None:
    with db.connect_app(autocommit=True) as conn, pytest.raises(RuntimeError, match="transaction"):
        apply_rls(conn, compiled.resolve(PRINCIPALS["admin"]))


def test_apply_rls_accepts_a_cursor(db: Database, app: Any, compiled: CompiledPolicy) -> None:
    east = compiled.resolve(PRINCIPALS["east"])
    with app.transaction(), app.cursor() as cursor:
        apply_rls(cursor, east)
        ids = {row_id for (row_id,) in cursor.execute("SELECT id FROM sales")}
    assert ids == db.filtered_ids(east)


# --- the statements ----------------------------------------------------------------------


def test_statements_enable_force_drop_and_create(compiled: CompiledPolicy) -> None:
    statements = create_policy_sql(compiled.policy, "sales", "sales", COLUMNS)
    assert statements[:3] == [
        'ALTER TABLE "sales" ENABLE ROW LEVEL SECURITY',
        'ALTER TABLE "sales" FORCE ROW LEVEL SECURITY',
        'DROP POLICY IF EXISTS "iamscope_sales" ON "sales"',
    ]
    assert statements[3].startswith('CREATE POLICY "iamscope_sales" ON "sales" AS PERMISSIVE')
    # Literals are quoted for E'' strings: quotes and backslashes doubled.
    assert "E'O''Brien\\\\'" in statements[3]
    assert "E'''; DROP TABLE sales; --'" in statements[3]
    named = create_policy_sql(
        compiled.policy, "sales", "t", COLUMNS, "app", schema="s", name="p", command="ALL"
    )
    assert named[2] == 'DROP POLICY IF EXISTS "p" ON "s"."t"'
    assert "FOR ALL" in named[3] and "'app.roles'" in named[3]


def test_dataset_no_role_grants_is_false(compiled: CompiledPolicy) -> None:
    statement = create_policy_sql(compiled.policy, "nowhere", "sales", COLUMNS)[3]
    assert statement.endswith("USING (false)")


def test_reinstalling_is_idempotent_and_literals_ignore_standard_conforming_strings(
    db: Database, app: Any, compiled: CompiledPolicy
) -> None:
    db.admin.execute("SET standard_conforming_strings = off")
    try:
        db.install(compiled.policy)  # DROP POLICY IF EXISTS makes a second run safe
    finally:
        db.admin.execute("SET standard_conforming_strings = on")
    for name in ("floor", "reviewer-hostile-claims", "auditor"):
        access = compiled.resolve(PRINCIPALS[name])
        assert db.visible_ids(app, access) == db.filtered_ids(access), name


def test_custom_prefix_and_command_all(db: Database, app: Any, compiled: CompiledPolicy) -> None:
    db.copy_table("sales_all")
    db.admin.execute(f"GRANT INSERT ON sales_all TO {quote_identifier(db.app_role)}")
    db.install(compiled.policy, "sales_all", prefix="app_rls", command="ALL")
    east = compiled.resolve(PRINCIPALS["east"])
    expected = db.filtered_ids(east, "sales_all")
    with app.transaction():
        apply_rls(app, east)  # the default prefix: not the settings this table reads
        assert list(app.execute("SELECT id FROM sales_all")) == []
    with app.transaction():
        apply_rls(app, east, prefix="app_rls")
        ids = {row_id for (row_id,) in app.execute("SELECT id FROM sales_all")}
        # FOR ALL: a write must produce a row the principal could read.
        app.execute("INSERT INTO sales_all VALUES (9001, 'east', NULL, 1, false, 'x')")
    assert ids == expected
    assert db.filtered_ids(east, "sales_all") == expected | {9001}
    violation = pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security")
    with violation, app.transaction():
        apply_rls(app, east, prefix="app_rls")
        app.execute("INSERT INTO sales_all VALUES (9002, 'west', NULL, 1, false, 'x')")


def test_empty_multi_valued_attribute_behaves_as_resolution_says(db: Database, app: Any) -> None:
    # The loader refuses empty attribute lists; a hand-built policy can still have one.
    # Resolution keeps such an attribute (present, no values): `in` is false for every
    # row and `not_in` true for every row, NULLs included. RLS must agree.
    policy = Policy(
        version="empty",
        attributes={"region": AttributeSpec("region", multi=True)},
        roles={
            "r": Role(
                "r",
                rows={
                    "sales": RoleRows(
                        rules=(
                            And((Cmp("ne", "region", AttrRef("region")), Cmp("lt", "amount", 0))),
                            Cmp("eq", "region", AttrRef("region")),
                        )
                    )
                },
            )
        },
        bindings=(Binding(0, "b", ("r",), groups=frozenset({"g"}), attributes={"region": ()}),),
    )
    access = CompiledPolicy(policy).resolve(principal("g"))
    assert access.attributes["region"].values == ()
    db.copy_table("sales_empty")
    db.install(policy, "sales_empty")
    expected = db.filtered_ids(access, "sales_empty")
    assert expected == {r["id"] for r in ROWS if r["amount"] is not None and r["amount"] < 0}
    assert db.visible_ids(app, access, "sales_empty") == expected


def test_attribute_against_a_numeric_column_is_refused_by_postgres(db: Database) -> None:
    # Attribute values compare as text; PostgreSQL has no integer = text operator, so
    # the policy fails to install instead of comparing by some other rule.
    policy = policy_from_mapping(
        {
            "attributes": {"limit": {"multi": False}},
            "version": "n",
            "roles": {"r": {"rows": {"sales": {"amount": {"lt": "$limit"}}}}},
            "bindings": [{"groups": ["g"], "roles": ["r"], "attributes": {"limit": "100"}}],
        }
    )
    db.copy_table("sales_numeric")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        db.install(policy, "sales_numeric")


# --- refusals, no database needed ----------------------------------------------------------


def hand_policy(*rules: Any, multi: bool = False, values: tuple[Any, ...] = ("x",)) -> Policy:
    return Policy(
        version="t",
        attributes={"a": AttributeSpec("a", multi=multi)},
        roles={"r": Role("r", rows={"sales": RoleRows(rules=tuple(rules))})},
        bindings=(Binding(0, "b", ("r",), groups=frozenset({"g"}), attributes={"a": values}),),
    )


REFUSED: list[Any] = [
    pytest.param(hand_policy(Cmp("eq", "secret", "x")), id="column-not-allowed"),
    pytest.param(hand_policy(Cmp("eq", "secret", AttrRef("a"))), id="attr-column-not-allowed"),
    pytest.param(hand_policy(Cmp("lt", "region", AttrRef("a")), multi=True), id="multi-ordering"),
    pytest.param(hand_policy(Cmp("is_null", "region", AttrRef("a"))), id="attr-null-test"),
    pytest.param(hand_policy(Cmp("eq", "region", AttrRef("nope"))), id="undeclared-attribute"),
    pytest.param(hand_policy(Cmp("in", "region", ("x", AttrRef("a")))), id="attr-in-list"),
    pytest.param(hand_policy(Cmp("eq", "region", AttrRef("a")), values=(3,)), id="int-value"),
    pytest.param(hand_policy(Cmp("like", "region", "e%")), id="unknown-operator"),
    pytest.param(hand_policy(And(())), id="empty-and"),
    pytest.param(hand_policy(Cmp("eq", "region", "a\x00b")), id="nul-literal"),
    pytest.param(hand_policy(Cmp("eq", "amount", float("nan"))), id="nan-literal"),
    pytest.param(hand_policy(Cmp("in", "amount", (1, "1"))), id="mixed-kinds"),
]


@pytest.mark.parametrize("policy", REFUSED)
def test_create_policy_sql_refuses_what_it_cannot_express(policy: Policy) -> None:
    with pytest.raises(UnsupportedPlan):
        create_policy_sql(policy, "sales", "sales", COLUMNS)


def test_caller_slips_are_refused() -> None:
    policy = hand_policy(Cmp("eq", "region", "x"))
    with pytest.raises(ValueError, match="prefix"):
        create_policy_sql(policy, "sales", "sales", COLUMNS, "iam.scope")
    with pytest.raises(ValueError, match="command"):
        create_policy_sql(policy, "sales", "sales", COLUMNS, command="DELETE")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        create_policy_sql(policy, "sales", "sales", "region")
    with pytest.raises(UnsupportedPlan):
        create_policy_sql(policy, "sales", "sa\x00les", COLUMNS)


def test_rls_settings_refuse_values_postgres_cannot_hold() -> None:
    def access(*values: Any) -> Access:
        return Access(
            roles=frozenset({"r"}),
            permissions=frozenset(),
            rows=MappingProxyType({}),
            traces=TraceScope(()),
            owner=None,
            policy_version="t",
            attributes={"a": AttributeValue.of(values, ("test",) * len(values))},
        )

    for bad in ("nul\x00", "\ud800", float("nan"), float("inf")):
        with pytest.raises(UnsupportedPlan):
            rls_settings(access(bad))
    with pytest.raises(ValueError, match="prefix"):
        rls_settings(access("x"), prefix="x; DROP")
    assert json.loads(rls_settings(access("x", 1, True))["iamscope.attributes"]) == {
        "a": ["x", 1, True]
    }
