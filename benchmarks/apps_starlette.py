"""The Starlette app of the HTTP benchmark: a JSON route, the shape of a typical small API.

``/`` answers like benchmarks.apps, so the harness can tell the server is up; ``/json`` is the
route that is measured.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from benchmarks.apps import BODY


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(BODY)


async def item(request: Request) -> JSONResponse:
    return JSONResponse(
        {"id": 42, "name": "widget", "tags": ["a", "b"], "price": 9.5, "path": request.url.path}
    )


app = Starlette(routes=[Route("/", hello), Route("/json", item)])
