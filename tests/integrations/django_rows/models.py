"""The inventory's two datasets as Django models, each behind a RowsManager."""

from __future__ import annotations

from django.db import models

from iamscope.integrations.django import RowsManager, RowsQuerySet


class Account(models.Model):
    name = models.CharField(max_length=40)

    objects = RowsManager("accounts")

    class Meta:
        app_label = "django_rows"
        base_manager_name = "objects"


class Sale(models.Model):
    # The attribute is "region"; the column is named differently, as in real schemas.
    region = models.CharField(max_length=10, null=True, db_column="region_code")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="sales")
    amount = models.IntegerField(null=True)

    objects = RowsManager("sales")
    # Not filtered until asked: Sale.plain.for_access("sales").
    plain = RowsQuerySet.as_manager()

    class Meta:
        app_label = "django_rows"
        base_manager_name = "objects"
