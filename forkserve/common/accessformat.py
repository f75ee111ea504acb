"""``--access-logformat``: gunicorn's access-log atoms, rendered from the facts of one request.

A pure function of plain data (``AccessFacts``), so the whole atom table is tested without a
server; the middleware that gathers the facts is ``forkserve.http.accesslog``.

As gunicorn: every atom is a string, an unknown atom or a missing header renders as ``-``, and
header atoms are case-insensitive (``%({X-Request-Id}i)s``). Unlike gunicorn, a value that came
from the client is escaped (``"`` and ``\\`` by a backslash, control bytes as ``\\xNN``), so a
hostile header cannot forge a second field or line for whatever parses the log.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

GUNICORN_DEFAULT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


@dataclass(frozen=True)
class AccessFacts:
    client: str
    method: str
    path: str
    query: str
    http_version: str
    status: int
    # Response body bytes sent; None when no response was sent.
    length: int | None
    # Header names lower-case; a repeated header's values joined by ", ".
    request_headers: Mapping[str, str]
    response_headers: Mapping[str, str]
    started: float  # time.time() when the request reached the app
    seconds: float
    pid: int
    # gunicorn's %({NAME}e)s: a WSGI-style environ of the request (REQUEST_METHOD, HTTP_HOST, ...).
    environ: Mapping[str, str] = field(default_factory=dict)


_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


def _escape(text: str) -> str:
    return _UNSAFE.sub(lambda m: "\\" + m[0] if m[0] in '"\\' else f"\\x{ord(m[0]):02x}", text)


def _user(authorization: str | None) -> str:
    """The user name of HTTP basic authentication, as gunicorn's %(u)s."""
    if not authorization or authorization[:6].lower() != "basic ":
        return "-"
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return "-"
    return decoded.partition(":")[0] or "-"


def atoms(facts: AccessFacts) -> dict[str, str]:
    target = facts.path + ("?" + facts.query if facts.query else "")
    protocol = f"HTTP/{facts.http_version}"
    micro = int(facts.seconds * 1_000_000)
    table = {
        "h": facts.client or "-",
        "l": "-",
        "u": _user(facts.request_headers.get("authorization")),
        "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(facts.started)),
        "r": f"{facts.method} {target} {protocol}",
        "m": facts.method,
        "U": facts.path,
        "q": facts.query,
        "H": protocol,
        "s": str(facts.status),
        "B": str(facts.length or 0),
        "b": "-" if facts.length is None else str(facts.length),
        "f": facts.request_headers.get("referer", "-"),
        "a": facts.request_headers.get("user-agent", "-"),
        "T": str(micro // 1_000_000),
        "M": str(micro // 1000),
        "D": str(micro),
        "L": f"{micro // 1_000_000}.{micro % 1_000_000:06d}",
        "p": f"<{facts.pid}>",
    }
    table = {key: _escape(value) for key, value in table.items()}
    for name, value in facts.request_headers.items():
        table[f"{{{name}}}i"] = _escape(value)
    for name, value in facts.response_headers.items():
        table[f"{{{name}}}o"] = _escape(value)
    for name, value in facts.environ.items():
        table[f"{{{name.lower()}}}e"] = _escape(value)
    return table


class _SafeAtoms(dict[str, str]):
    def __missing__(self, key: str) -> str:
        lowered = key.lower()
        if key.startswith("{") and lowered != key and lowered in self:
            return self[lowered]
        return "-"


def render(fmt: str, facts: AccessFacts) -> str:
    return fmt % _SafeAtoms(atoms(facts))


SAMPLE = AccessFacts(
    client="127.0.0.1", method="GET", path="/", query="", http_version="1.1", status=200, length=2,
    request_headers={}, response_headers={}, started=0.0, seconds=0.0, pid=1,
)  # fmt: skip


def format_problem(fmt: str) -> str | None:
    """Why FMT cannot be an access-log format, or None."""
    if "%(" not in fmt:
        return "no atom in it; expected gunicorn's atoms such as '%(h)s \"%(r)s\" %(s)s'"
    try:
        render(fmt, SAMPLE)
    except (ValueError, TypeError, KeyError) as exc:
        return f"not a valid format ({exc}); every atom is a string, written %(NAME)s"
    return None
