"""PostgreSQL row-level security from a policy: the CREATE POLICY statements and the settings.

Two halves meet in the database:

* Install time. :func:`create_policy_sql` turns the policy's role *templates* for one
  dataset into ``ALTER TABLE … ENABLE / FORCE ROW LEVEL SECURITY`` and one
  ``CREATE POLICY … USING (…)``, run once by a migration as the table owner. The
  USING expression learns who is asking only from two settings.
* Request time. :func:`apply_rls` writes the principal's roles and attribute values
  into those settings with ``set_config(name, value, true)``. They are
  transaction-local: COMMIT or ROLLBACK ends them, so a pooled connection cannot carry
  one request's principal into the next, and a transaction that never called
  :func:`apply_rls` sees no rows.

The settings (``prefix`` is ``iamscope`` unless given), values only, never SQL:

==========================  ==================================================
``<prefix>.roles``          JSON array of role names, ``["analyst"]``
``<prefix>.attributes``     JSON object, attribute → array, ``{"region": ["east"]}``
==========================  ==================================================

Both are always set together, so applying a second principal in one transaction
replaces the first whole: an attribute the second lacks cannot linger. One object for
all attributes, rather than a setting each, also keeps attribute names out of setting
names, which PostgreSQL compares case-insensitively.

The rows visible under the policy are exactly those of
``to_sql(CompiledPolicy(policy).resolve(p).rows_for(dataset), columns)``:

* each role granting the dataset contributes ``(<role in roles> AND (<rule> OR …))``,
  or the role check alone for ``all``; the contributions are ORed; none at all, or no
  role in the settings, is ``false``;
* a rule reading ``$attr`` is ``(<every attribute it reads is set> AND <rule>)``, the
  guard never NULL: an attribute the principal lacks drops the *whole* rule, as
  resolution does, so ``ne`` / ``not_in`` / ``NOT`` over a missing attribute never
  widens. A multi-valued attribute is present when it is a JSON array; a single-valued
  one when it is an array of exactly one value;
* multi-valued attributes compare as ``= ANY(…)`` / ``<> ALL(…)``, which keep the
  renderer's NULL semantics (``x IN ()`` is false and ``x NOT IN ()`` true for every
  row; a NULL column is unknown otherwise); single-valued ones take their one value;
* literals from the policy become SQL literals typed as psycopg binds them (text as an
  untyped ``E'…'`` string, integers, ``double precision`` floats, booleans), so
  comparisons resolve as in :func:`~iamscope.policy.render.sql.to_sql`.

**Attribute values compare as text.** They arrive as JSON strings (claim values always
are), so a rule comparing an attribute with a text or varchar column works, and one
comparing it with a numeric or boolean column is refused by PostgreSQL when the
CREATE POLICY runs (``operator does not exist: integer = text``) rather than cast
with rules that could differ from the other renderers. A binding that gives an
attribute a number or boolean is refused here when a rule of the dataset reads it.
Whatever else cannot be rendered exactly raises
:class:`~iamscope.policy.rows.UnsupportedPlan`, as the other renderers do.

Trust: whoever can run SQL as the application's database role can call
``set_config`` too. Settings-based RLS guards against the application's own query
mistakes (a forgotten WHERE), not against untrusted SQL. Superusers and ``BYPASSRLS``
roles skip RLS altogether; FORCE makes it apply to the table owner as well. Other
permissive policies on the same table are ORed with this one by PostgreSQL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Literal, Protocol

from iamscope.policy.access import Access
from iamscope.policy.model import AttributeSpec, Policy
from iamscope.policy.render.conditions import (
    SCALAR_OPS,
    ConditionRenderer,
    checked_column,
    checked_text,
)
from iamscope.policy.render.sql import (
    FALSE_SQL,
    TRUE_SQL,
    allowed_columns,  # the allow-list shape to_sql accepts; one definition for both
    quote_identifier,
)
from iamscope.policy.rows import And, AttrRef, Cmp, Condition, Not, Or, Scalar, UnsupportedPlan

__all__ = ["apply_rls", "create_policy_sql", "rls_settings"]

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Executes(Protocol):
    """A psycopg connection or cursor, or any DB-API cursor taking ``%s`` placeholders."""

    def execute(self, query: str, params: Sequence[str], /) -> object: ...


class HasCursor(Protocol):
    """A DB-API connection without ``execute`` of its own (psycopg2)."""

    def cursor(self) -> Executes: ...


# --- request time: the settings ---------------------------------------------------------


def _checked_prefix(prefix: str) -> str:
    # A custom setting's name is `<prefix>.<name>`; PostgreSQL wants identifiers there.
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix must be a plain identifier, not {prefix!r}")
    return prefix


def _json_value(name: str, value: object) -> Scalar:
    if isinstance(value, str):
        return checked_text(value, f"a value of attribute {name!r}")
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):  # JSON has no NaN or infinity
        return value
    raise UnsupportedPlan(f"attribute {name!r} has a value JSON cannot carry exactly: {value!r}")


def _json(value: object) -> str:
    # ASCII-only JSON: the setting survives any client encoding, and PostgreSQL decodes
    # the \u escapes (surrogate pairs included) when it parses the jsonb.
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def rls_settings(access: Access, *, prefix: str = "iamscope") -> dict[str, str]:
    """The settings that tell the USING expressions who is asking: name → JSON text.

    Apply them inside a transaction with ``SELECT set_config(name, value, true)`` (or
    :func:`apply_rls`). Every attribute of ``access`` is included, since which ones a
    table's policy reads is known only to the policy.
    """
    prefix = _checked_prefix(prefix)
    roles = sorted(checked_text(role, "a role name") for role in access.roles)
    attributes = {
        name: [_json_value(name, v) for v in value.values]
        for name, value in sorted(access.attributes.items())
    }
    return {f"{prefix}.roles": _json(roles), f"{prefix}.attributes": _json(attributes)}


def apply_rls(target: Executes | HasCursor, access: Access, *, prefix: str = "iamscope") -> None:
    """Set :func:`rls_settings` for the current transaction, values as bound parameters.

    ``target`` is a psycopg 3 connection or cursor, a psycopg2 connection or cursor, or
    another DB-API cursor with ``%s`` placeholders. Call it after the transaction has
    begun and before the first query of the request. Raises ``RuntimeError`` when the
    driver reports no open transaction afterwards (autocommit): the settings would
    already be gone and every query would see no rows.
    """
    settings = rls_settings(access, prefix=prefix)
    query = "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in settings)
    params = [part for item in settings.items() for part in item]
    if hasattr(target, "execute"):
        target.execute(query, params)
    else:
        target.cursor().execute(query, params)
    connection = getattr(target, "connection", target)
    status = getattr(getattr(connection, "info", None), "transaction_status", None)
    # libpq's PQTRANS_IDLE is 0; psycopg 3 (an IntEnum) and psycopg2 both report it.
    if status is not None and status == 0:
        raise RuntimeError(
            "apply_rls ran outside a transaction (autocommit?): the settings ended with"
            " the statement; open a transaction first"
        )


# --- install time: the policy -----------------------------------------------------------


def _text_literal(text: str) -> str:
    """``text`` as an SQL string literal, read the same whatever standard_conforming_strings is.

    An ``E'…'`` string always treats backslash as an escape, so doubling backslashes
    and quotes is enough; a plain ``'…'`` would change meaning with that setting.
    """
    checked_text(text, "a literal")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _literal(value: Scalar) -> str:
    """A policy literal, typed as psycopg would bind it (so comparisons resolve alike)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return f"({value})" if value < 0 else str(value)
    if isinstance(value, float):
        # psycopg binds a float as float8; a bare 0.1 would be numeric and compare differently.
        return f"CAST({_text_literal(repr(value))} AS double precision)"
    return _text_literal(value)


