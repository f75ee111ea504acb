"""An app that tells which modules its processes loaded: the zygote (at import) and the worker (now)."""

import json
import sys

AT_IMPORT = sorted(sys.modules)  # this line runs in the zygote, which then forks the workers


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"zygote": AT_IMPORT, "worker": sorted(sys.modules)}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})
