"""One route: the whole inventory, run inside a real request."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from tests.integrations.django_rows.inventory import run_inventory, run_writes


def inventory(request: HttpRequest) -> JsonResponse:
    return JsonResponse(run_inventory())


def writes(request: HttpRequest) -> JsonResponse:
    return JsonResponse(run_writes())


urlpatterns = [path("inventory", inventory), path("writes", writes)]
