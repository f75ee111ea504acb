"""How many workers, of which generation: reconcile with the plan, reload, scale.

``_reconcile`` runs on every pass of the loop: it asks the pure ``policy.fleet.plan`` which workers
to start and retire, applies the answer, and notices when a reload has finished. A reload, a scale
(signal, control socket, API) or an autoscaler sample only changes what the plan is given.
"""

from __future__ import annotations

import logging
import signal
import time

from forkserve.common import hooks
from forkserve.config.envfile import read_env_file
from forkserve.errors import ConfigError
from forkserve.master.core import MasterCore
from forkserve.master.zygotes import ZygoteHandle
from forkserve.policy.fleet import Retire, Spawn, WorkerView, plan
from forkserve.policy.lifecycle import SERVING_OR_ABOUT_TO, State
from forkserve.policy.masterstate import Reload, ReloadEnded
from forkserve.policy.zygoteidle import ZygoteMove, ZygoteView, fleet_full, zygote_move
from forkserve.services import events
from forkserve.services.autoscaler import Autoscaler, Measurement, measure

logger = logging.getLogger("forkserve")


class FleetChanges(MasterCore):
    @property
    def worker_limit(self) -> int:
        """The most workers the scoreboard holds (half its slots: the rest are for reloads)."""
        return self.scoreboard.capacity // 2

    def _start_autoscaler(self) -> None:
        want_memory = self.scaling.wants_memory
        self.autoscaler = Autoscaler(
            self.config.scale_interval,
            lambda: measure(self.listeners, self.scoreboard, want_memory=want_memory),
            lambda measurement: self._request(lambda: self._apply_scaling(measurement)),
        )
        self.autoscaler.start()

    def _apply_scaling(self, measurement: Measurement) -> None:
        if self.state.stopping:
            return
        before = self.desired
        self.desired, recycles = self.scaling.apply(measurement, self.desired, time.monotonic())
        if self.desired != before:
            self.events.emit(
                events.SCALED, f"workers: {before} -> {self.desired}", before=before, after=self.desired,
                reason="autoscaler",
            )  # fmt: skip
        for recycle in recycles:
            record = self.workers.get(recycle.slot)
            if record is None or record.worker_id != recycle.worker_id or record.outgoing:
                continue
            if record.state is State.READY:
                logger.warning(
                    "replacing worker %d (pid %d): %s", record.worker_id, record.pid, recycle.reason
                )
                record.outgoing = True
                self.events.emit(
                    events.RECYCLE, f"replacing worker {record.worker_id}: {recycle.reason}",
                    worker_id=record.worker_id, pid=record.pid, reason="memory",
                )  # fmt: skip

    def _set_desired(self, count: int, reason: str) -> bool:
        """Set the number of workers; False (and a warning) when COUNT is out of range."""
        capacity = self.worker_limit
        if count < 1 or count > capacity:
            logger.warning("keeping %d workers: the number must be from 1 to %d", self.desired, capacity)
            return False
        logger.info("workers: %d -> %d", self.desired, count)
        before, self.desired = self.desired, count
        if before != count:
            self.events.emit(
                events.SCALED, f"workers: {before} -> {count}", before=before, after=count, reason=reason
            )
        return True

    def begin_reload(self) -> None:
        if self.state.stopping:
            return
        generation = self.generations.next_number()
        self.state.apply(Reload(generation, time.monotonic()))
        self.events.emit(events.RELOAD_STARTED, f"reload to generation {generation}", generation=generation)
        if self.config.env_file:
            try:
                self.app_environ = read_env_file(self.config.env_file)
            except ConfigError as error:
                logger.error("reload aborted: %s; the running generation keeps serving", error)
                self._reload_ended(generation, aborted=str(error))
                return
        hooks.run_master_hook("on_reload", self.config, self._server_info(generation))
        if not self.exec_mode:
            # An app object cannot be re-imported: new workers come from the same zygote.
            logger.info("reloading: replacing workers with generation %d (same code: app object)", generation)
            self.generations.share_zygote(generation)
            if self.config.env_file:
                # Too late for the app's import; each new worker sets these before it serves.
                self.generations.zygotes[-1].environ = self.app_environ
            return
        logger.info("reloading: starting generation %d", generation)
        self._start_zygote(generation)

    def _publish_fleet_size(self) -> None:
        """What ``forkserve.worker_info()`` reads in the workers: how many there are, and may be."""
        header = self.scoreboard.header
        header.workers = self.desired
        header.max_workers = max(self.desired, self.scaling.settings.max_workers)

    def _reconcile(self, now: float) -> None:
        self._publish_fleet_size()
        zygote = self.generations.current_zygote()
        idle_exit = self.config.zygote_idle_exit
        if zygote is None:
            self._retry_zygote(now)
            if idle_exit is None:
                return
        views = [WorkerView(r.worker_id, r.generation, r.state, r.slot, r.outgoing) for r in self.workers]
        nobody_serving = not any(view.state in SERVING_OR_ABOUT_TO for view in views)
        rescue = nobody_serving and self.backoff.may_rescue(now)

        def may_start(worker_id: int) -> bool:
            return self.backoff.may_start(worker_id, now) or (rescue and worker_id == 1)

        actions = plan(
            views,
            desired=self.desired,
            generation=self.generations.current,
            may_start=may_start,
            batch=self.config.reload_batch,
        )
        spawn_wanted = any(isinstance(action, Spawn) for action in actions)
        for action in actions:
            if isinstance(action, Spawn):
                if zygote is None:
                    continue  # asked for again on the next pass, once a zygote has loaded
                if not self.backoff.may_start(action.worker_id, now):
                    logger.warning(
                        "no worker is serving: starting worker %d now despite its back-off "
                        "(at most one such start a second)", action.worker_id,
                    )  # fmt: skip
                    self.backoff.rescued(now)
                if self.workers.spawn(zygote, action.worker_id, self.generations.current, now) is None:
                    logger.error("no free scoreboard slot for worker %d", action.worker_id)
                zygote.asked_at = now
            elif isinstance(action, Retire):
                record = self.workers.get(action.slot)
                if record is not None and record.state in SERVING_OR_ABOUT_TO:
                    logger.info(
                        "retiring worker %d (pid %d): %s", record.worker_id, record.pid, action.reason
                    )
                    self.workers.stop(
                        record, signal.SIGTERM, self.config.graceful_timeout, now, action.reason
                    )
        if idle_exit is not None:
            self._zygote_idle_exit(zygote, views, spawn_wanted, idle_exit, now)
        self.generations.retire_idle({r.generation for r in self.workers.live()})
        self._check_reload_finished(now)

    def _zygote_idle_exit(
        self, zygote: ZygoteHandle | None, views: list[WorkerView], spawn_wanted: bool, idle_exit: float,
        now: float,
    ) -> None:  # fmt: skip
        """--zygote-idle-exit: retire the idle zygote of a full fleet, or start one for a worker wanted."""
        generation = self.generations.current
        view = ZygoteView(
            running=zygote is not None,
            starting=self.generations.pending is not None or self.zygote_retry is not None,
            fleet_full=fleet_full(views, desired=self.desired, generation=generation),
            spawn_wanted=spawn_wanted,
            idle_for=now - zygote.asked_at if zygote is not None else 0.0,
            reloading=self.state.reloading is not None,
        )
        move = zygote_move(view, idle_exit=idle_exit)
        if move is ZygoteMove.RETIRE and zygote is not None:
            logger.info(
                "retiring the zygote of generation %d (pid %d): all %d workers serve and it has forked "
                "none for %g s (--zygote-idle-exit); the next worker wanted starts a fresh one",
                generation, zygote.pid, self.desired, idle_exit,
            )  # fmt: skip
            self.generations.retire_idle_zygote(zygote)
        elif move is ZygoteMove.START:
            why = " and the zygote retired while idle" if self.generations.idle_retired == generation else ""
            logger.info("starting a zygote for generation %d: a worker is wanted%s", generation, why)
            self._start_zygote(generation)

    def _check_reload_finished(self, now: float) -> None:
        generation = self.state.reloading
        if generation is None or self.generations.pending is not None:
            return
        live = self.workers.live()
        ready = [r for r in live if r.generation == generation and r.state is State.READY]
        if len(ready) >= self.desired and all(r.generation == generation for r in live):
            self._reload_ended(generation)

    def _reload_ended(self, generation: int, aborted: str | None = None) -> None:
        started = self.state.reload_started
        if self.state.apply(ReloadEnded(generation)) is not None:
            return
        seconds = round(time.monotonic() - started, 3)
        if aborted:
            self.events.emit(
                events.RELOAD_ABORTED, f"reload to generation {generation} aborted: {aborted}",
                generation=generation, reason=aborted,
            )  # fmt: skip
        else:
            self.events.emit(
                events.RELOAD_FINISHED, f"generation {generation} serves ({seconds} s)",
                generation=generation, seconds=seconds,
            )  # fmt: skip

    def _abort_generation(self, generation: int, now: float, reason: str = "failed to boot") -> None:
        previous = self.generations.revert(generation)
        self._reload_ended(generation, aborted=reason)
        logger.error(
            "reload aborted: generation %d %s; generation %s keeps serving", generation, reason, previous
        )
        if previous is None:
            return
        for record in self.workers.live():
            if record.generation == generation:
                self.workers.stop(record, signal.SIGTERM, self.config.graceful_timeout, now, "reload aborted")