def _references(c: Condition) -> dict[str, None]:
    """The attributes a rule reads, in order of first use."""
    if isinstance(c, Cmp):
        return {c.value.name: None} if isinstance(c.value, AttrRef) else {}
    if isinstance(c, Not):
        return _references(c.item)
    found: dict[str, None] = {}
    for item in c.items if isinstance(c, And | Or) else ():
        found.update(_references(item))
    return found


class _UsingRenderer(ConditionRenderer[str, str]):
    def __init__(
        self, policy: Policy, columns: Collection[str] | Mapping[str, str], prefix: str
    ) -> None:
        self.specs: Mapping[str, AttributeSpec] = policy.attributes
        self.columns = allowed_columns(columns)
        # NULLIF: once a transaction that set them has ended, the settings read as ''
        # rather than NULL, and '' is no JSON.
        setting = "NULLIF(current_setting({}, true), '')::jsonb"
        self.roles = setting.format(_text_literal(f"{prefix}.roles"))
        self.attributes = setting.format(_text_literal(f"{prefix}.attributes"))

    # Every read of the settings sits in an uncorrelated sub-SELECT: PostgreSQL runs it
    # at most once per query (an InitPlan) instead of parsing the JSON for every row, and
    # `column = ANY ($n)` stays usable as an index condition.

    def column(self, cmp: Cmp) -> str:
        name = checked_column(cmp)
        if name not in self.columns:
            raise UnsupportedPlan(f"column {name!r} is not in the allowed columns")
        return quote_identifier(self.columns[name])

    def role_check(self, role: str) -> str:
        member = f"{self.roles} @> jsonb_build_array({_text_literal(role)}::text)"
        return f"(SELECT COALESCE({member}, false))"

    def attribute(self, name: str) -> str:
        """The attribute's JSON value (NULL when absent), to use inside a sub-SELECT."""
        return f"({self.attributes} -> {_text_literal(name)})"

    def spec(self, name: str) -> AttributeSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise UnsupportedPlan(f"${name} is not a declared attribute")
        return spec

    def present(self, name: str) -> str:
        """TRUE when the principal has the attribute, FALSE otherwise; never NULL or an error."""
        value = self.attribute(name)
        if self.spec(name).multi:
            return f"(SELECT COALESCE(jsonb_typeof({value}) = 'array', false))"
        # CASE fixes the order: jsonb_array_length raises on anything but an array.
        return (
            f"(SELECT CASE WHEN jsonb_typeof({value}) = 'array'"
            f" THEN jsonb_array_length({value}) = 1 ELSE false END)"
        )

    def rule(self, rule: Condition) -> str:
        sql = self.condition(rule)
        names = _references(rule)
        if not names:
            return sql
        guard = " AND ".join(self.present(name) for name in names)
        # The guard is TRUE or FALSE, never NULL, so AND gives the rule's own answer when
        # the attributes are there and FALSE when not. Plain AND rather than CASE keeps
        # the rule's comparisons visible to the planner for index scans.
        return f"({guard} AND {sql})"

    def comparison(self, cmp: Cmp) -> str:
        if isinstance(cmp.value, AttrRef):
            return self.attribute_comparison(cmp, cmp.value)
        return super().comparison(cmp)

    # Leaves with literal operands: the same SQL as to_sql, values as literals, and every
    # leaf in its own parentheses.

    def scalar(self, column: str, op: str, value: Scalar) -> str:
        return f"({column} {SCALAR_OPS[op]} {_literal(value)})"

    def membership(self, column: str, negate: bool, values: tuple[Scalar, ...]) -> str:
        keyword = "NOT IN" if negate else "IN"
        return f"({column} {keyword} ({', '.join(_literal(v) for v in values)}))"

    def null_test(self, column: str, is_null: bool) -> str:
        return f"({column} {'IS NULL' if is_null else 'IS NOT NULL'})"

    def constant(self, value: bool) -> str:
        return f"({TRUE_SQL if value else FALSE_SQL})"

    def all_of(self, items: tuple[str, ...]) -> str:
        return "(" + " AND ".join(items) + ")"

    def any_of(self, items: tuple[str, ...]) -> str:
        return "(" + " OR ".join(items) + ")"

    def negation(self, item: str, node: Condition) -> str:
        return f"(NOT {item})"

    def attribute_comparison(self, cmp: Cmp, ref: AttrRef) -> str:
        """A leaf reading ``$attr``, bound the way resolution binds it (``_bind_cmp``)."""
        column = self.column(cmp)
        multi = self.spec(ref.name).multi
        value = self.attribute(ref.name)
        # Nothing but an array reaches jsonb_array_elements_text, which raises on others:
        # AND does not promise to evaluate the guard first.
        array = f"CASE WHEN jsonb_typeof({value}) = 'array' THEN {value} END"
        values = f"ARRAY(SELECT jsonb_array_elements_text({array}))"
        if cmp.op == "in" or (multi and cmp.op == "eq"):
            return f"({column} = ANY ({values}))"
        if cmp.op == "not_in" or (multi and cmp.op == "ne"):
            return f"({column} <> ALL ({values}))"
        if cmp.op in SCALAR_OPS and not multi:
            return f"({column} {SCALAR_OPS[cmp.op]} (SELECT {value} ->> 0))"
        if cmp.op in SCALAR_OPS:
            # Resolution would take the first of the merged values, an order-dependent
            # answer; the loader refuses it too.
            raise UnsupportedPlan(f"{cmp.column} {cmp.op} {ref}: needs one value, {ref} is multi")
        raise UnsupportedPlan(f"{cmp.column} {cmp.op} {ref}: an attribute cannot feed {cmp.op!r}")


