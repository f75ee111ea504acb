"""``--access-logformat``: an access line in gunicorn's atoms, written when the response has ended.

forkserve's own access line (``AccessLine`` in forkserve.http.protocol) lives inside the protocol
and sees only what uvicorn hands its access logger: client, method, path, version, status. A
gunicorn format may ask for any request or response header and the response's size, so this is
an ASGI layer around the app instead, put in place only when a format is given (the default line
keeps its cheaper path). It sits inside uvicorn's proxy-headers layer, so ``%(h)s`` is the client
the trusted proxy reported, and outside forkserve's other layers, so static files and security
headers are logged as sent. The time (``%(T)s``, ``%(M)s``, ``%(D)s``, ``%(L)s``) runs from the app
being called to the response's last byte being handed to the server.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from forkserve.common.accessformat import AccessFacts, render


def _headers(raw: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = bytes(name).decode("latin-1").lower()
        text = bytes(value).decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _environ(scope: Any, headers: dict[str, str]) -> dict[str, str]:
    client = scope.get("client") or ("", 0)
    server = scope.get("server") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": bytes(scope.get("query_string", b"")).decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or ""),
        "wsgi.url_scheme": scope.get("scheme", "http"),
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


class AccessFormatLog:
    def __init__(self, app: Any, fmt: str, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.fmt = fmt
        self.logger = logger or logging.getLogger("forkserve.access")
        # WSGI-style variables cost a dict per request: built only for a format that asks.
        self.wants_environ = "}e)" in fmt

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_wall, started = time.time(), time.perf_counter()
        status = 500
        length: int | None = None
        response_headers: Any = ()
        ended: float | None = None

        async def logged_send(message: Any) -> None:
            nonlocal status, length, response_headers, ended
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                response_headers = message.get("headers", ())
                length = 0
            elif kind == "http.response.body":
                length = (length or 0) + len(message.get("body", b""))
                if not message.get("more_body", False):
                    ended = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            seconds = (ended or time.perf_counter()) - started
            self._write(scope, status, length, response_headers, started_wall, seconds, ended is not None)

    def _write(
        self,
        scope: Any,
        status: int,
        length: int | None,
        response_headers: Any,
        started: float,
        seconds: float,
        complete: bool,
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        request_headers = _headers(scope.get("headers", ()))
        client = scope.get("client")
        facts = AccessFacts(
            client=str(client[0]) if client else "-",
            method=scope["method"],
            path=scope.get("path", ""),
            query=bytes(scope.get("query_string", b"")).decode("latin-1"),
            http_version=scope.get("http_version", "1.1"),
            status=status,
            length=length,
            request_headers=request_headers,
            response_headers=_headers(response_headers),
            started=started,
            seconds=seconds,
            pid=os.getpid(),
            environ=_environ(scope, request_headers) if self.wants_environ else {},
        )
        line = render(self.fmt, facts)
        self.logger.info(
            "%s", line,
            extra={"fields": {
                "client": facts.client, "method": facts.method, "path": facts.path,
                "http_version": facts.http_version, "status": status, "latency_ms": round(seconds * 1000, 3),
                "complete": complete,
            }},
        )  # fmt: skip
