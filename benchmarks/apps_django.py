"""The Django app of the benchmarks: an async view returning JSON, served through Django's ASGI
handler (issue 19). ``GET /items/<id>?q=`` is measured, like the FastAPI route; ``/`` answers like
benchmarks.apps, so the harness can tell the server is up. Settings: benchmarks.django_settings.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from benchmarks.apps import BODY

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.django_settings")

PATH = "/items/42?q=widgets"


async def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="text/plain")


async def read_item(request: HttpRequest, item_id: int) -> JsonResponse:
    item = {"id": item_id, "name": "widget", "price": 9.5, "tags": ["a", "b"], "q": request.GET.get("q")}
    return JsonResponse(item)


# This module is also the URLconf (ROOT_URLCONF); Django imports it lazily, on the first request.
urlpatterns = [path("", hello), path("items/<int:item_id>", read_item)]

app = get_asgi_application()