def _check_text_attributes(policy: Policy, names: Collection[str]) -> None:
    for binding in policy.bindings:
        for name in names:
            for value in binding.attributes.get(name, ()):
                if not isinstance(value, str):
                    raise UnsupportedPlan(
                        f"binding {binding.label!r} gives attribute {name!r} the non-text value"
                        f" {value!r}; row-level security compares attribute values as text"
                    )


def create_policy_sql(
    policy: Policy,
    dataset: str,
    table: str,
    columns: Collection[str] | Mapping[str, str],
    prefix: str = "iamscope",
    *,
    schema: str | None = None,
    name: str | None = None,
    command: Literal["SELECT", "ALL"] = "SELECT",
) -> list[str]:
    """Statements that make ``table`` show each principal the rows ``policy`` grants on ``dataset``.

    ``columns`` is the allow-list, as for :func:`~iamscope.policy.render.sql.to_sql`: plan
    column names, or a mapping from plan name to the table's real column name. ``table``
    (and ``schema``) are single identifiers, always quoted. The policy is named
    ``name`` (default ``<prefix>_<dataset>``) and covers ``command``: ``SELECT`` by
    default, so other commands find no permissive policy and are denied; ``ALL`` also
    limits writes to rows the principal could read. Run the statements in order,
    without query parameters (they contain no placeholders), as the table's owner.

    Raises :class:`UnsupportedPlan` for anything the SQL could not express exactly.
    """
    prefix = _checked_prefix(prefix)
    if command not in ("SELECT", "ALL"):
        raise ValueError(f"command must be 'SELECT' or 'ALL', not {command!r}")
    renderer = _UsingRenderer(policy, columns, prefix)
    terms: list[str] = []
    used: dict[str, None] = {}
    for role in policy.roles.values():
        grant = role.rows.get(dataset)
        if grant is None:
            continue
        check = renderer.role_check(role.name)
        if grant.all:
            terms.append(check)  # rules beside `all` add nothing, as in resolution
            continue
        rules = [renderer.rule(rule) for rule in grant.rules]
        for rule in grant.rules:
            used.update(_references(rule))
        if rules:
            terms.append(f"({check} AND ({' OR '.join(rules)}))")
    _check_text_attributes(policy, used)
    using = "\n   OR ".join(terms) if terms else "false"
    target = quote_identifier(table)
    if schema is not None:
        target = f"{quote_identifier(schema)}.{target}"
    policy_name = quote_identifier(f"{prefix}_{dataset}" if name is None else name)
    return [
        f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {target} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {policy_name} ON {target}",
        f"CREATE POLICY {policy_name} ON {target} AS PERMISSIVE FOR {command} TO PUBLIC\n"
        f"USING ({using})",
    ]
