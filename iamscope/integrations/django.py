"""Row plans in Django's ORM: a manager that filters every query of a model.

    class Sale(models.Model):
        ...
        objects = RowsManager("sales")            # the policy's dataset name

        class Meta:
            base_manager_name = "objects"         # sale.account-style access too

After that every queryset of the model — ``Sale.objects.filter(...)``, ``.get()``,
``.count()``, aggregates, ``values()``, related managers (``account.sales.all()``),
``prefetch_related``, subqueries built from ``Sale.objects``, ``.update()`` and
``.delete()`` — reads only the rows of the current request's plan. ``save()``,
``delete()`` and ``bulk_create()`` of instances outside the plan raise
:class:`~iamscope.errors.AccessDenied`; ``update()`` / ``bulk_update()`` assigning a
column the plan reads (they could move rows out of it) raise
:class:`~iamscope.errors.PlanUnsupported` unless the plan is ``ALL``.

The plan is read when the SQL is compiled, not when the queryset is built: a queryset
made at import time (a form field's ``queryset=``, a class attribute) still applies
the plan of the request that evaluates it. No ``Access`` (outside a request) means
``NONE``: nothing is visible.

What a manager cannot reach: a join into the model written from another model's query
(``Account.objects.filter(sales__amount__gt=0)`` reads every sale, and
``select_related`` joins the related table without its manager; filter through
``Exists(Sale.objects.filter(...))`` and load through ``prefetch_related`` instead),
``raw()`` and ``connection.cursor()``.
Plan columns are the model's attribute names (``account_id`` for a foreign key).
Rendering goes through :func:`~iamscope.policy.render.sql.to_sql`, whose double-quoted
identifiers fit SQLite, PostgreSQL and Oracle; on another database the query raises
:class:`~iamscope.errors.PlanUnsupported` rather than run unfiltered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.signals import pre_delete, pre_save

from iamscope.engine.decision import current
from iamscope.errors import AccessDenied, PlanUnsupported
from iamscope.policy.access import Access
from iamscope.policy.render.python import to_predicate
from iamscope.policy.render.sql import to_sql
from iamscope.policy.rows import NONE, RowPlan, columns_of

__all__ = ["RowPlanFilter", "RowsManager", "RowsQuerySet", "plan_for"]

AccessSource = Callable[[], Access | None]
#: model → (dataset, access source), from the first RowsManager declared on it.
_MODELS: dict[type[Any], tuple[str, AccessSource]] = {}
#: Databases whose identifier quoting is the double quote to_sql writes.
_DOUBLE_QUOTED = frozenset({"sqlite", "postgresql", "oracle"})


def plan_for(dataset: str, access: Access | None) -> RowPlan:
    """The plan of ``dataset`` for ``access``; no Access (outside a request) is NONE."""
    return NONE if access is None else access.rows_for(dataset)


def _columns(model: type[models.Model]) -> dict[str, str]:
    """The allow-list: attribute name → database column, concrete fields only."""
    return {f.attname: f.column for f in model._meta.concrete_fields}


class RowPlanFilter(models.Expression):  # type: ignore[misc]
    """A WHERE condition that renders the current row plan at SQL compile time.

    Bound to the base table's alias when the queryset resolves it, and relabelled with
    it when the queryset becomes a subquery, so the plan always reads the model's own
    table.
    """

    conditional = True
    output_field = models.BooleanField()

    def __init__(self, dataset: str, access: AccessSource = current) -> None:
        super().__init__()
        self.dataset = dataset
        self.access = access
        self.alias: str | None = None
        self.model: Any = None

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> RowPlanFilter:
        clone: RowPlanFilter = self.copy()
        clone.alias = query.get_initial_alias()
        clone.model = query.model
        return clone

    def relabeled_clone(self, change_map: Mapping[str, str]) -> RowPlanFilter:
        clone: RowPlanFilter = self.copy()
        if clone.alias is not None:
            clone.alias = change_map.get(clone.alias, clone.alias)
        return clone

    def get_group_by_cols(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        if self.alias is None or self.model is None:
            raise PlanUnsupported("a row plan filter was compiled without being resolved")
        plan = plan_for(self.dataset, self.access())
        if plan.kind == "filter" and connection.vendor not in _DOUBLE_QUOTED:
            raise PlanUnsupported(
                f"row plans are rendered with double-quoted identifiers, which "
                f"{connection.vendor!r} does not read as identifiers"
            )
        sql, params = to_sql(
            plan, _columns(self.model), param_style="format", table_alias=self.alias
        )
        return f"({sql})", list(params)


class RowsQuerySet(models.QuerySet):  # type: ignore[misc]
    """``Model.objects.for_access("sales")``: the current plan on one queryset."""

    def for_access(self, dataset: str, access: AccessSource = current) -> RowsQuerySet:
        return self.filter(RowPlanFilter(dataset, access))  # type: ignore[no-any-return]

    # Writes that bypass save() and its signal, on a model behind a RowsManager.

    def update(self, **assignments: Any) -> int:
        """Rows are limited by the filter; refused when it would assign a column the plan
        reads (``region='west'`` would move visible rows out of the plan)."""
        found = _MODELS.get(self.model)
        if found is not None:
            plan = plan_for(found[0], found[1]())
            if plan.condition is not None and _attnames(self.model, assignments) & columns_of(
                plan.condition
            ):
                raise PlanUnsupported(
                    f"an update() of {found[0]!r} assigning a column its row plan reads "
                    "cannot be checked; change and save() the instances instead"
                )
        return super().update(**assignments)  # type: ignore[no-any-return]

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> Any:
        objs = list(objs)
        found = _MODELS.get(self.model)
        if found is not None:
            keep = _visibility(self.model, plan_for(found[0], found[1]()))
            if not all(keep(obj) for obj in objs):
                raise _outside(found[0])
        return super().bulk_create(objs, *args, **kwargs)


class RowsManager(models.Manager.from_queryset(RowsQuerySet)):  # type: ignore[misc]
    """A default manager applying ``dataset``'s plan to every queryset it makes, and
    refusing ``save()`` / ``delete()`` of instances outside the plan."""

    def __init__(self, dataset: str | None = None, *, access: AccessSource = current) -> None:
        super().__init__()
        # Related managers (account.sales) subclass the default manager and call
        # __init__() without arguments: they find their dataset through the model.
        self._dataset = dataset
        self._access = access

    @property
    def dataset(self) -> str:
        return self._dataset or _MODELS[self.model][0]

    @property
    def access(self) -> AccessSource:
        return self._access if self._dataset else _MODELS[self.model][1]

    def deconstruct(self) -> tuple[bool, str, None, tuple[str], dict[str, Any]]:
        # Migrations serialise managers with use_in_migrations; keep the arguments.
        return (False, f"{__name__}.RowsManager", None, (self.dataset,), {})

    def get_queryset(self) -> RowsQuerySet:
        return super().get_queryset().for_access(self.dataset, self.access)  # type: ignore[no-any-return]

    def contribute_to_class(self, cls: type[models.Model], name: str) -> None:
        super().contribute_to_class(cls, name)
        if not cls._meta.abstract and self._dataset is not None and cls not in _MODELS:
            _MODELS[cls] = (self._dataset, self._access)
            # weak=False: the handlers live as long as the model, not the call.
            pre_save.connect(self._check_save, sender=cls, weak=False)
            pre_delete.connect(self._check_delete, sender=cls, weak=False)

    def _visible(self, instance: models.Model) -> bool:
        return _visibility(type(instance), plan_for(self.dataset, self.access()))(instance)

    def _stored_row_visible(self, instance: models.Model) -> bool:
        return bool(self.get_queryset().filter(pk=instance.pk).exists())

    def _stored_row_exists(self, instance: models.Model) -> bool:
        return bool(models.QuerySet(type(instance)).filter(pk=instance.pk).exists())

    def _check_save(self, sender: Any, instance: models.Model, **kwargs: Any) -> None:
        if not self._visible(instance):
            raise _outside(self.dataset)
        # A given pk may name a stored row the caller cannot see: overwriting it (or, as
        # save() would, failing on its unique key) is refused alike.
        if (
            instance.pk is not None
            and not self._stored_row_visible(instance)
            and (not instance._state.adding or self._stored_row_exists(instance))
        ):
            raise _outside(self.dataset)

    def _check_delete(self, sender: Any, instance: models.Model, **kwargs: Any) -> None:
        if not self._stored_row_visible(instance):
            raise _outside(self.dataset)


def _visibility(model: type[models.Model], plan: RowPlan) -> Callable[[models.Model], bool]:
    """Whether an instance's current values are inside ``plan`` (SQL NULL semantics)."""
    names = list(_columns(model))
    keep = to_predicate(plan, columns=names)
    return lambda instance: keep({name: getattr(instance, name) for name in names})


def _attnames(model: type[models.Model], assignments: Mapping[str, Any]) -> set[str]:
    """The attribute names ``update(**assignments)`` writes (an unknown name is left to
    Django, which refuses it)."""
    names = set()
    for key in assignments:
        try:
            names.add(model._meta.get_field(key).attname)
        except FieldDoesNotExist:
            names.add(key)
    return names


def _outside(dataset: str) -> AccessDenied:
    return AccessDenied(
        f"a write would touch a row of {dataset!r} outside the caller's row plan",
        requirement=f"rows:{dataset}",
    )
