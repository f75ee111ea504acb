from contextlib import asynccontextmanager

from starlette.applications import Starlette


@asynccontextmanager
async def lifespan(app):
    raise ConnectionRefusedError("cannot reach the database at db:5432")
    yield


app = Starlette(lifespan=lifespan)
