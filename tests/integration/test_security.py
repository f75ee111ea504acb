# ruff: noqa: E501  (tables of cases read best one a line)
"""TLS, trusted proxy headers, secure headers, request limits and static files, over real sockets."""

from __future__ import annotations

import signal
import socket
import ssl
import threading
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import wait_until

SECURE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("forkserve: error:")]


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes exactly as given (httpx would normalise a ../ path) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der(issued: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return ca, cert, key


def test_tls_request_with_a_verified_certificate(serve, certificate):
    ca, cert, key = certificate
    server = serve(
        "--certfile", str(cert), "--keyfile", str(key), "--secure-headers", app="bodyapp:app", wait=1
    )
    server.wait_log(r"Listening at: https://127\.0\.0\.1:")
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    response = httpx.get(f"https://127.0.0.1:{server.port}/", verify=client_context, timeout=10)
    assert response.status_code == 200
    assert response.text.split()[2] == "https"
    # HSTS only on https, with the other secure headers.
    assert response.headers["strict-transport-security"] == HSTS
    assert {name: response.headers[name] for name in SECURE} == SECURE
    # A client that does not trust the CA is refused by its own verification.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{server.port}/", timeout=10)
    assert len(server.workers()) == 1


def test_certificate_renewed_by_hup_and_a_broken_one_aborts_the_reload(serve, certificate, tmp_path):
    ca, cert, key = certificate
    server = serve("--certfile", str(cert), "--keyfile", str(key), app="bodyapp:app", wait=1)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://127.0.0.1:{server.port}/"
    first = httpx.get(url, verify=context, timeout=10)

    # Renewed: a new certificate from the same CA, picked up by the next generation.
    renewed = ca.issue_cert("127.0.0.1", "localhost")
    renewed.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in renewed.cert_chain_pems))
    server.signal(signal.SIGHUP)
    new_pid = wait_until(
        lambda: (pid := httpx.get(url, verify=context, timeout=10).text.split()[1]) != first.text.split()[1] and pid,
        20, "a generation 2 worker", server.tail,
    )  # fmt: skip
    serving = server.wait_workers(1)
    assert served_certificate(server.port, context) == der(renewed)

    # Broken: a key that does not match; the reload is aborted, generation 2 keeps serving.
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(key))
    server.signal(signal.SIGHUP)
    server.wait_log(r"reload aborted: generation 3 failed to load: --certfile .*check that the key matches")
    assert httpx.get(url, verify=context, timeout=10).text.split()[1] == new_pid
    assert set(server.workers()) == serving


def test_tls_minimum_version_13(serve, certificate):
    ca, cert, key = certificate
    server = serve("--certfile", str(cert), "--keyfile", str(key), "--ssl-version", "TLSv1.3", wait=1)
    only12 = ssl.create_default_context()
    ca.configure_trust(only12)
    only12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{server.port}/", verify=only12, timeout=10)
    modern = ssl.create_default_context()
    ca.configure_trust(modern)
    assert httpx.get(f"https://127.0.0.1:{server.port}/", verify=modern, timeout=10).status_code == 200


def test_bad_tls_settings_exit_2(serve, certificate, tmp_path):
    _ca, cert, key = certificate
    other_key = tmp_path / "other.pem"
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(other_key))
    cases = [
        (["--certfile", str(tmp_path / "missing.pem")], f"--certfile {tmp_path / 'missing.pem'}: no such file"),
        (["--keyfile", str(key)], "--keyfile is set but --certfile is not; pass --certfile to serve HTTPS"),
        (["--certfile", str(cert), "--keyfile", str(other_key)], f"--certfile {cert} / --keyfile {other_key}: "),
        (["--certfile", str(cert), "--keyfile", str(key), "--cert-reqs", "required"], "--cert-reqs required needs --ca-certs"),
        (["--certfile", str(cert), "--keyfile", str(key), "--ciphers", "NOPE"], "--ciphers 'NOPE': OpenSSL matches no cipher"),
        (["--static", f"/s={tmp_path / 'nowhere'}"], f"--static /s={tmp_path / 'nowhere'}: no such directory"),
    ]  # fmt: skip
    servers = [(serve(*args), message) for args, message in cases]
    for server, message in servers:
        assert server.wait_exit() == 2, server.tail()
        [line] = error_lines(server.log())
        assert line.startswith(f"forkserve: error: {message}"), server.tail()


def test_secure_headers_over_http_and_their_overrides(serve):
    server = serve(
        "--secure-headers", "--secure-header", "X-Frame-Options=DENY", "--secure-header", "Referrer-Policy=",
        "--secure-header", "Permissions-Policy=camera=()", app="bodyapp:app", wait=1,
    )  # fmt: skip
    response = server.get()
    assert response.headers["x-frame-options"] == "DENY"
    assert "referrer-policy" not in response.headers
    assert response.headers["permissions-policy"] == "camera=()"
    assert response.headers["x-content-type-options"] == "nosniff"
    # Plain http: no HSTS.
    assert "strict-transport-security" not in response.headers
    # A header the app sets itself is left alone.
    assert server.get("/framed").headers.get_list("x-frame-options") == ["ALLOW-FROM example.com"]


def test_no_secure_headers_unless_asked(serve):
    server = serve(app="bodyapp:app", wait=1)
    response = server.get()
    assert not set(SECURE) & set(response.headers)


