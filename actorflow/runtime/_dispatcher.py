"""The dispatcher: owns the worker pool, queues ready steps, enforces deadlines.

One actor thread does everything here. Its inbox (:class:`SelectorInbox`) waits on the actor's
messages, every worker's pipe and process sentinel, and the nearest deadline at once, so worker
results, crashes and timeouts arrive as messages and the pool state has a single owner.

Per worker, the life is: starting (process launched) -> ready (said hello) -> killing (timed
out or cancelled: SIGTERM, then SIGKILL after ``kill_grace``) -> gone (sentinel fired). A worker
whose sentinel fires while it was not being killed crashed: the one task it was running fails
with kind ``crash``; nothing else is affected. Every death is replaced, unless more than
``restart_limit`` happened within ``restart_window`` seconds: then the restart breaker opens for
``breaker_cooldown`` seconds and, if no worker is left, queued tasks fail with kind ``pool``.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pykka

from actorflow import _faults
from actorflow.config import EngineConfig
from actorflow.definition._options import qualified_name
from actorflow.errors import PoolUnavailable, StepTimeout, WorkerCrashed
from actorflow.runtime._inbox import Actor, IoReady, SelectorInbox, Tick
from actorflow.runtime._messages import (
    CancelTasks,
    Dispatch,
    Drain,
    ErrorInfo,
    StepFailed,
    StepSucceeded,
    TaskSpec,
)
from actorflow.store import _keys as K
from actorflow.store._protocol import Store
from actorflow.workers import _protocol as W
from actorflow.workers._pool import Spawner, mp_context

__all__ = ["Dispatcher", "DispatcherStats"]

log = logging.getLogger("actorflow.dispatcher")
step_log = logging.getLogger("actorflow.step")

_STARTING, _READY, _KILLING, _STOPPING = range(4)
# Plain pickle over send_bytes: Connection.send builds a ForkingPickler (and copies the copyreg
# table) for every message, several microseconds on the hottest path.
_dumps = pickle.dumps
_loads = pickle.loads


def _mro_names(cls: type) -> tuple[str, ...]:
    return tuple(qualified_name(c) for c in cls.__mro__ if issubclass(c, BaseException))


_TIMEOUT_TYPES = _mro_names(StepTimeout)
_CRASH_TYPES = _mro_names(WorkerCrashed)
_POOL_TYPES = _mro_names(PoolUnavailable)


class _Inflight:
    __slots__ = ("spec", "task_id")

    def __init__(self, task_id: int, spec: TaskSpec) -> None:
        self.task_id = task_id
        self.spec = spec


class _Worker:
    __slots__ = (
        "conn",
        "deadline",
        "fns",
        "inflight",
        "kill_at",
        "pid",
        "proc",
        "started",
        "state",
        "wid",
    )

    def __init__(self, wid: int, proc: BaseProcess, conn: Connection) -> None:
        self.wid = wid
        self.proc = proc
        self.conn = conn
        self.pid = proc.pid or 0
        self.state = _STARTING
        self.inflight: deque[_Inflight] = deque()
        self.deadline: float | None = None  # monotonic; of the task at the head
        self.kill_at: float | None = None  # monotonic; SIGKILL if still alive then
        self.fns: set[str] = set()  # function keys this worker has cached
        self.started = time.monotonic()


@dataclass(frozen=True, slots=True)
class _Spawned:
    wid: int
    proc: BaseProcess | None
    conn: Connection | None
    error: BaseException | None


@dataclass
class DispatcherStats:
    """Counters of the dispatcher."""

    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    breaker_opened: int = 0
    queued: int = 0
    busy: int = 0
    workers: int = 0


class Dispatcher(Actor):
    """Runs tasks on the worker pool and reports their outcome to the runs' supervisors.

    Args:
        config: the engine config (pool size, start method, kill grace, breaker limits).
        route: maps a run id to its shard's actor ref.
        store: read to answer workers' ``ctx.steps[...]`` requests.
        ready: completed once the initial workers all said hello.
    """

    @staticmethod
    def _create_actor_inbox() -> Any:
        return SelectorInbox()

    def __init__(
        self,
        config: EngineConfig,
        route: Callable[[str], pykka.ActorRef[Any]],
        store: Store,
        ready: Future[None],
    ) -> None:
        super().__init__()
        self._config = config
        self._route = route
        self._store = store
        self._ready = ready
        self._target = config.worker_count
        self._workers: dict[int, _Worker] = {}
        self._by_conn: dict[Connection, _Worker] = {}
        self._by_sentinel: dict[int, _Worker] = {}
        self._idle: list[_Worker] = []  # a stack: reuse the warmest worker first
        self._queue: deque[TaskSpec] = deque()
        self._tasks: dict[int, tuple[_Worker, _Inflight]] = {}
        self._next_task = 0
        self._next_wid = 0
        self._deaths: deque[float] = deque()
        self._breaker_until: float | None = None
        self._spawn_failures = 0
        self._starting = 0  # spawn requests not yet answered
        self._drain: Future[None] | None = None
        self._stopping = False
        self.stats = DispatcherStats()
        inbox: SelectorInbox = self.actor_inbox  # type: ignore[assignment]
        self._inbox = inbox
        inbox.timeout_fn = self._timeout
        self._spawner = Spawner(
            mp_context(config.start_method, config.preload),
            config.preload,
            self._on_spawned,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        for _ in range(self._target):
            self._spawn()

    def on_stop(self) -> None:
        self._stopping = True
        self._spawner.close()
        for w in list(self._workers.values()):
            with contextlib.suppress(OSError, ValueError):
                w.conn.send_bytes(_dumps((W.STOP,), 5))
        deadline = time.monotonic() + self._config.kill_grace
        for w in list(self._workers.values()):
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join(1.0)
            self._forget(w)
        self._inbox.close()
        if not self._ready.done():
            self._ready.set_exception(PoolUnavailable("engine stopped before workers started"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _on_spawned(
        self,
        wid: int,
        proc: BaseProcess | None,
        conn: Connection | None,
        error: BaseException | None,
    ) -> None:
        # Runs on the spawner thread: hand the result to the actor as a message.
        try:
            self.actor_ref.tell(_Spawned(wid, proc, conn, error))
        except pykka.ActorDeadError:
            if proc is not None:
                proc.kill()

    # -- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        t = type(message)
        if t is IoReady:
            for item in message.ready:
                if type(item) is int:
                    w = self._by_sentinel.get(item)
                    if w is not None:
                        self._exited(w)
                else:
                    w = self._by_conn.get(item)
                    if w is not None:
                        self._read(w)
            self._pump()
        elif t is Dispatch:
            self._queue.extend(message.tasks)
            self._pump()
        elif t is Tick:
            self._tick()
        elif t is _Spawned:
            self._spawned(message)
        elif t is CancelTasks:
            self._cancel(message.run_id)
        elif t is Drain:
            self._drain = message.done
            self._check_drained()
        else:
            return super().on_receive(message)
        return None

    def statistics(self) -> DispatcherStats:
        """Current counters (ask this actor through a proxy; not for the hot path)."""
        s = self.stats
        s.queued = len(self._queue)
        s.busy = sum(1 for w in self._workers.values() if w.inflight)
        s.workers = sum(1 for w in self._workers.values() if w.state == _READY)
        return DispatcherStats(**s.__dict__)

    # -- sending ---------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._drain is not None:
            return
        queue, idle = self._queue, self._idle
        while queue and idle:
            w = idle.pop()
            if w.state != _READY or w.inflight:
                continue
            self._send(w, queue.popleft())
        if queue and self._breaker_until is not None and not self._live_workers():
            self._fail_queued()

    def _send(self, w: _Worker, spec: TaskSpec) -> None:
        if _faults.ACTIVE:
            _faults.crash_point("dispatcher.before_send")
        self._next_task += 1
        task_id = self._next_task
        fn = spec.fn
        first = fn.key not in w.fns
        msg = (
            W.TASK,
            task_id,
            spec.run_id,
            spec.step,
            spec.attempt,
            spec.workflow_id,
            fn.key,
            fn.ref if first else None,
            fn.blob if first else None,
            spec.payload,
            spec.last,
            step_log.getEffectiveLevel(),
        )
        try:
            w.conn.send_bytes(_dumps(msg, 5))
        except (OSError, ValueError):
            # The worker is dying; its sentinel will report it. The task was not started.
            self._queue.appendleft(spec)
            w.state = _KILLING
            return
        if first:
            w.fns.add(fn.key)
        entry = _Inflight(task_id, spec)
        w.inflight.append(entry)
        self._tasks[task_id] = (w, entry)
        if spec.timeout is not None:
            w.deadline = time.monotonic() + spec.timeout
        self.stats.dispatched += 1

    # -- receiving -------------------------------------------------------------------------

    def _read(self, w: _Worker) -> None:
        conn = w.conn
        while True:
            try:
                msg = _loads(conn.recv_bytes())
            except (EOFError, OSError):
                # The worker closed its pipe: it is exiting. Stop polling the pipe; the
                # sentinel reports the death.
                self._by_conn.pop(conn, None)
                self._refresh_waitables()
                return
            self._handle(w, msg)
            try:
                if not conn.poll():
                    return
            except (EOFError, OSError):
                return

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op == W.DONE:
            self._done(w, msg)
        elif op == W.REQUEST:
            self._answer(w, msg)
        elif op == W.LOG:
            found = self._tasks.get(msg[1])
            if found is not None:
                spec = found[1].spec
                step_log.log(
                    msg[2],
                    msg[3],
                    extra={
                        "run_id": spec.run_id,
                        "step": spec.step,
                        "attempt": spec.attempt,
                        "workflow_id": spec.workflow_id,
                    },
                )
        elif op == W.HELLO:
            w.pid = msg[1]
            if w.state == _STARTING:
                w.state = _READY
                self._idle.append(w)
                self._spawn_failures = 0
                if not self._ready.done() and self._ready_count() >= self._target:
                    self._ready.set_result(None)

    def _done(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        _, task_id, ok, data, started, ended = msg
        found = self._tasks.pop(task_id, None)
        if found is None:
            return  # its run was cancelled, or it already timed out
        entry = found[1]
        if w.inflight and w.inflight[0] is entry:
            w.inflight.popleft()
        else:
            with contextlib.suppress(ValueError):
                w.inflight.remove(entry)
        w.deadline = None
        if not w.inflight and w.state == _READY:
            self._idle.append(w)
        spec = entry.spec
        if ok:
            self.stats.succeeded += 1
            report: Any = StepSucceeded(
                spec.run_id, spec.step, spec.attempt, data, started, ended, w.pid
            )
        else:
            self.stats.failed += 1
            qual, mro, message, tb, blob = data
            report = StepFailed(
                spec.run_id,
                spec.step,
                spec.attempt,
                ErrorInfo("error", qual, tuple(mro), message, tb, blob),
                started,
                ended,
                w.pid,
            )
        self._report(spec.run_id, report)
        if self._drain is not None:
            self._check_drained()

    def _answer(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        _, req_id, task_id, op, arg = msg
        found = self._tasks.get(task_id)
        try:
            if found is None:
                raise LookupError("the task is no longer running")
            if op != "output":
                raise ValueError(f"unknown request {op!r}")
            value = self._store.get(K.VALUES, K.step_key(found[1].spec.run_id, str(arg)))
            reply: tuple[Any, ...] = (W.REPLY, req_id, True, value)
        except Exception as exc:
            reply = (W.REPLY, req_id, False, f"{type(exc).__name__}: {exc}")
        try:
            w.conn.send_bytes(_dumps(reply, 5))
        except (OSError, ValueError):
            pass  # the worker died meanwhile; its sentinel reports it

    def _report(self, run_id: str, message: Any) -> None:
        try:
            self._route(run_id).tell(message)
        except pykka.ActorDeadError:
            pass  # engine stopping: the step stays recorded as running; recovery retries it

    # -- deadlines, kills, crashes ---------------------------------------------------------

    def _timeout(self) -> float | None:
        nearest: float | None = None
        for w in self._workers.values():
            for t in (w.deadline, w.kill_at):
                if t is not None and (nearest is None or t < nearest):
                    nearest = t
        if self._breaker_until is not None and (nearest is None or self._breaker_until < nearest):
            nearest = self._breaker_until
        return None if nearest is None else nearest - time.monotonic()

    def _tick(self) -> None:
        now = time.monotonic()
        for w in list(self._workers.values()):
            if w.deadline is not None and now >= w.deadline and w.inflight:
                self._timed_out(w)
            if w.kill_at is not None and now >= w.kill_at:
                w.kill_at = None
                if w.proc.exitcode is None:
                    log.warning("worker %d ignored SIGTERM; sending SIGKILL", w.pid)
                    w.proc.kill()
        if self._breaker_until is not None and now >= self._breaker_until:
            log.warning("worker restart breaker closes; starting workers again")
            self._breaker_until = None
            self._deaths.clear()
            while self._live_workers() < self._target:
                self._spawn()
        self._pump()

    def _timed_out(self, w: _Worker) -> None:
        entry = w.inflight[0]
        spec = entry.spec
        self.stats.timeouts += 1
        self._tasks.pop(entry.task_id, None)
        log.warning(
            "step %r of run %s timed out after %gs; killing worker %d",
            spec.step,
            spec.run_id,
            spec.timeout,
            w.pid,
        )
        self._report(
            spec.run_id,
            StepFailed(
                spec.run_id,
                spec.step,
                spec.attempt,
                ErrorInfo(
                    "timeout",
                    _TIMEOUT_TYPES[0],
                    _TIMEOUT_TYPES,
                    f"timed out after {spec.timeout:g}s (worker killed)",
                    timeout=spec.timeout,
                ),
                None,
                time.time(),
                w.pid,
            ),
        )
        w.inflight.popleft()
        self._kill(w)

    def _kill(self, w: _Worker) -> None:
        """Terminate a worker on purpose; tasks queued behind its head go back to the queue."""
        for entry in reversed(w.inflight):
            self._tasks.pop(entry.task_id, None)
            self._queue.appendleft(entry.spec)
        w.inflight.clear()
        w.deadline = None
        w.state = _KILLING
        w.kill_at = time.monotonic() + self._config.kill_grace
        with contextlib.suppress(OSError, ValueError):
            w.proc.terminate()

    def _exited(self, w: _Worker) -> None:
        # Results the worker sent just before dying are still in the pipe: take them first.
        if w.conn in self._by_conn:
            try:
                while w.conn.poll():
                    self._handle(w, _loads(w.conn.recv_bytes()))
            except (EOFError, OSError):
                pass
        w.proc.join(0.5)
        code = w.proc.exitcode
        expected = w.state in (_KILLING, _STOPPING)
        if not expected:
            self.stats.crashes += 1
            how = _describe_exit(code)
            if w.inflight:
                entry = w.inflight.popleft()
                spec = entry.spec
                self._tasks.pop(entry.task_id, None)
                log.error(
                    "worker %d died (%s) running step %r of run %s",
                    w.pid,
                    how,
                    spec.step,
                    spec.run_id,
                )
                self._report(
                    spec.run_id,
                    StepFailed(
                        spec.run_id,
                        spec.step,
                        spec.attempt,
                        ErrorInfo(
                            "crash",
                            _CRASH_TYPES[0],
                            _CRASH_TYPES,
                            f"worker process died ({how})",
                            exitcode=code,
                        ),
                        None,
                        time.time(),
                        w.pid,
                    ),
                )
            else:
                log.error("idle worker %d died (%s)", w.pid, how)
        for entry in reversed(w.inflight):  # not started: back to the queue
            self._tasks.pop(entry.task_id, None)
            self._queue.appendleft(entry.spec)
        w.inflight.clear()
        self._forget(w)
        if not self._stopping:
            self._replace()
        if self._drain is not None:
            self._check_drained()

    def _forget(self, w: _Worker) -> None:
        self._workers.pop(w.wid, None)
        self._by_conn.pop(w.conn, None)
        if w.proc.sentinel in self._by_sentinel:
            del self._by_sentinel[w.proc.sentinel]
        with contextlib.suppress(OSError):
            w.conn.close()
        try:
            w.proc.close()
        except ValueError:
            pass  # still running (stop gave up on it); the OS reaps it with us
        if w in self._idle:
            self._idle.remove(w)
        self._refresh_waitables()

    def _replace(self) -> None:
        now = time.monotonic()
        self.stats.restarts += 1
        deaths = self._deaths
        deaths.append(now)
        while deaths and deaths[0] < now - self._config.restart_window:
            deaths.popleft()
        if self._breaker_until is None and len(deaths) > self._config.restart_limit:
            self._breaker_until = now + self._config.breaker_cooldown
            self.stats.breaker_opened += 1
            log.error(
                "worker restart breaker open: %d worker deaths in %gs (restart_limit=%d); "
                "no worker is started for %gs",
                len(deaths),
                self._config.restart_window,
                self._config.restart_limit,
                self._config.breaker_cooldown,
            )
        if self._breaker_until is None:
            while self._live_workers() < self._target:
                self._spawn()
        elif not self._live_workers():
            self._fail_queued()

    def _fail_queued(self) -> None:
        message = (
            f"no worker can run this step: the worker restart breaker is open after "
            f"more than {self._config.restart_limit} worker deaths in "
            f"{self._config.restart_window:g}s"
        )
        while self._queue:
            spec = self._queue.popleft()
            self._report(
                spec.run_id,
                StepFailed(
                    spec.run_id,
                    spec.step,
                    spec.attempt,
                    ErrorInfo("pool", _POOL_TYPES[0], _POOL_TYPES, message),
                    None,
                    time.time(),
                    None,
                ),
            )

    def _cancel(self, run_id: str) -> None:
        self._queue = deque(s for s in self._queue if s.run_id != run_id)
        for w in list(self._workers.values()):
            if w.inflight and w.inflight[0].spec.run_id == run_id:
                head = w.inflight.popleft()
                self._tasks.pop(head.task_id, None)
                log.info("killing worker %d: the run %s of its step was cancelled", w.pid, run_id)
                self._kill(w)
        if self._drain is not None:
            self._check_drained()

    def _check_drained(self) -> None:
        if self._drain is not None and not self._tasks and not self._drain.done():
            self._drain.set_result(None)

    # -- starting workers ------------------------------------------------------------------

    def _spawn(self) -> None:
        self._next_wid += 1
        self._starting += 1
        self._spawner.request(self._next_wid)

    def _spawned(self, msg: _Spawned) -> None:
        self._starting -= 1
        if msg.error is not None or msg.proc is None or msg.conn is None:
            self._spawn_failures += 1
            if not self._ready.done() and self._spawn_failures >= 3:
                self._ready.set_exception(
                    PoolUnavailable(f"worker processes fail to start: {msg.error}")
                )
            if not self._stopping:
                self._replace()
            return
        if self._stopping:
            msg.proc.kill()
            return
        w = _Worker(msg.wid, msg.proc, msg.conn)
        self._workers[w.wid] = w
        self._by_conn[w.conn] = w
        self._by_sentinel[w.proc.sentinel] = w
        self._refresh_waitables()

    def _refresh_waitables(self) -> None:
        self._inbox.set_waitables([*self._by_conn, *self._by_sentinel])

    def _live_workers(self) -> int:
        live = sum(1 for w in self._workers.values() if w.state in (_STARTING, _READY))
        return live + self._starting

    def _ready_count(self) -> int:
        return sum(1 for w in self._workers.values() if w.state == _READY)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
