"""The one place where forkserve's own ASGI middleware is put around the user's app.

Called in the zygote, before uvicorn's config wraps the result in its proxy-headers middleware and
before the fork, so the layers are built once and shared copy-on-write by every worker, and they
see the scheme and client address the trusted proxy reported. Innermost first: a feature that
adds a layer adds one line here, in the order its requests should meet it.
"""

from __future__ import annotations

from typing import Any

from forkserve.config.settings import Config


def wrap(app: Any, config: Config, name: str = "the app") -> Any:
    from forkserve.http import wsgi

    # A WSGI app becomes ASGI first, so every layer below sees ASGI only.
    app = wsgi.adapt(app, interface=config.interface, threads=config.threads, where=name)
    if config.static:
        from forkserve.http.static import StaticMounts

        app = StaticMounts(app, config.static, dotfiles=config.static_dotfiles)
    if config.secure_headers or config.secure_header:
        from forkserve.http.secure_headers import SecureHeaders

        # Outside the static files, so they get the headers too.
        app = SecureHeaders(app, config.secure_headers, config.secure_header)
    if config.access_logformat and (config.access_log or config.access_logfile is not None):
        from forkserve.http.accesslog import AccessFormatLog

        # Outermost of forkserve's layers: the line shows what the client was sent.
        app = AccessFormatLog(app, config.access_logformat)
    return app
