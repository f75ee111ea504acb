"""The autoscaler against real load: grow, shrink, recycle on memory, respect the reserve."""

from __future__ import annotations

import re
import time

from tests.conftest import wait_until
from tests.integration.load import background_load

FAST = ("--scale-interval", "0.5", "--scale-cooldown", "1", "--scale-down-idle", "3")


def test_grows_under_cpu_load_and_shrinks_back_when_idle(serve):
    server = serve("-w", "1", "--max-workers", "3", *FAST, wait=1)
    with background_load(server.url, keep_alive=16, fresh=0, path="/cpu") as load:
        wait_until(lambda: len(server.workers()) >= 2, 20, "a second worker", server.tail)
        server.wait_log(r"scale up 1\u21922: (accept queue \d+ > 8|workers [\d.]+% busy > 80%) for [\d.]+ s")
        # The 16 clients were all connected to worker 1 before worker 2 existed; rebalancing sends
        # some of them over (Connection: close, then a reconnect), so worker 2 serves the burst too.
        server.wait_log(r"rebalancing: \d+ of \d+ keep-alive connections will reconnect")
        wait_until(lambda: len({body.split()[0] for body in load.bodies()}) >= 2, 10, "a second serving pid")
    stopped = time.monotonic()
    assert load.failed == 0, f"{load}\n{server.tail()}"
    # --scale-down-idle 3 s per retirement, plus a few intervals.
    wait_until(lambda: len(server.workers()) == 1, 3 * 2 + 6, "back to one worker", server.tail)
    assert time.monotonic() - stopped < 12
    server.wait_log(r"scale down 2\u21921: idle for \d+ s")
    assert server.get().status_code == 200


def test_scale_up_forks_from_the_loaded_zygote_not_a_new_import(serve):
    # The app takes 2 s to import; a worker added by the autoscaler must not.
    server = serve("-w", "1", "--max-workers", "2", *FAST, app="slow_import:app", wait=1)
    with background_load(server.url, keep_alive=16, fresh=0, path="/cpu") as load:
        [line] = server.wait_log(r"scale-up served: worker 2 ready (\d+) ms after the decision", timeout=20)
    assert load.failed == 0, str(load)
    assert int(line) < 1000, server.tail()


def test_worker_outgrowing_max_worker_memory_is_replaced_without_failures(serve):
    server = serve("-w", "1", "--max-worker-memory", "200", "--scale-interval", "0.5", wait=1)
    [victim] = server.workers()
    with background_load(server.url, keep_alive=4, fresh=2) as load:
        for _ in range(12):  # 12 x 20 MB: past 200 MB
            assert server.get("/leak").status_code == 200
        server.wait_log(rf"replacing worker 1 \(pid {victim}\): memory \d+ MB > 200 MB", timeout=10)
        wait_until(
            lambda: victim not in server.workers() and len(server.workers()) == 1, 15, "the replacement"
        )
        mark = load.ok
        wait_until(lambda: load.ok > mark + 20, 10, "requests after the replacement")
    assert load.failed == 0, f"{load}\n{server.tail()}"


def test_memory_reserve_blocks_scale_up(serve):
    server = serve("-w", "1", "--max-workers", "3", "--memory-reserve", "99%", *FAST, wait=1)
    # Four clients keep the one worker fully busy without queueing anyone for long.
    with background_load(server.url, keep_alive=4, fresh=0, path="/cpu") as load:
        server.wait_log(
            r"scale up blocked: workers [\d.]+% busy > 80%, but a new worker .* below --memory-reserve"
        )
        time.sleep(2)  # a few more intervals of sustained pressure: still no growth
    assert load.failed == 0
    assert len(server.workers()) == 1
    assert not re.search("scale up 1\u21922", server.log())
