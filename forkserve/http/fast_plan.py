"""The fast protocol's per-worker plan and caches: what it works out once instead of per request.

``plan_for(config)`` builds, once per worker, what every connection of ``--http fast``
(``forkserve.http.fast``) reads: the scope's constant parts, the default response headers joined
once a second, the proxy-header decision. The header caches remember response header names and
short values already checked (``check_name``, ``check_value``), up to a bound, so an app that
invents names cannot grow them without limit.

The response-header rules and status lines are forkserve's own, written to match uvicorn's
(``tests/unit/test_http_fast_protocol.py`` has their table): an app's response is
refused or accepted alike whichever ``--http`` serves it.
"""

from __future__ import annotations

import http
import logging
import re
from typing import Any

from forkserve.http.uvicorn_api import Config, ProxyHeadersMiddleware

# A response header name must be an RFC 9110 token; a value may hold no control character but
# tab (no CR or LF: a header an app builds from request data must not split the response).
HEADER_RE = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
HEADER_VALUE_RE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE = {status: _status_line(status) for status in range(100, 600)}

METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


# A body this small goes out joined to the head, in one write; a larger one is not copied just to
# save a write call.
JOIN_LIMIT = 16 * 1024
# An app that took this long (seconds) to answer has its whole response held to the end of the
# loop's turn and written with the turn's others; a faster one's is written at once, where holding
# would only add a turn (docs/design.md, "Held responses").
HOLD_AFTER = 20e-6
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Response header names and (short) values already checked against uvicorn's expressions: an app
# sends the same few again and again, and a set lookup is cheaper than a regex search. The limits
# keep an app that invents names or values from growing them.
VALID_NAMES: set[bytes] = set()
VALID_VALUES: set[bytes] = set()
VALID_LIMIT = 4096
VALID_VALUE_LENGTH = 64
SPECIAL_RESPONSE_HEADERS = {b"content-length", b"transfer-encoding", b"connection"}


class ProtocolPlan:
    """What every connection of one uvicorn Config shares, worked out once instead of per request."""

    def __init__(self, config: Config) -> None:
        self.source_app = config.loaded_app
        app = config.loaded_app
        self.trusted: Any = None
        if isinstance(app, ProxyHeadersMiddleware):
            self.trusted = app.trusted_hosts
            app = app.app
        self.app = app
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.root_path = config.root_path
        self.root_path_bytes = config.root_path.encode("ascii")
        self.logger = logging.getLogger("uvicorn.error")
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        # uvicorn's server replaces its default-headers list once a second (the date); the head's
        # default lines are joined again when it does.
        self.defaults: list[tuple[bytes, bytes]] | None = None
        self.defaults_block = b""
        # Default headers that change framing (content-length, connection, ...) are rare; if
        # configured they go through the per-header loop with the app's headers, as in uvicorn.
        self.defaults_special: list[tuple[bytes, bytes]] = []

    def set_defaults(self, defaults: list[tuple[bytes, bytes]]) -> None:
        special = [(n, v) for n, v in defaults if n.lower() in SPECIAL_RESPONSE_HEADERS]
        self.defaults_block = header_block([(n, v) for n, v in defaults if (n, v) not in special])
        self.defaults_special = special
        self.defaults = defaults


def header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        check_name(name.lower())
        check_value(value)
    return b"".join([name.lower() + b": " + value + b"\r\n" for name, value in headers])


def check_name(name: bytes) -> None:
    if HEADER_RE.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    if type(name) is bytes and len(VALID_NAMES) < VALID_LIMIT:
        VALID_NAMES.add(name)


def check_value(value: bytes) -> None:
    if HEADER_VALUE_RE.search(value):
        raise RuntimeError("Invalid HTTP header value.")
    if type(value) is bytes and len(value) <= VALID_VALUE_LENGTH and len(VALID_VALUES) < VALID_LIMIT:
        VALID_VALUES.add(value)


def plan_for(config: Config) -> ProtocolPlan:
    plan: ProtocolPlan | None = vars(config).get("_forkserve_plan")
    # The worker may wrap the loaded app after load (the health check); a new app, a new plan.
    if plan is None or plan.source_app is not config.loaded_app:
        plan = ProtocolPlan(config)
        vars(config)["_forkserve_plan"] = plan
    return plan
