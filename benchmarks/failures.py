"""The one failure vocabulary of every benchmark: what went wrong with one request, in a word or two.

Every report counts failed requests by these words, so a ``reset`` on the reload page is the same
event as a ``reset`` on the faults page, whichever client saw it. ``classify`` is the only place that
turns an exception into a word; a client raises, a report counts, neither names failures itself.

The words, in the order a request meets them:

- ``refused``: nobody listens on the port (ECONNREFUSED);
- ``connect timeout``: the connection did not open in time (a full accept queue drops SYNs);
- ``reset``: the peer reset or closed the connection under a write (ECONNRESET, EPIPE, ECONNABORTED);
- ``no response``: the connection closed before a byte of the response came (http.client's
  RemoteDisconnected; a reused keep-alive connection closed under the request);
- ``short read``: the connection closed in the middle of a response (http.client's IncompleteRead);
- ``timeout``: the response did not come in time;
- ``bad response``: bytes came back that are not an HTTP/1.x response that can be framed;
- ``bad status``: a response with a status other than the expected one (reports add the number);
- ``bad body``: the expected status with a body that is not the expected one;
- ``os error``: any other OSError (reports add the errno name);
- ``other``: anything else, which would be a bug in the client.
"""

from __future__ import annotations

import asyncio
import enum
import errno


class Failure(str, enum.Enum):
    REFUSED = "refused"
    CONNECT_TIMEOUT = "connect timeout"
    RESET = "reset"
    NO_RESPONSE = "no response"
    SHORT_READ = "short read"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad response"
    BAD_STATUS = "bad status"
    BAD_BODY = "bad body"
    OS_ERROR = "os error"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


class RequestFailed(Exception):
    """A failure a client detected itself (framing, a close mid-response), already classified."""

    def __init__(self, failure: Failure, detail: str = "") -> None:
        super().__init__(f"{failure.value}: {detail}" if detail else failure.value)
        self.failure = failure
        self.detail = detail


# By errno, because uvloop and asyncio do not always raise the same OSError subclass.
_ERRNO = {
    errno.ECONNREFUSED: Failure.REFUSED,
    errno.ECONNRESET: Failure.RESET,
    errno.EPIPE: Failure.RESET,
    errno.ECONNABORTED: Failure.RESET,
    errno.ETIMEDOUT: Failure.TIMEOUT,
}


def classify(error: BaseException, connecting: bool = False) -> Failure:
    """The word for ``error``, raised while connecting (``connecting``) or during the exchange."""
    if isinstance(error, RequestFailed):
        return error.failure
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):  # before OSError: TimeoutError is one
        return Failure.CONNECT_TIMEOUT if connecting else Failure.TIMEOUT
    if isinstance(error, asyncio.IncompleteReadError):
        return Failure.SHORT_READ if error.partial else Failure.NO_RESPONSE
    if isinstance(error, (asyncio.LimitOverrunError, ValueError)):
        return Failure.BAD_RESPONSE
    if isinstance(error, OSError):
        failure = _ERRNO.get(error.errno or 0)
        if failure is Failure.TIMEOUT and connecting:
            return Failure.CONNECT_TIMEOUT
        return failure or Failure.OS_ERROR
    return Failure.OTHER


def label(failure: Failure, status: int = 0, error: BaseException | None = None) -> str:
    """The word with the one detail a reader needs: the status of a bad status, the errno otherwise."""
    if failure is Failure.BAD_STATUS and status:
        return f"bad status {status}"
    if failure is Failure.OS_ERROR and isinstance(error, OSError) and error.errno is not None:
        return f"os error {errno.errorcode.get(error.errno, error.errno)}"
    return failure.value
