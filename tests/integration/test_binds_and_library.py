"""Listening addresses, -w auto, and the library API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import httpx

import forkserve
from forkserve.common.sizing import usable_cpu_count
from tests.conftest import APPS, alive, free_port, wait_until


def test_unix_socket_bind(serve, tmp_path):
    path = tmp_path / "app.sock"
    server = serve("-b", f"unix:{path}", "-w", "2", bind=False, wait=2)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        assert client.get("http://forkserve/").status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists(), "the socket file should be removed on exit"


def test_several_binds_serve_the_same_workers(serve):
    second = free_port()
    server = serve("-b", f"127.0.0.1:{second}", "-w", "1", wait=1)
    first_pid = server.get().text.split()[0]
    assert httpx.get(f"http://127.0.0.1:{second}/").text.split()[0] == first_pid


def test_ipv6_bind(serve):
    port = free_port()
    server = serve("-b", f"[::1]:{port}", "-w", "1", bind=False, wait=1)
    assert httpx.get(f"http://[::1]:{port}/").status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_fd_bind_serves_an_inherited_socket(serve):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    try:
        server = serve("-b", f"fd://{fd}", "-w", "1", bind=False, port=port, pass_fds=(fd,), wait=1)
        assert server.get().status_code == 200
    finally:
        listener.close()


def test_workers_auto_is_the_usable_cpu_count(serve):
    expected = usable_cpu_count()
    assert expected == len(os.sched_getaffinity(0)) or expected < len(os.sched_getaffinity(0))
    server = serve("-w", "auto", wait=expected)
    assert len(server.workers()) == expected
    assert f"-w auto: {expected} worker" in server.log()


def test_library_run_serves_an_app_object_from_main(serve):
    port = free_port()
    server = serve(command=[sys.executable, str(APPS / "embedded.py"), str(port)], port=port)
    server.wait_workers(2)
    assert server.get().text == "embedded"
    titles = sorted(server.processes().values())
    assert titles[-1].startswith("forkserve: zygote")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert "run returned 0" in server.log()


def test_library_run_raises_typed_errors():
    try:
        forkserve.run("hello:app", workers="many")
    except forkserve.ConfigError as error:
        assert error.exit_code == 2
        assert str(error) == "workers= 'many': expected a number of workers of at least 1, or 'auto'"
    else:
        raise AssertionError("expected ConfigError")


def test_library_server_in_a_thread_stops_without_signals(tmp_path):
    port = free_port()
    sys.path.insert(0, str(APPS))
    try:
        server = forkserve.Server(
            "hello:app", handle_signals=False, workers=1, bind=f"127.0.0.1:{port}", app_dir=str(APPS)
        )
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(server.run()))
        previous = signal.getsignal(signal.SIGTERM)
        thread.start()
        try:
            wait_until(lambda: _answers(port), 15, "the embedded server to answer")
            assert signal.getsignal(signal.SIGTERM) is previous
            children = [p for p in _children() if "forkserve:" in p[1]]
            assert len(children) == 2, children
        finally:
            server.stop()
            thread.join(20)
        assert result == [0]
        assert not [p for p in _children() if "forkserve:" in p[1]]
    finally:
        sys.path.remove(str(APPS))


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _children() -> list[tuple[int, str]]:
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            found.append((child.pid, " ".join(child.cmdline())))
        except psutil.Error:
            continue
    return found


def test_module_entry_point_matches_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "forkserve", "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"forkserve {forkserve.__version__}"


def test_library_master_sigkill_leaves_no_orphans(serve):
    # Fork mode: the zygote is a fork of the master, so it must not keep the master's end of the
    # "alive" pipe open, or nobody would notice the master's death.
    port = free_port()
    server = serve(command=[sys.executable, str(APPS / "embedded.py"), str(port)], port=port)
    server.wait_workers(2)
    family = set(server.processes())
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    wait_until(lambda: not [pid for pid in family if alive(pid)], 2.0, "zygote and workers to exit")


def test_fleet_events_tell_the_story_of_scale_reload_and_stop(tmp_path):
    """The feed that status, metrics and systemd read: each step arrives, in order, with its facts."""
    port = free_port()
    sys.path.insert(0, str(APPS))
    try:
        server = forkserve.Server(
            "hello:app", handle_signals=False, workers=1, bind=f"127.0.0.1:{port}", app_dir=str(APPS)
        )
        thread = threading.Thread(target=server.run)
        thread.start()
        feed = server.master.events
        kinds = lambda: [e.kind for e in feed.recent()]  # noqa: E731
        try:
            wait_until(lambda: "serving" in kinds(), 15, "the server to serve", lambda: str(kinds()))
            server.scale(+1)
            wait_until(
                lambda: kinds().count("worker_ready") == 2, 15, "a second ready worker", lambda: str(kinds())
            )
            assert server.master.call(lambda: server.master.desired).result(5) == 2
            server.reload()
            wait_until(lambda: "reload_finished" in kinds(), 30, "the reload to finish", lambda: str(kinds()))
        finally:
            server.stop()
            thread.join(20)
        assert not thread.is_alive()
        story = kinds()
        assert story[0] == "serving"
        assert story.index("scaled") < story.index("reload_started") < story.index("reload_finished")
        assert story[-1] == "stopped"
        # Stopping comes before the last workers leave, so an observer can say why they leave.
        assert story.index("stopping") < len(story) - 2 and story[-2] == "worker_exited"
        scaled = next(e for e in feed.recent() if e.kind == "scaled")
        assert (scaled.fields["before"], scaled.fields["after"], scaled.fields["reason"]) == (1, 2, "api")
        # The reload replaced both generation-1 workers, as planned exits, before it finished.
        finish = story.index("reload_finished")
        replaced = [e for e in feed.recent()[:finish] if e.kind == "worker_exited"]
        assert len(replaced) == 2 and all(
            e.fields["planned"] and e.fields["generation"] == 1 for e in replaced
        )
        assert [e.fields["generation"] for e in feed.recent() if e.kind == "reload_finished"] == [2]
    finally:
        sys.path.remove(str(APPS))
