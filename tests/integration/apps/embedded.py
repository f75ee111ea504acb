"""Serves an app object defined in __main__ through the library API: python embedded.py PORT."""

import sys

import forkserve


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"8")]})
    await send({"type": "http.response.body", "body": b"embedded"})


if __name__ == "__main__":
    try:
        code = forkserve.run(app, workers=2, bind=f"127.0.0.1:{sys.argv[1]}", graceful_timeout=5)
    except forkserve.ForkserveError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    print(f"run returned {code}", flush=True)
    sys.exit(code)
