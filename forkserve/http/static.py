"""--static /PREFIX=DIR: files served by the workers, in front of the app, for small deployments.

Each mount is a Starlette ``StaticFiles`` (ETag and Last-Modified, 304s, HEAD, range requests, and
its check that a resolved path stays inside DIR, so ``/static/../secret`` is a 404). A request whose
path is PREFIX or starts with PREFIX/ goes to the mount, everything else to the app. A path with a
segment that starts with a dot (``/static/.env``, ``/static/.git/config``) is a 404 unless
``--static-dotfiles``: a directory copied whole into a deployment carries secrets and VCS data there,
and nothing a page links to is named that way. For a busy
site put nginx in front and let it serve the files (docs/security.md has the recipe): a worker's
event loop is the wrong place to stream large files to slow clients.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from forkserve.config.static import mounts


def hidden(route: str) -> bool:
    """Whether a path names a dotfile or goes through a dot-directory (any segment starting with a dot)."""
    return "/." in route or route.startswith(".")


class StaticMounts:
    def __init__(self, app: Any, static: Iterable[str], dotfiles: bool = False) -> None:
        from starlette.staticfiles import StaticFiles  # zygote-only: keep it off the master

        self.app = app
        self.dotfiles = dotfiles
        self.mounts = [
            (prefix, StaticFiles(directory=os.path.abspath(directory)))
            for prefix, directory in mounts(static)
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            root = scope.get("root_path", "")
            path: str = scope["path"]
            route = path[len(root) :] if root and path.startswith(root) else path
            for prefix, files in self.mounts:
                if route == prefix or route.startswith(prefix + "/"):
                    if not self.dotfiles and hidden(route[len(prefix) :]):
                        await self._not_found(scope, receive, send)
                    else:
                        await self._serve(files, {**scope, "root_path": root + prefix}, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _not_found(scope: Any, receive: Any, send: Any) -> None:
        from starlette.responses import PlainTextResponse

        await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)

    @staticmethod
    async def _serve(files: Any, scope: Any, receive: Any, send: Any) -> None:
        from starlette.exceptions import HTTPException
        from starlette.responses import PlainTextResponse

        try:
            await files(scope, receive, send)
        except HTTPException as exc:
            # Raised before any response byte (not found, method not allowed); there is no Starlette
            # app around the mount to turn it into a response, so do it here.
            await PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)(
                scope, receive, send
            )
