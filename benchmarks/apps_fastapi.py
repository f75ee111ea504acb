"""The FastAPI app of the benchmarks: a JSON route with a pydantic response model, the shape most
users run (issue 19). ``GET /items/{id}?q=`` is measured; ``/`` answers like benchmarks.apps, so the
harness can tell the server is up.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from benchmarks.apps import BODY

PATH = "/items/42?q=widgets"


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]
    q: str | None = None


app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def hello() -> PlainTextResponse:
    return PlainTextResponse(BODY)


@app.get("/items/{item_id}", response_model=Item)
async def read_item(item_id: int, q: str | None = None) -> Item:
    # Validated on the way in (item_id, q) and serialised through the model on the way out: the
    # per-request work of a typical FastAPI route.
    return Item(id=item_id, name="widget", price=9.5, tags=["a", "b"], q=q)
