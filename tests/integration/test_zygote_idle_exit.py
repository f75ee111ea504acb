"""--zygote-idle-exit with real processes: the zygote leaves once the fleet serves, a worker wanted
later comes from a fresh zygote (which imports the code on disk), HUP and TERM work without one,
and a fresh zygote that cannot import the app costs one log line while the others serve."""

from __future__ import annotations

import os
import re
import signal

import httpx

from tests.conftest import alive, wait_until
from tests.integration.load import background_load
from tests.integration.test_control import status
from tests.integration.test_reload import write_app

IDLE = "0.5"
RETIRED = r"retiring the zygote of generation (\d+) \(pid \d+\)"


def zygotes(server) -> list[int]:
    return [pid for pid, title in server.processes().items() if "forkserve: zygote" in title]


def start(serve, tmp_path, *args: str, workers: int = 2):
    write_app(tmp_path, "v1")
    sock = tmp_path / "ctl.sock"
    server = serve(
        "--app-dir", str(tmp_path), "-w", str(workers), "--zygote-idle-exit", IDLE,
        "--control-socket", str(sock), *args, app="versioned:app", wait=workers,
    )  # fmt: skip
    server.sock = sock
    return server


def wait_retired(server, count: int = 1) -> None:
    server.wait_log(RETIRED, count=count)
    wait_until(lambda: not zygotes(server), 10, "the zygote to exit", server.tail)


def bodies_seen(server, wanted: set[str], timeout: float = 15) -> None:
    seen: set[str] = set()

    def found() -> bool:
        # A fresh connection per request, so the kernel spreads them over the workers.
        seen.add(httpx.get(server.url, headers={"connection": "close"}, timeout=5).text)
        return wanted <= seen

    wait_until(found, timeout, f"answers {sorted(wanted)}", lambda: f"seen {sorted(seen)}\n{server.tail()}")


def replaced(server, victim: int, count: int = 2, timeout: float = 15) -> int:
    """Wait for COUNT ready workers, VICTIM not among them; return its replacement's pid."""

    def settled() -> set[int]:
        workers = server.workers()
        ready = server.ready_workers(workers)
        return ready if len(ready) == len(workers) == count and victim not in ready else set()

    before = set(server.seen)
    now = wait_until(settled, timeout, f"a replacement for worker pid {victim}", server.tail)
    (new,) = now - before
    return int(new)


def error_lines(server) -> list[str]:
    return [line for line in server.log().splitlines() if "[ERROR]" in line or "Traceback" in line]


def test_the_zygote_exits_once_the_fleet_serves_and_a_fresh_one_replaces_a_killed_worker(serve, tmp_path):
    server = start(serve, tmp_path)
    first_zygote = zygotes(server)
    wait_retired(server)
    assert not alive(first_zygote[0])
    assert status(server.sock)["zygote"] == "retired"
    assert server.get().text == "v1"
    # A planned exit: nothing in the log reads as a failure.
    assert error_lines(server) == [], server.tail()

    # The code on disk changes without a HUP: the replacement's fresh zygote imports it.
    write_app(tmp_path, "v2")
    workers = server.wait_workers(2)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    replaced(server, victim)
    server.wait_log(r"starting a zygote for generation 1: a worker is wanted")
    bodies_seen(server, {"v1", "v2"})
    # The fresh zygote retires in its turn, and the one error line is the killed worker's.
    wait_retired(server, count=2)
    assert [line for line in error_lines(server) if "killed by SIGKILL" not in line] == [], server.tail()
    assert status(server.sock)["zygote"] == "retired"


def test_hup_without_a_zygote_rolls_in_the_new_generation_without_failures(serve, tmp_path):
    server = start(serve, tmp_path)
    wait_retired(server)
    with background_load(server.url, keep_alive=4, fresh=2) as load:
        write_app(tmp_path, "v2")
        server.signal(signal.SIGHUP)
        wait_until(
            lambda: sorted(server.processes().values())
            == [f"forkserve: worker {i} [versioned:app] gen 2" for i in (1, 2)],
            20, "generation 2 alone, its zygote retired", server.tail,
        )  # fmt: skip
        mark = load.ok
        wait_until(lambda: load.ok > mark + 50, 10, "requests on generation 2")
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert server.get().text == "v2"
    assert re.findall(RETIRED, server.log()) == ["1", "2"]
    assert error_lines(server) == [], server.tail()


def test_term_without_a_zygote_exits_0_and_leaves_nothing(serve, tmp_path):
    server = start(serve, tmp_path)
    wait_retired(server)
    workers = server.wait_workers(2)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0, server.tail()
    wait_until(lambda: not any(alive(pid) for pid in workers), 5, "the workers to exit")
    assert "forkserve stopped" in server.log()
    assert error_lines(server) == [], server.tail()


def test_a_fresh_zygote_that_cannot_import_the_app_logs_once_and_the_others_serve(serve, tmp_path):
    server = start(serve, tmp_path)
    wait_retired(server)
    write_app(tmp_path, "v2", broken=True)
    workers = server.wait_workers(2)
    victim = min(workers)
    with background_load(server.url, keep_alive=4, fresh=2) as load:
        os.kill(victim, signal.SIGKILL)
        server.wait_log(r"the zygote of generation 1 could not be started again: cannot load versioned:app")
        # Several tries, backed off (0.5 s, 1 s, 2 s...): one line, not one per try.
        wait_until(lambda: status(server.sock)["zygote"] == "failed", 10, "the zygote shown as failed")
        mark = load.ok
        wait_until(lambda: load.ok > mark + 50, 10, "requests served by the other worker")
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert len(re.findall(r"could not be started again", server.log())) == 1, server.tail()
    assert "Traceback" not in server.log()
    # Fixed on disk: the next try loads it, and worker 1 is back.
    write_app(tmp_path, "v3")
    replaced(server, victim, timeout=30)
    bodies_seen(server, {"v1", "v3"})
    wait_retired(server, count=2)


def test_an_app_object_is_refused(tmp_path):
    import forkserve

    async def app(scope, receive, send):  # pragma: no cover - never served
        pass

    try:
        forkserve.run(app, zygote_idle_exit=1, bind="127.0.0.1:0")
    except forkserve.ConfigError as error:
        assert "--zygote-idle-exit needs the app as an import string" in str(error)
        assert error.exit_code == 2
    else:
        raise AssertionError("expected ConfigError")


def test_without_the_setting_a_killed_zygote_whose_app_no_longer_imports_is_retried(serve, tmp_path):
    # The same path as a crashed zygote's replacement: it used to read "reload aborted" and stop
    # there, leaving no zygote to replace any worker.
    write_app(tmp_path, "v1")
    server = serve("--app-dir", str(tmp_path), "-w", "2", app="versioned:app", wait=2)
    (zygote,) = zygotes(server)
    write_app(tmp_path, "v2", broken=True)
    os.kill(zygote, signal.SIGKILL)
    server.wait_log(r"the zygote of generation 1 could not be started again: cannot load versioned:app")
    assert "reload aborted" not in server.log()
    assert server.get().text == "v1"
    write_app(tmp_path, "v3")
    wait_until(lambda: zygotes(server), 20, "a zygote that loaded", server.tail)
    victim = min(server.wait_workers(2))
    os.kill(victim, signal.SIGKILL)
    replaced(server, victim, timeout=30)
    bodies_seen(server, {"v1", "v3"})
