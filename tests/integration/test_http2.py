"""HTTP/2 through uvicorn's zttp protocols (``--http zttp``): h2c in cleartext, h2 by ALPN over TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator

import httpx
import pytest
import trustme
import uvicorn

from forkserve.http.choice import http_protocol_class
from tests.conftest import wait_until


async def hello(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = scope["http_version"].encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def test_cleartext_http2_with_prior_knowledge(serve):
    server = serve("-w", "1", "--http", "zttp", app="http_edges:app", wait=1)
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        response = client.get(server.url + "/")
    assert (response.http_version, response.text) == ("HTTP/2", "hello")
    # HTTP/1.1 on the same port still works (the first bytes decide).
    assert httpx.get(server.url + "/", timeout=10).text == "hello"


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[int, trustme.CA]]:
    """uvicorn's Server with forkserve's zttp class over real TLS, in a thread of this process.

    forkserve's own TLS settings are not needed for what is checked here: that the class makes
    uvicorn offer h2 by ALPN and serve it.
    """
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        hello,
        http=http_protocol_class("zttp"),
        lifespan="off",
        log_config=None,
        ssl_certfile=str(tmp_path / "cert.pem"),
        ssl_keyfile=str(tmp_path / "key.pem"),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10.0, "the TLS server to start")
        yield sock.getsockname()[1], ca
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive()


def test_http2_over_tls_is_negotiated_by_alpn(tls_server):
    port, ca = tls_server
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with httpx.Client(http2=True, verify=context, timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{port}/")
    assert (response.http_version, response.text) == ("HTTP/2", "2")
    with httpx.Client(http2=False, verify=context, timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{port}/")
    assert (response.http_version, response.text) == ("HTTP/1.1", "1.1")
