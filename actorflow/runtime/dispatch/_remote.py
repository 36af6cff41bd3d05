"""What the Dask and the inline dispatchers share: tasks run by something else than our pool.

Both take the local :class:`~actorflow.runtime.dispatch._pool.Dispatcher`'s messages
(``Dispatch``, ``CancelTasks``, ``Drain``) and report the same ``AttemptSucceeded`` /
``AttemptFailed``, so supervisors, the store and recovery do not know where steps run. A
subclass says how a task is sent (:meth:`RemoteDispatcher.send`), how a running one is
stopped (:meth:`RemoteDispatcher.halt`) and how many workers there are; this class keeps the
table of tasks, their deadlines (counted from the moment a task reports that it started),
cancels, drains, and answers what running steps ask (:meth:`RemoteDispatcher.answer`).

A task sent is not yet started: it may wait in the executor's queue. A step asks to start
before its function is called, and from the drain on that is refused (the task ends as
not started, without running), so a drain waits only for the steps that did start, and
the tasks that never started are not attempts (``_unstarted.py``).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actorflow.config import EngineConfig
from actorflow.runtime.dispatch._core import (
    CRASH_TYPES,
    DispatcherStats,
    Reports,
    answer_request,
    attempt_report,
    blob_ref,
    timeout_error,
)
from actorflow.runtime.kernel._inbox import Actor, SelectorInbox, Tick, tell
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptSucceeded,
    CancelTasks,
    Dispatch,
    Drain,
    ErrorInfo,
    TaskSpec,
    Unmapped,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence._unstarted import StartGate, left_in_inbox, record
from actorflow.store._codec import TAG_BLOB, decode_value, encode_value
from actorflow.store._protocol import Store
from actorflow.workers._protocol import CALL_CHUNK

__all__ = ["Beat", "Finished", "RemoteDispatcher", "RemoteTask", "Started"]

log = logging.getLogger("actorflow.dispatcher")
step_log = logging.getLogger("actorflow.step")


class RemoteTask:
    """One task sent away, until its outcome is reported."""

    __slots__ = (
        "beat",
        "cancelled",
        "details",
        "handle",
        "key",
        "pid",
        "spec",
        "started",
        "worker",
    )

    def __init__(self, key: str, spec: TaskSpec) -> None:
        self.key = key
        self.spec = spec
        self.handle: Any = None  # what send() returned (a Dask future...)
        self.started: float | None = None  # monotonic, once it runs
        self.beat = 0.0
        self.worker = ""  # where it runs (a Dask worker's address)
        self.pid = 0  # the process running it
        self.details = spec.details
        self.cancelled = False


@dataclass(frozen=True, slots=True)
class Finished:
    """A task ended.

    ``outcome`` is what :func:`~actorflow.workers._task.execute` returned, the exception
    that stopped it, or None: it was refused the start and did not run.
    """

    key: str
    outcome: Any


@dataclass(frozen=True, slots=True)
class Started:
    """A task began to run (its timeout counts from now)."""

    key: str
    worker: str
    pid: int


@dataclass(frozen=True, slots=True)
class Beat:
    """A running step sent a heartbeat."""

    key: str
    details: bytes | None


class RemoteDispatcher(Actor):
    """Runs tasks through :meth:`send` and reports their outcome (see the module docstring).

    Args:
        config: the engine configuration.
        route: run id -> its shard's actor ref.
        store: read to answer steps' ``ctx.steps[...]`` requests.
        ready: completed once :meth:`open` succeeded.
        host: the engine core (``ctx.state``, services).
    """

    #: How a step stopped at its deadline is stopped, for its error message.
    halted = "stopped"
    #: Where tasks run, for error messages.
    where = "remote"

    @staticmethod
    def _create_actor_inbox() -> Any:
        return SelectorInbox()

    def __init__(
        self,
        config: EngineConfig,
        route: Callable[[str], pykka.ActorRef[Any]],
        store: Store,
        ready: Promise[None],
        host: Any,
    ) -> None:
        super().__init__()
        self._config = config
        self._route = route
        self._store = store
        self._ready = ready
        self._host = host
        self._tasks: dict[str, RemoteTask] = {}
        # Started tasks with a timeout or heartbeat timeout: the only ones with a deadline
        # (a few per worker), so a deadline scan never walks thousands of queued tasks.
        self._armed: dict[str, RemoteTask] = {}
        self._next = 0
        self._drain: Promise[None] | None = None
        self._gate = StartGate()  # which tasks started; closed by a drain or the stop
        self._unstarted: list[TaskSpec] = []  # never sent, or refused the start
        self._reports = Reports(route)
        self.stats = DispatcherStats()
        inbox: SelectorInbox = self.actor_inbox  # type: ignore[assignment]
        inbox.timeout_fn = self._timeout

    # -- what a subclass provides --------------------------------------------------------------

    def open(self) -> None:
        """Connect (on this actor's thread, at start); raise if it cannot run tasks."""

    def close(self) -> None:
        """Disconnect (at stop)."""

    @abc.abstractmethod
    def send(self, task: RemoteTask, body: tuple[Any, ...]) -> Any:
        """Start running ``body`` (see :meth:`task_tuple`); return a handle for :meth:`halt`."""

    @abc.abstractmethod
    def halt(self, task: RemoteTask) -> None:
        """Make sure ``task`` does nothing more (past its deadline, or cancelled)."""

    @abc.abstractmethod
    def worker_count(self) -> int:
        """How many workers run tasks."""

    def forget(self, task: RemoteTask) -> None:
        """The engine stops with ``task`` unfinished: by default, :meth:`halt` it.

        Recovery runs it again at the next start.
        """
        self.halt(task)

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self.open()
        except BaseException as exc:
            self._ready.set_exception(exc)
            raise
        self._ready.set_result(None)

    def on_stop(self) -> None:
        begun = self._gate.close()
        unstarted = self._unstarted
        for task in list(self._tasks.values()):
            task.cancelled = True
            if task.key not in begun:
                unstarted.append(task.spec)  # it can no longer start: not an attempt
            self.forget(task)
        self._tasks.clear()
        self._armed.clear()
        unstarted.extend(left_in_inbox(self.actor_inbox))
        record(getattr(self._host, "writer", None), unstarted)
        self._unstarted = []
        self.close()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        t = type(message)
        if t is Dispatch:
            for spec in message.tasks:
                self._submit(spec)
        elif t is Finished:
            self._finished(message.key, message.outcome)
        elif t is Started:
            task = self._tasks.get(message.key)
            if task is not None:
                task.started = task.beat = time.monotonic()
                task.worker = message.worker
                task.pid = message.pid
                if task.spec.timeout is not None or task.spec.heartbeat_timeout is not None:
                    self._armed[task.key] = task
        elif t is Beat:
            task = self._tasks.get(message.key)
            if task is not None:
                task.beat = time.monotonic()
                task.details = message.details
        elif t is Tick:
            self._tick()
        elif t is CancelTasks:
            self._cancel(frozenset(message.run_ids), frozenset(message.tasks))
        elif t is Drain:
            self._drain = message.done
            self._gate.close()  # a drain starts nothing new
            self._check_drained()
        elif t is Unmapped:
            pass  # no worker processes of ours map segments
        else:
            return super().on_receive(message)
        if self._reports:
            self._reports.send()
        return None

    def statistics(self) -> DispatcherStats:
        """Current counters (ask this actor through a proxy)."""
        s = self.stats
        s.queued = sum(1 for t in self._tasks.values() if t.started is None)
        s.busy = sum(1 for t in self._tasks.values() if t.started is not None)
        try:
            s.workers = self.worker_count()
        except Exception:
            s.workers = 0
        return DispatcherStats(**s.__dict__)

    # -- sending ---------------------------------------------------------------------------

    def task_tuple(self, key: str, spec: TaskSpec) -> tuple[Any, ...]:
        """What :func:`~actorflow.workers._task.execute` takes.

        Large (``B``) values go inline or, for the payload and ``ctx.last``, as references
        fetched only if read.
        """
        fn = spec.fn
        return (
            key,
            spec.run_id,
            spec.step,
            spec.attempt,
            spec.workflow_id,
            fn.key,
            fn.ref,
            fn.blob if fn.ref is None else None,
            _by_ref(spec.payload),
            _by_ref(spec.last),
            _inline(spec.item) if spec.chunk is None else _inline_chunk(spec.chunk),
            spec.position,
            spec.call if spec.chunk is None else CALL_CHUNK | spec.call,
            _inline(spec.error),
            spec.details,
        )

    def _submit(self, spec: TaskSpec) -> None:
        if self._drain is not None:
            self._unstarted.append(spec)  # stopping: never sent (recovery sends it again)
            return
        self._next += 1
        key = f"actorflow-{spec.run_id}-{self._next}"
        task = self._tasks[key] = RemoteTask(key, spec)
        task.handle = self.send(task, self.task_tuple(key, spec))
        self.stats.dispatched += 1

    # -- results ---------------------------------------------------------------------------

    def _finished(self, key: str, outcome: Any) -> None:
        task = self._tasks.pop(key, None)
        self._armed.pop(key, None)
        if task is None:
            return  # timed out or cancelled already
        self._gate.end(key)
        spec = task.spec
        if outcome is None:  # it was refused the start (a drain): it never ran
            self._unstarted.append(spec)
            self._check_drained()
            return
        if isinstance(outcome, BaseException):
            exc = outcome
            self.stats.crashes += 1
            info = ErrorInfo(
                "crash",
                CRASH_TYPES[0],
                CRASH_TYPES,
                f"the {self.where} task failed: {type(exc).__name__}: {exc}",
                details=task.details,
            )
            self.report(
                AttemptFailed(spec.run_id, spec.step, spec.attempt, info, None, time.time(), None)
            )
            self._check_drained()
            return
        ok, data, started, ended = outcome
        if not task.cancelled:
            if spec.chunk is not None and ok:
                for (step, _, _, _), (item_ok, item_data, t0, t1) in zip(
                    spec.chunk, data, strict=True
                ):
                    self.outcome(spec, step, item_ok, item_data, t0, t1, task)
            else:
                self.outcome(spec, spec.step, ok, data, started, ended, task)
        self._check_drained()

    def outcome(
        self,
        spec: TaskSpec,
        step: str,
        ok: bool,
        data: Any,
        started: float,
        ended: float,
        task: RemoteTask,
    ) -> None:
        """Report one step's outcome (a chunk reports one per item)."""
        if ok:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        self.report(attempt_report(spec, step, ok, data, started, ended, task.pid, task.details))

    def report(self, message: AttemptSucceeded | AttemptFailed) -> None:
        """Queue a report for its run's shard (sent when this message is handled)."""
        self._reports.add(message)

    # -- deadlines, cancels ------------------------------------------------------------------

    def _deadline(self, task: RemoteTask) -> float | None:
        if task.started is None:
            return None
        spec = task.spec
        deadline = None if spec.timeout is None else task.started + spec.timeout
        if spec.heartbeat_timeout is not None:
            silent = task.beat + spec.heartbeat_timeout
            deadline = silent if deadline is None else min(deadline, silent)
        return deadline

    def _timeout(self) -> float | None:
        nearest = None
        for task in self._armed.values():
            d = self._deadline(task)
            if d is not None and (nearest is None or d < nearest):
                nearest = d
        return None if nearest is None else max(0.0, nearest - time.monotonic())

    def _tick(self) -> None:
        now = time.monotonic()
        for task in list(self._armed.values()):
            d = self._deadline(task)
            if d is None or d > now:
                continue
            del self._tasks[task.key]
            del self._armed[task.key]
            self._gate.end(task.key)
            spec = task.spec
            self.stats.timeouts += 1
            started = task.started if task.started is not None else now
            info = timeout_error(spec, started, task.beat, task.details, self.halted)
            log.warning("step %r of run %s: %s", spec.step, spec.run_id, info.message)
            task.cancelled = True
            self.halt(task)
            self.report(
                AttemptFailed(spec.run_id, spec.step, spec.attempt, info, None, time.time(), None)
            )
        self._check_drained()

    def _cancel(self, run_ids: frozenset[str], tasks: frozenset[tuple[str, str]]) -> None:
        for task in list(self._tasks.values()):
            spec = task.spec
            if spec.run_id in run_ids or (spec.run_id, spec.step) in tasks:
                del self._tasks[task.key]
                self._armed.pop(task.key, None)
                self._gate.end(task.key)
                task.cancelled = True
                self.halt(task)
        self._check_drained()

    def _check_drained(self) -> None:
        # Drained once no started task is left: the others can no longer start.
        if self._drain is None or self._drain.done():
            return
        if not any(self._gate.started(key) for key in self._tasks):
            self._drain.set_result(None)

    # -- what running steps ask (on the caller's thread) ---------------------------------------

    def answer(self, op: str, key: str, run_id: str, workflow_id: str, step: str, arg: Any) -> Any:
        """Answer a running step's request.

        ``op`` is ``start`` (``arg``: pid, worker; answered False if the step must not
        start: the engine drains or stops), ``beat`` (details), ``log`` (level,
        message), ``output`` (a step name), ``ref`` (a large value's reference), ``service``
        (its id), ``breaker`` (service, action, verb) or ``state`` (op, scope, args).
        """
        ref = self.actor_ref
        if op == "start":
            if not self._gate.begin(key):
                return False
            tell(ref, Started(key, str(arg[1]), int(arg[0])))
            return True
        if op == "beat":
            tell(ref, Beat(key, arg))
            return None
        if op == "log":
            level, message = arg
            step_log.log(
                level,
                message,
                extra={"run_id": run_id, "step": step, "workflow_id": workflow_id},
            )
            return None
        if op == "state":
            answer: Promise[Any] = Promise()

            def done(ok: bool, value: Any) -> None:
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(value)

            state_op, scope, args = arg
            self._host.state.call(state_op, str(scope), tuple(args), done)
            return answer.result(60)
        value = answer_request(op, arg, self._store, self._host, run_id, workflow_id, step)
        return _inline(value) if op in ("output", "ref") else value


def _inline(value: bytes | None) -> bytes | None:
    """A value another process can decode: large (``B``) values re-encoded whole."""
    if value and value[0] == TAG_BLOB:
        return encode_value(decode_value(value, "value"), "value", None)
    return value


def _by_ref(value: bytes | None) -> bytes | None:
    """Payload and ``ctx.last``: a large value goes as a reference, fetched if read."""
    if value and value[0] == TAG_BLOB:
        return blob_ref(value)
    return value


def _inline_chunk(chunk: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [(step, _inline(last), _inline(item), index) for step, last, item, index in chunk]
