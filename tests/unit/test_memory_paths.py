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


def test_the_doorbell_rings_once_a_client_waits(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as sock:
        rung = threading.Event()
        bell = Doorbell(sock, rung.set, "test")
        bell.start()
        assert not rung.is_set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            assert rung.wait(5), "no ring for a waiting client"
        bell.close()


def test_a_doorbell_closed_first_never_rings_and_ends_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listening(path) as sock:
        rings: list[int] = []
        bell = Doorbell(sock, lambda: rings.append(1), "test")
        bell.start()
        thread = bell._thread
        bell.close()
        assert thread is not None and not thread.is_alive()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # waits in the listen queue: nobody is watching any more
        assert rings == []
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
