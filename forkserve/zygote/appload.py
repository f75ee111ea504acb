"""Import the user's app, once, in the zygote; turn every way that fails into an AppError."""

from __future__ import annotations

from typing import Any

from forkserve.common.logs import short_traceback
from forkserve.errors import AppError
from forkserve.http.uvicorn_api import ImportFromStringError, import_from_string


def load_app(target: Any, *, factory: bool) -> Any:
    """The ASGI app named by ``module:attribute`` (or given as an object), called if a factory."""
    where = target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
    try:
        app = import_from_string(target)
    except ImportFromStringError as exc:
        hint = "; check the name, and --app-dir if the module is not in the current directory"
        raise AppError(f"cannot load {where}: {str(exc).rstrip('.')}{hint}") from None
    except SyntaxError as exc:
        raise AppError(f"cannot load {where}: syntax error", detail=short_traceback(exc)) from exc
    except Exception as exc:
        raise AppError(
            f"cannot load {where}: importing it raised {type(exc).__name__}: {exc}",
            detail=short_traceback(exc),
        ) from exc
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise AppError(
                f"cannot load {where}: the factory raised {type(exc).__name__}: {exc}",
                detail=short_traceback(exc),
            ) from exc
    if not callable(app):
        raise AppError(
            f"{where} is a {type(app).__name__}, not an ASGI app; point APP at the app object "
            "(module:app), or pass --factory for a function that returns it"
        )
    return app
