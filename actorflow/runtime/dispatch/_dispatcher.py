"""The dispatcher: one actor that runs the runs' tasks through a transport and reports them.

Whatever runs the steps (the process pool, inline threads, a Dask or Ray cluster: a
:class:`~actorflow.runtime.dispatch._transport.Transport`), this actor does the same:

- **The task table.** Each task of a ``Dispatch`` gets a :class:`Task` here and stays until
  its transport says it is over (``finished``, ``fail``, ``not_started``, ``drop``) or its
  deadline passes. Transports look tasks up here; they keep no table of their own.
- **Deadlines.** A task's ``timeout`` and ``heartbeat_timeout`` count from the moment its
  transport says it started (a local worker took it up, a remote step asked to start), not
  from its dispatch: a task waiting for a free worker is not late. Only started tasks with a
  timeout are *armed*, so finding the nearest deadline never walks thousands of queued
  tasks. Past its deadline a task fails (``StepTimeout`` / ``HeartbeatTimeout``) and its
  transport halts it (kills its worker, restarts a Dask worker, cancels a Ray task).
- **Cancels.** Every task of a cancelled run (or a cancelled step) is marked and given to
  its transport to stop; nothing it reports afterwards is reported on.
- **Drains and the stop.** A drain starts nothing new (the start gate closes, the transport
  takes back what it sent that has not started) and completes once no started task is
  left. At the stop, every task that never started is recorded as such (``_unstarted``),
  so recovery does not count it as an interrupted attempt.
- **Step queues.** A task whose step was given a queue goes to its transport only once the
  queue has room (``_step_queues``); until then it waits in the table, unsent.
- **Requests** of running steps (``ctx.steps[...]``, values by reference, services,
  breakers, ``ctx.state``, heartbeats, log records, "may I start") are answered the same
  for every transport (``_asking.StepRequests``, :func:`~._core.answer_request`).
- **Reports** go to each run's shard, batched: one message per shard per wake-up. A
  success may wait a little for others to share its message, write and commit, when its
  run has a task per worker still to do (:class:`~._core.Reports` says when and why).

The actor's inbox (:class:`SelectorInbox`) also waits on whatever the transport registers
(a pool's pipes and process sentinels) and on the nearest deadline, so results, crashes
and timeouts all arrive as messages on this one thread, which owns every piece of state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from actorflow.config import EngineConfig
from actorflow.runtime.dispatch._asking import Beat, Finished, Logged, Started, StepRequests
from actorflow.runtime.dispatch._core import (
    CRASH_TYPES,
    DispatcherStats,
    Reports,
    attempt_report,
    linger_most,
    timeout_error,
)
from actorflow.runtime.dispatch._step_queues import StepQueues
from actorflow.runtime.dispatch._transport import Task, Transport, TransportHost
from actorflow.runtime.kernel._costs import CostBook
from actorflow.runtime.kernel._inbox import Actor, IoReady, SelectorInbox, Tick
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    CancelTasks,
    Dispatch,
    Drain,
    ErrorInfo,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence._unstarted import StartGate, left_in_inbox, record
from actorflow.store._logs import keep_level
from actorflow.store._protocol import Store

if TYPE_CHECKING:
    from actorflow.runtime._core import Core

__all__ = ["Beat", "Dispatcher", "Finished", "Started"]

log = logging.getLogger("actorflow.dispatcher")


class Dispatcher(StepRequests, Actor):
    """Runs tasks through a transport and reports their outcome (see the module docstring).

    Args:
        config: the engine configuration.
        route: run id -> its shard's actor ref.
        store: read to answer steps' ``ctx.steps[...]`` requests.
        ready: completed once the transport can run tasks.
        host: the engine core (``ctx.state``, services, blobs, the writer), or None.
        transport: ``transport(dispatcher) -> Transport``: how tasks run (an executor's
            :meth:`~actorflow.Executor.transport`).
    """

    @staticmethod
    def _create_actor_inbox() -> Any:
        return SelectorInbox()

    def __init__(
        self,
        config: EngineConfig,
        route: Callable[[str], pykka.ActorRef[Any]],
        store: Store,
        ready: Promise[None],
        host: Core | None,
        transport: Callable[[TransportHost], Transport],
    ) -> None:
        super().__init__()
        self.config = config
        self.store = store
        self.host = host
        self.ready = ready
        # What each function costs per item: learnt here, from every transport's outcomes.
        self.costs = host.costs if host is not None else CostBook()
        self.stats = DispatcherStats()
        self.reports = Reports(route)
        self.tasks: dict[int, Task] = {}
        self._per_run: dict[str, int] = {}  # tasks in the table, per run (see _linger)
        self._holding = False  # reports held back (counted as work under a test harness)
        # Started tasks with a timeout or heartbeat timeout: the only ones with a deadline.
        self._armed: dict[int, Task] = {}
        self._next = 0
        self._drain: Promise[None] | None = None
        self._stopping = False
        self._gate = StartGate()  # which remote tasks were let start; closed by a drain
        self._unstarted: list[Any] = []  # TaskSpecs never sent, or known not to have started
        self.queues = StepQueues(time.monotonic)  # steps given a queue wait here for room
        self.keep_level, self._log_ops = keep_level(config.step_logs), []
        inbox: SelectorInbox = self.actor_inbox  # type: ignore[assignment]
        self.inbox = inbox
        inbox.timeout_fn = self._timeout
        self.transport = transport(self)

    @property
    def draining(self) -> bool:
        """A drain (or the stop) began: nothing new is sent."""
        return self._drain is not None

    @property
    def stopping(self) -> bool:
        """The stop began."""
        return self._stopping

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self.transport.open()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            raise
        if self.transport.ready_at_open and not self.ready.done():
            self.ready.set_result(None)

    def on_stop(self) -> None:
        self._stopping = True
        begun = self._gate.close()
        transport = self.transport
        transport.stop()  # a pool's workers finish or drop what they hold, and exit
        unstarted = self._unstarted
        for task in list(self.tasks.values()):
            if task.cancelled:
                continue
            task.cancelled = True
            if task.started is None and task.id not in begun:
                unstarted.append(task.spec)  # it can no longer start: not an attempt
            transport.forget(task)
        self.stop_logs(self.tasks.values())  # before the reports (see StepRequests)
        self.tasks.clear()
        self._per_run.clear()
        self._armed.clear()
        if self.reports:
            self._send_reports()  # steps that finished as their workers stopped
        unstarted.extend(left_in_inbox(self.actor_inbox))
        record(getattr(self.host, "writer", None), unstarted)
        self._unstarted = []
        transport.close()
        self.inbox.close()
        if not self.ready.done():
            from actorflow.errors import PoolUnavailable

            self.ready.set_exception(PoolUnavailable("engine stopped before workers started"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        t = type(message)
        if t is Dispatch:
            self._dispatch(message.tasks)
        elif t is Finished:
            task = self.tasks.get(message.key)
            if task is not None:
                self._finished_remote(task, message.outcome)
        elif t is Started:
            task = self.tasks.get(message.key)
            if task is not None:
                self.started(task, message.worker, message.pid)
        elif t is Beat:
            task = self.tasks.get(message.key)
            if task is not None:
                self.beat(task, message.details)
        elif t is Logged:
            self.logged(message)
        elif t is Tick:
            self._tick()
        elif t is CancelTasks:
            self._cancel(frozenset(message.run_ids), frozenset(message.tasks))
        elif t is Drain:
            self._drain = message.done
            self._gate.close()  # a drain starts nothing new
            self.transport.withdraw()
            for task in self.queues.take_all():
                self.not_started(task)  # waited for its queue: never sent
            self.check_drained()
        elif not self.transport.on_message(message):
            return super().on_receive(message)
        if self.queues.dirty and self._drain is None:
            self._send_queued()
        self.flush_logs()  # before the reports: a step's records go with its result or before
        reports = self.reports
        if reports:
            now = time.monotonic()
            if reports.ready(now):
                self._send_reports()
            else:
                fresh = not self._holding or t is IoReady
                if not self._holding:
                    self._holding = True
                    if self.activity is not None:
                        self.activity.begin()  # held reports are work in flight
                if fresh:
                    # Held until ``due`` anyway: results that come meanwhile can wait in
                    # their pipes too, if every busy worker has work queued that long.
                    # Measured only when the workers' queues seen from here are current
                    # (the pipes were just read, or nothing was held): while the pipes
                    # wait, those queues do not shrink here, so a later measure is stale.
                    due = reports.due
                    assert due is not None
                    slack = self.transport.slack()
                    if slack > 0:
                        self.inbox.quiet(min(due, now + 0.75 * slack))
        return None

    def _send_reports(self) -> None:
        self.reports.send()
        self.inbox.quiet(None)
        if self._holding:
            self._holding = False
            if self.activity is not None:
                self.activity.end()

    def statistics(self) -> DispatcherStats:
        """Current counters (ask this actor through a proxy; not for the hot path)."""
        self.transport.statistics(self.stats)
        return DispatcherStats(**self.stats.__dict__)

    def _dispatch(self, specs: Any) -> None:
        if self._drain is not None:
            self._unstarted.extend(specs)  # never sent: recovery sends them again
            return
        tasks = self.tasks
        per_run = self._per_run
        batch = []
        n = self._next
        for spec in specs:
            n += 1
            task = tasks[n] = Task(n, spec)
            batch.append(task)
            per_run[spec.run_id] = per_run.get(spec.run_id, 0) + 1
        self._next = n
        if any(task.spec.queue is not None for task in batch):
            batch = [t for t in batch if t.spec.queue is None or self.queues.admit(t)]
        self.transport.submit(batch)

    def _send_queued(self) -> None:
        """Send the tasks their queues have room for now."""
        batch = self.queues.ready()
        if batch:
            self.transport.submit(batch)

    # -- what transports call ----------------------------------------------------------------

    def started(self, task: Task, worker: str = "", pid: int = 0) -> None:
        """``task`` starts now: its deadlines count from here."""
        task.started = task.beat = time.monotonic()
        if worker:
            task.worker = worker
        if pid:
            task.pid = pid
        spec = task.spec
        if spec.timeout is not None or spec.heartbeat_timeout is not None:
            self._armed[task.id] = task

    def beat(self, task: Task, details: bytes | None) -> None:
        """``task`` sent a heartbeat (with ``details``)."""
        task.beat = time.monotonic()
        task.details = details

    def finished(self, task: Task, ok: bool, data: Any, started: float, ended: float) -> None:
        """``task`` ended with what :func:`~actorflow.workers._task.execute` returned."""
        self._remove(task)
        spec = task.spec
        chunk = spec.chunk
        items = len(chunk) if chunk else 1
        self.costs.observe(spec.fn.key, (ended - started) / items, items)
        if task.cancelled:
            return
        linger = self._linger(task, (ended - started) / items)  # once per task, not per item
        if chunk is not None and ok:
            for item, (item_ok, item_data, t0, t1) in zip(chunk, data, strict=True):
                self._outcome(task, item[0], item_ok, item_data, t0, t1, None, linger)
        else:
            self._outcome(task, spec.step, ok, data, started, ended, task.details, linger)
        if self._drain is not None:
            self.check_drained()

    def fail(self, task: Task, error: ErrorInfo) -> None:
        """``task`` failed in a way the engine saw (a crash, no worker, a lost value)."""
        self._remove(task)
        if not task.cancelled:
            spec = task.spec
            self.reports.add(
                AttemptFailed(
                    spec.run_id,
                    spec.step,
                    spec.attempt,
                    error,
                    None,
                    time.time(),
                    task.pid or None,
                )
            )
        if self._drain is not None:
            self.check_drained()

    def drop(self, task: Task) -> None:
        """Forget ``task`` without a report (cancelled, or it never ran and runs no more)."""
        self._remove(task)
        if self._drain is not None:
            self.check_drained()

    def not_started(self, task: Task) -> None:
        """``task`` was given back unstarted (a drain, the stop): not an attempt."""
        self._remove(task)
        if not task.cancelled:
            self._unstarted.append(task.spec)
        if self._drain is not None:
            self.check_drained()

    def check_drained(self) -> None:
        """Complete the drain once no started task is left (the rest cannot start)."""
        drain = self._drain
        if drain is None or drain.done():
            return
        gate = self._gate
        for task in self.tasks.values():
            if task.started is not None or gate.started(task.id):
                return
        drain.set_result(None)

    def _remove(self, task: Task) -> None:
        if self.tasks.pop(task.id, None) is not None:
            run_id = task.spec.run_id
            left = self._per_run[run_id] - 1
            if left:
                self._per_run[run_id] = left
            else:
                del self._per_run[run_id]
        self._armed.pop(task.id, None)
        self._gate.end(task.id)
        self.end_logs(task)
        if task.spec.queue is not None:
            self.queues.release(task)

    def _linger(self, task: Task, seconds: float) -> float:
        """How long the reports of ``task``'s successes may wait for others (see ``Reports``).

        As long as the run still has a task per worker in the table: the workers have the
        run's work to go on with, for about an item's time (``seconds``) per task a worker
        has ahead, and half of that is spent waiting at most.
        """
        workers = self.transport.worker_count()
        ahead = self._per_run.get(task.spec.run_id, 0)
        if workers <= 0 or ahead < workers:
            return 0.0
        self.reports.most = linger_most(workers)
        return 0.5 * max(0.0, seconds) * ahead / workers

    def _outcome(
        self,
        task: Task,
        step: str,
        ok: bool,
        data: Any,
        started: float,
        ended: float,
        details: bytes | None,
        linger: float,
    ) -> None:
        """Report one attempt; a success may wait ``linger`` seconds, a failure never does."""
        spec = task.spec
        stats = self.stats
        if not ok:
            error = self.transport.failure(task, data)
            if error is not None:
                self.reports.add(
                    AttemptFailed(spec.run_id, step, spec.attempt, error, None, ended, None)
                )
                return
            stats.failed += 1
            linger = 0.0
        else:
            stats.succeeded += 1
        self.reports.add(
            attempt_report(spec, step, ok, data, started, ended, task.pid, details), linger
        )

    def _finished_remote(self, task: Task, outcome: Any) -> None:
        if outcome is None:  # it was refused the start (a drain): it never ran
            self.not_started(task)
            return
        if isinstance(outcome, BaseException):
            self.stats.crashes += 1
            self.fail(
                task,
                ErrorInfo(
                    "crash",
                    CRASH_TYPES[0],
                    CRASH_TYPES,
                    f"the {self.transport.where} task failed: {type(outcome).__name__}: {outcome}",
                    details=task.details,
                ),
            )
            return
        ok, data, started, ended = outcome
        self.finished(task, ok, data, started, ended)

    # -- deadlines, cancels ------------------------------------------------------------------

    def _timeout(self) -> float | None:
        reports = self.reports
        if reports and reports.ready(time.monotonic()):
            self._send_reports()  # never sleep on results that are due
        nearest = self.transport.next_wakeup()
        due = self.queues.next_due()
        if due is not None and (nearest is None or due < nearest):
            nearest = due
        if reports and reports.due is not None and (nearest is None or reports.due < nearest):
            nearest = reports.due
        for task in self._armed.values():
            d = task.deadline()
            if d is not None and (nearest is None or d < nearest):
                nearest = d
        return None if nearest is None else max(0.0, nearest - time.monotonic())

    def _tick(self) -> None:
        now = time.monotonic()
        transport = self.transport
        for task in list(self._armed.values()):
            d = task.deadline()
            if d is None or d > now:
                continue
            self._remove(task)
            task.cancelled = True
            spec = task.spec
            self.stats.timeouts += 1
            started = task.started if task.started is not None else now
            error = timeout_error(spec, started, task.beat, task.details, transport.halted)
            log.warning("step %r of run %s: %s", spec.step, spec.run_id, error.message)
            self.reports.add(
                AttemptFailed(
                    spec.run_id, spec.step, spec.attempt, error, None, time.time(), task.pid or None
                )
            )
            transport.halt(task)
        transport.tick(now)
        due = self.queues.next_due()
        if due is not None and due <= now:
            self.queues.dirty = True  # a rate window has room again
        if self._drain is not None:
            self.check_drained()

    def _cancel(self, run_ids: frozenset[str], steps: frozenset[tuple[str, str]]) -> None:
        doomed: list[Task] = []
        unsent: list[Task] = []
        for task in self.tasks.values():
            spec = task.spec
            if not task.cancelled and (spec.run_id in run_ids or (spec.run_id, spec.step) in steps):
                task.cancelled = True
                (unsent if spec.queue is not None and self.queues.held(task) else doomed).append(
                    task
                )
        for task in unsent:
            self.drop(task)  # it waited for its queue: its transport never had it
        if doomed:
            self.transport.cancel(doomed)
        if self._drain is not None:
            self.check_drained()
