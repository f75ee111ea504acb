"""Restart back-off and boot-failure verdicts, with the clock passed in as a plain float ``now``."""

from __future__ import annotations

import pytest

from forkserve.policy.backoff import (
    FIRST_DELAY,
    MAX_DELAY,
    STABLE_AFTER,
    Backoff,
    Verdict,
    boot_failure_verdict,
    restart_delay,
)

YOUNG = STABLE_AFTER / 10  # died well before it counted as healthy
OLD = STABLE_AFTER * 10  # ran long enough that its death is not part of a crash loop


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (-1, 0.0),
        (0, 0.0),
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (6, 16.0),
        (7, 30.0),
        (8, 30.0),
        (100, 30.0),
        (1024, 30.0),
        # A crash loop at the 30 s cap reaches 1025 young deaths after about eight and a half hours;
        # 0.5 * 2.0 ** 1024 overflows a float, and the master must not die of its own back-off.
        (1025, 30.0),
        (10**6, 30.0),
    ],
)
def test_restart_delay_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert restart_delay(failures) == delay


@pytest.mark.parametrize(
    ("failures", "first", "cap", "delay"),
    [(1, 2.0, 60.0, 2.0), (3, 2.0, 60.0, 8.0), (10, 2.0, 60.0, 60.0), (2, 0.5, 0.75, 0.75)],
)
def test_restart_delay_custom_first_and_cap(failures: int, first: float, cap: float, delay: float) -> None:
    assert restart_delay(failures, first=first, cap=cap) == delay


def test_defaults_are_the_module_constants() -> None:
    assert restart_delay(1) == FIRST_DELAY
    assert restart_delay(10) == MAX_DELAY


def test_young_deaths_accumulate_and_the_delay_doubles() -> None:
    backoff = Backoff()
    now = 1000.0
    delays = []
    for _ in range(5):
        delay = backoff.record_exit(1, lifetime=YOUNG, now=now, planned=False)
        delays.append(delay)
        assert backoff.not_before[1] == now + delay
        now += delay + YOUNG
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff.failures[1] == 5


@pytest.mark.parametrize("lifetime", [STABLE_AFTER, OLD])
def test_a_long_lived_death_resets_the_count(lifetime: float) -> None:
    backoff = Backoff()
    for now in (0.0, 1.0, 2.0):
        backoff.record_exit(1, lifetime=YOUNG, now=now, planned=False)
    assert backoff.failures[1] == 3

    # A crash after a healthy run is replaced at once: that is the point of a supervisor.
    assert backoff.record_exit(1, lifetime=lifetime, now=100.0, planned=False) == 0.0
    assert backoff.failures[1] == 0
    assert backoff.may_start(1, now=100.0)
    # And the next young death starts the doubling again from the first step.
    assert backoff.record_exit(1, lifetime=YOUNG, now=101.0, planned=False) == FIRST_DELAY


@pytest.mark.parametrize("lifetime", [0.0, YOUNG, OLD])
def test_planned_exits_reset_and_have_no_delay(lifetime: float) -> None:
    backoff = Backoff()
    for now in (0.0, 1.0, 2.0, 3.0):
        backoff.record_exit(2, lifetime=YOUNG, now=now, planned=False)
    # A worker we told to stop (scale-down, reload) is not crashing, however young it was.
    assert backoff.record_exit(2, lifetime=lifetime, now=50.0, planned=True) == 0.0
    assert backoff.failures[2] == 0
    assert backoff.not_before[2] == 50.0
    assert backoff.may_start(2, now=50.0)


def test_worker_ids_back_off_independently() -> None:
    backoff = Backoff()
    backoff.record_exit(1, lifetime=YOUNG, now=0.0, planned=False)
    backoff.record_exit(1, lifetime=YOUNG, now=1.0, planned=False)
    assert backoff.record_exit(2, lifetime=YOUNG, now=1.0, planned=False) == FIRST_DELAY
    assert backoff.failures == {1: 2, 2: 1}


@pytest.mark.parametrize(
    ("now", "may_start"),
    [
        (0.0, False),
        (100.0, False),
        (100.999, False),
        # The delay after the second young death is 1.0 s, from now=100.0.
        (101.0, True),
        (500.0, True),
    ],
)
def test_may_start_respects_not_before(now: float, may_start: bool) -> None:
    backoff = Backoff()
    backoff.record_exit(1, lifetime=YOUNG, now=99.0, planned=False)
    backoff.record_exit(1, lifetime=YOUNG, now=100.0, planned=False)
    assert backoff.not_before[1] == 101.0
    assert backoff.may_start(1, now) is may_start


def test_an_id_that_never_exited_may_start_at_once() -> None:
    assert Backoff().may_start(7, now=0.0)


def test_next_start_is_the_earliest_not_before() -> None:
    backoff = Backoff()
    assert backoff.next_start() is None
    backoff.record_exit(1, lifetime=YOUNG, now=10.0, planned=False)  # 10.5
    backoff.record_exit(2, lifetime=YOUNG, now=10.0, planned=False)
    backoff.record_exit(2, lifetime=YOUNG, now=10.2, planned=False)  # 11.2
    assert backoff.next_start() == 10.5


def test_stable_after_is_configurable() -> None:
    backoff = Backoff(stable_after=60.0)
    assert backoff.record_exit(1, lifetime=30.0, now=0.0, planned=False) == FIRST_DELAY
    assert backoff.record_exit(1, lifetime=60.0, now=1.0, planned=False) == 0.0


@pytest.mark.parametrize(
    ("died_booting", "server_ever_ready", "generation_ever_ready", "verdict"),
    [
        # Died after it served: an ordinary crash, whatever the history.
        (False, False, False, Verdict.RESPAWN),
        (False, False, True, Verdict.RESPAWN),
        (False, True, False, Verdict.RESPAWN),
        (False, True, True, Verdict.RESPAWN),
        # The very first start of the server failed: the app is broken.
        (True, False, False, Verdict.STOP_SERVER),
        (True, False, True, Verdict.STOP_SERVER),
        # A reload's new code never served: keep the old generation.
        (True, True, False, Verdict.ABORT_RELOAD),
        # Code that has served before failed to boot: transient, retry with back-off.
        (True, True, True, Verdict.RESPAWN),
    ],
)
def test_boot_failure_verdict_truth_table(
    died_booting: bool, server_ever_ready: bool, generation_ever_ready: bool, verdict: Verdict
) -> None:
    assert (
        boot_failure_verdict(
            died_booting=died_booting,
            server_ever_ready=server_ever_ready,
            generation_ever_ready=generation_ever_ready,
        )
        is verdict
    )


def test_rescue_lets_one_start_a_second_when_nobody_serves() -> None:
    # All workers backing off in step would leave nothing serving for the whole back-off.
    backoff = Backoff()
    assert backoff.may_rescue(100.0)
    backoff.rescued(100.0)
    assert not backoff.may_rescue(100.5)
    assert backoff.may_rescue(101.0)