@pytest.mark.parametrize(
    ("allow", "trusted"),
    [("127.0.0.1", True), ("10.0.0.0/8", False), ("*", True)],
    ids=["loopback", "other", "all"],
)
def test_proxy_headers_trusted_only_from_forwarded_allow_ips(serve, allow, trusted):
    server = serve("--forwarded-allow-ips", allow, "--secure-headers", app="bodyapp:app", wait=1)
    response = httpx.get(
        server.url, headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}, timeout=10
    )
    _size, _pid, scheme, client = response.text.split()
    assert (scheme, client) == (("https", "203.0.113.7") if trusted else ("http", "127.0.0.1"))
    assert ("strict-transport-security" in response.headers) is trusted


@pytest.mark.parametrize("http", ["fast", "httptools", "h11"])
def test_request_over_the_size_limit_gets_413_and_the_worker_lives(serve, http):
    server = serve("--limit-max-request-size", "1k", "--http", http, app="bodyapp:app", wait=1)
    [pid] = server.workers()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/", content=b"x" * 1024).text.split()[:2] == ["1024", str(pid)]
        # Content-Length over the limit: refused before the body is read.
        big = client.post("/", content=b"x" * 200_000)
        assert big.status_code == 413
        assert big.headers["connection"] == "close"
        # A chunked body is counted as it streams.
        chunked = client.post("/", content=iter([b"y" * 600, b"y" * 600]))
        assert chunked.status_code == 413
        small_chunked = client.post("/", content=iter([b"y" * 300, b"y" * 300]))
        assert small_chunked.text.split()[:2] == ["600", str(pid)]
    assert set(server.workers()) == {pid}
    assert server.get().text.split()[1] == str(pid)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("http", ["fast", "httptools", "h11"])
def test_too_many_header_fields_get_431(serve, http):
    server = serve("--max-header-count", "20", "--http", http, app="bodyapp:app", wait=1)
    [pid] = server.workers()
    many = {f"x-h{i}": "1" for i in range(30)}
    response = httpx.get(server.url, headers=many, timeout=10)
    assert response.status_code == 431
    assert server.get().text.split()[1] == str(pid)


def test_limit_concurrency_answers_503_when_full(serve):
    server = serve("--limit-concurrency", "1", app="bodyapp:app", wait=1)
    slow = threading.Thread(target=lambda: httpx.get(server.url + "/slow?s=3", timeout=10))
    slow.start()
    try:
        # The slow request holds the only place; a second connection is turned away.
        wait_until(lambda: server.accepted() >= 1, 10, "the slow request to arrive", server.tail)
        assert httpx.get(server.url, timeout=10).status_code == 503
    finally:
        slow.join(15)


def test_static_files_served_before_the_app_and_traversal_refused(serve, tmp_path):
    public = tmp_path / "public"
    (public / "css").mkdir(parents=True)
    (public / "css" / "site.css").write_text("body { color: red }\n")
    (tmp_path / "secret.txt").write_text("do not serve\n")
    (public / "link.txt").symlink_to(tmp_path / "secret.txt")
    server = serve("--static", f"/assets={public}", "--secure-headers", app="bodyapp:app", wait=1)
    response = server.get("/assets/css/site.css")
    assert response.status_code == 200
    assert response.text == "body { color: red }\n"
    assert response.headers["content-type"].startswith("text/css")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert server.get("/assets/missing.css").status_code == 404
    # Not under the prefix: the app answers.
    assert server.get("/assetsx").text.split()[0] == "0"
    # A symlink out of the directory is not followed.
    assert server.get("/assets/link.txt").status_code == 404
    for path in (b"/assets/../secret.txt", b"/assets/%2e%2e/secret.txt", b"/assets/css/../../secret.txt"):
        answer = raw_request(
            server.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert b"do not serve" not in answer


@pytest.mark.parametrize(("http", "expected"), [("zttp", "HTTP/2"), ("fast", "HTTP/1.1")])
def test_alpn_offers_http2_only_where_the_protocol_speaks_it(serve, certificate, http, expected):
    """forkserve builds the TLS context itself, so it must also offer h2 by ALPN (uvicorn's would)."""
    ca, cert, key = certificate
    server = serve(
        "--certfile", str(cert), "--keyfile", str(key), "--http", http, app="http_edges:app", wait=1
    )
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with httpx.Client(http2=True, verify=client_context, timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{server.port}/")
    assert (response.status_code, response.http_version, response.text) == (200, expected, "hello")


def test_static_dotfiles_are_not_served_unless_asked(serve, tmp_path):
    public = tmp_path / "public"
    (public / ".git").mkdir(parents=True)
    (public / ".env").write_text("SECRET=1\n")
    (public / ".git" / "config").write_text("[core]\n")
    (public / "site.css").write_text("body {}\n")
    hidden = (b"/assets/.env", b"/assets/%2eenv", b"/assets/.git/config", b"/assets/x/../.env")
    server = serve("--static", f"/assets={public}", app="bodyapp:app", wait=1)
    assert server.get("/assets/site.css").status_code == 200
    for path in hidden:
        answer = raw_request(
            server.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 404"), (path, answer[:200])
        assert b"SECRET" not in answer and b"[core]" not in answer
    allowed = serve("--static", f"/assets={public}", "--static-dotfiles", app="bodyapp:app", wait=1)
    assert allowed.get("/assets/.env").text == "SECRET=1\n"
    assert allowed.get("/assets/.git/config").status_code == 200
