"""An app that logs through its own loggers (named and root, INFO and WARNING) and print()s.

It configures no logging: forkserve's stream should carry all of it. With APPLOGGER_BASICCONFIG
set it calls logging.basicConfig() at import, as an app that configures logging itself does.
"""

import logging
import os
import sys

if os.environ.get("APPLOGGER_BASICCONFIG"):
    logging.basicConfig(level=logging.INFO, format="APPFORMAT %(levelname)s %(name)s %(message)s")

log = logging.getLogger(__name__)
log.info("named info at import")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    log.info("named info %s", path)
    log.warning("named warning %s", path)
    logging.info("root info %s", path)
    logging.warning("root warning %s", path)
    log.debug("named debug %s", path)
    print(f"printed {path}")
    print(f"to stderr {path}", file=sys.stderr)
    # Below Python's streams, as C code or a subprocess writes.
    os.write(1, f"fd write {path}\n".encode())
    body = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": body})
