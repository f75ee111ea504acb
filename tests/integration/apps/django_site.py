"""A one-file Django project served over WSGI, as its wsgi.py would serve it."""

from __future__ import annotations

import hashlib
import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="not-a-secret: tests only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings, as Django wants)
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"django {os.getpid()}")


def upload(request: HttpRequest) -> JsonResponse:
    digest = hashlib.sha256()
    size = 0
    while chunk := request.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"bytes": size, "sha256": digest.hexdigest()})


urlpatterns = [path("", index), path("upload", upload)]

application = get_wsgi_application()
