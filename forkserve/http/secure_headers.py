"""--secure-headers: the browser security headers helmet sets, added to every HTTP response.

A header the app already sets is left alone: the app knows better (an embeddable widget sets its
own X-Frame-Options). Strict-Transport-Security goes only on responses to https requests (directly
over --certfile, or behind a trusted proxy that says X-Forwarded-Proto: https): over plain http a
browser ignores it, and sending it there would only mislead someone reading the headers.

The header list is computed once per worker (``header_lists``, a pure function); per response the
middleware pays one set of names and a list concatenation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Header = tuple[bytes, bytes]

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def header_lists(defaults: bool, overrides: Iterable[str]) -> tuple[list[Header], list[Header]]:
    """(headers for http responses, headers for https responses) after NAME=VALUE overrides.

    An override replaces a header of the same name (case-insensitive), adds a new one, or with an
    empty VALUE removes one.
    """
    chosen: dict[str, tuple[str, str]] = {}
    if defaults:
        for name, value in (*DEFAULT_HEADERS, HSTS):
            chosen[name.lower()] = (name, value)
    for item in overrides:
        name, _, value = item.partition("=")
        if name.lower() == "server":
            continue  # uvicorn's own Server header takes it: see server_override
        if value:
            chosen[name.lower()] = (name, value)
        else:
            chosen.pop(name.lower(), None)
    # Lower-case names, as ASGI asks of every header an app sends.
    https = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in chosen.values()]
    http = [header for header in https if header[0] != b"strict-transport-security"]
    return http, https


def server_override(overrides: Iterable[str]) -> str | None:
    """The Server header a --secure-header sets ('' removes it), or None: uvicorn's default stands.

    uvicorn adds its ``server`` header to every response whatever the app sends, so a Server
    header added here would be a second one; it is handed to uvicorn's config instead, which
    sends it in place of its own.
    """
    chosen: str | None = None
    for item in overrides:
        name, _, value = item.partition("=")
        if name.lower() == "server":
            chosen = value
    return chosen


class SecureHeaders:
    def __init__(self, app: Any, defaults: bool, overrides: Iterable[str]) -> None:
        self.app = app
        self.http, self.https = header_lists(defaults, overrides)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.https if scope.get("scheme") == "https" else self.http

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {bytes(name).lower() for name, _ in headers}
                message = {**message, "headers": headers + [h for h in extra if h[0] not in present]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
