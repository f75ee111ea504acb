"""The pieces that keep memory down (docs/design.md "Memory"): the control socket's doorbell, the
zygote's loop factory."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from forkserve.errors import ConfigError
from forkserve.services.serviceloop import Doorbell
from forkserve.worker.worker import loop_factory


def listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock


class Rings:
    def __init__(self) -> None:
        self.clients: list[socket.socket | None] = []
        self.rung = threading.Event()

    def __call__(self, client: socket.socket | None) -> None:
        self.clients.append(client)
        self.rung.set()


def test_the_doorbell_rings_with_the_first_client_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as sock:
        rings = Rings()
        bell = Doorbell(sock, rings, "test")
        bell.start()
        assert not rings.rung.is_set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            client.sendall(b"status\n")
            assert rings.rung.wait(5), "no ring for a waiting client"
            (accepted,) = rings.clients
            assert accepted is not None
            with accepted:
                accepted.setblocking(True)
                assert accepted.recv(16) == b"status\n"  # nothing the client sent was lost
        bell.close()


def test_a_probe_that_connects_and_closes_does_not_ring(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as sock:
        rings = Rings()
        bell = Doorbell(sock, rings, "test")
        bell.start()
        for _ in range(3):  # what another master's stale-socket check does
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(path))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            client.sendall(b"x")
            assert rings.rung.wait(5)
        assert len(rings.clients) == 1  # only the client rang, and the watch outlived the probes
        for accepted in rings.clients:
            if accepted is not None:
                accepted.close()
        bell.close()


def test_a_client_that_waits_for_the_server_to_speak_rings_too(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as sock:
        rings = Rings()
        bell = Doorbell(sock, rings, "test")
        bell.PROBE_WAIT = 0.05
        bell.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # and says nothing
            assert rings.rung.wait(5)
        for accepted in rings.clients:
            if accepted is not None:
                accepted.close()
        bell.close()


class FailingAccept(socket.socket):
    def accept(self) -> tuple[socket.socket, Any]:
        raise OSError(24, "Too many open files")


def test_a_doorbell_that_cannot_accept_rings_without_a_client(tmp_path: Path) -> None:
    # Out of fds: the server's own accept loop, which paces its retries, meets the queue instead.
    path = tmp_path / "s.sock"
    with FailingAccept(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen(4)
        rings = Rings()
        bell = Doorbell(sock, rings, "test")
        bell.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            assert rings.rung.wait(5)
        assert rings.clients == [None]
        bell.close()


def test_a_doorbell_closed_first_never_rings_and_ends_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as sock:
        rings = Rings()
        bell = Doorbell(sock, rings, "test")
        bell.start()
        thread = bell._thread
        bell.close()
        assert thread is not None and not thread.is_alive()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # waits in the listen queue: nobody is watching any more
        assert rings.clients == []
        bell.close()  # twice is harmless


class _Config:
    def __init__(self, loop: str, error: Exception | None) -> None:
        self.loop = loop
        self.error = error

    def get_loop_factory(self) -> Any:
        if self.error is not None:
            raise self.error
        return "factory"


@pytest.mark.parametrize(
    ("loop", "error", "expected"),
    [
        ("auto", None, "factory"),
        (
            "uvloop",
            ModuleNotFoundError("No module named 'uvloop'"),
            "--loop uvloop: No module named 'uvloop'; install it, or pass --loop auto",
        ),
    ],
)
def test_the_zygote_resolves_the_loop_factory(loop: str, error: Exception | None, expected: str) -> None:
    config: Any = _Config(loop, error)
    if error is None:
        found: Any = loop_factory(config)
        assert found == expected
    else:
        with pytest.raises(ConfigError) as info:
            loop_factory(config)
        assert str(info.value) == expected
