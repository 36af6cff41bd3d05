"""The process pool's workers: started, watched, retired, killed and replaced.

The pool dispatcher is one actor built of three parts, each in its own module and using the
parts below it: ``PoolWorkers`` (this module: the workers and their life, from launch to
ready to killing to gone, with memory and task limits, the restart breaker, and the
bookkeeping of tasks in flight per worker) <- ``PoolWire`` (``_pool_wire.py``: frames to
and from the workers' pipes: tasks sent in batches, results read in batches, requests
answered, large values in shared memory) <- ``Dispatcher`` (``_pool.py``: the actor's
messages, the queue, deadlines, crashes, cancels and drains).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pykka

from actorflow.config import EngineConfig
from actorflow.errors import PoolUnavailable
from actorflow.runtime.dispatch._core import (
    POOL_TYPES,
    DispatcherStats,
    Reports,
)
from actorflow.runtime.kernel._inbox import Actor, SelectorInbox
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    ErrorInfo,
    TaskSpec,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.store._codec import TAG_BLOB, TAG_SHARED
from actorflow.store._protocol import Store
from actorflow.workers import _protocol as W

__all__ = ["PoolWorkers"]

log = logging.getLogger("actorflow.dispatcher")

step_log = logging.getLogger("actorflow.step")

# _BROKEN: its pipe failed (it is dying) while it ran a task; its death is still a crash of
# that task. _KILLING: the dispatcher is killing it; its death is expected. _RETIRING: it
# reached max_tasks_per_worker or max_memory_per_worker: it gets no new task, finishes those
# it has, then is told to stop and is replaced (not a death for the restart breaker).
_STARTING, _READY, _KILLING, _BROKEN, _RETIRING = range(5)

#: Dispatch latencies kept for statistics (the most recent ones).
_LATENCY_SAMPLES = 4096

_dumps = pickle.dumps

#: Only tasks this small are queued behind a running one: a large frame could fill the pipe
#: and block the dispatcher until the worker reads it.
_PREFETCH_MAX_BYTES = 32 * 1024

#: Queue about this much work (seconds, by recent task durations) inside a worker.
_PREFETCH_WORK = 0.02

#: Queue tasks only behind a task whose function usually takes at most this long.
_PREFETCH_HEAD_MAX = 0.05

# How often the memory of busy workers is read (with max_memory_per_worker): a step that
# blows up is killed at twice the limit before the machine runs out, not after.
_MEMORY_EVERY = 0.25


class _Inflight:
    __slots__ = ("beat", "cancelled", "details", "spec", "started", "task_id")

    def __init__(self, task_id: int, spec: TaskSpec) -> None:
        self.task_id = task_id
        self.spec = spec
        self.cancelled = False  # its run was cancelled: whatever it reports is dropped
        self.started = 0.0  # monotonic; when it reached the head of its worker's queue
        self.beat = 0.0  # monotonic; its last heartbeat (or its start)
        self.details = spec.details  # its last heartbeat's details (the previous attempt's)


class _Worker:
    __slots__ = (
        "conn",
        "deadline",
        "done",
        "fd",
        "fns",
        "inflight",
        "kill_at",
        "out",
        "pid",
        "proc",
        "ps",
        "reader",
        "state",
        "wid",
    )

    def __init__(self, wid: int, proc: BaseProcess, conn: Connection) -> None:
        self.wid = wid
        self.proc = proc
        self.conn = conn
        self.fd = conn.fileno()
        self.reader = W.FrameReader(self.fd)
        self.pid = proc.pid or 0
        self.state = _STARTING
        self.inflight: deque[_Inflight] = deque()  # head: running; the rest: queued in it
        self.deadline: float | None = None  # monotonic; of the task at the head
        self.kill_at: float | None = None  # monotonic; SIGKILL if still alive then
        self.fns: set[str] = set()  # function keys this worker has cached
        self.done = 0  # tasks it finished (max_tasks_per_worker)
        self.ps: Any = None  # its psutil.Process, made on first use (max_memory_per_worker)
        # Frames a full pipe did not take yet (the worker is busy in a step, or stopped
        # reading): the dispatcher never blocks on one worker's pipe.
        self.out = bytearray()


@dataclass(frozen=True, slots=True)
class _Spawned:
    wid: int
    proc: BaseProcess | None
    conn: Connection | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class _Reply:
    """An answer to a worker's request, computed on another thread."""

    wid: int
    conn: Connection
    msg: tuple[Any, ...]


def _error_reply(exc: BaseException) -> tuple[str, str]:
    """(kind, message) of a request that failed: ``client`` errors are the caller's fault."""
    from actorflow.errors import ClientError

    return ("client" if isinstance(exc, ClientError) else "engine", f"{exc}")


_TAG_BLOB = TAG_BLOB

_TAG_SHARED = TAG_SHARED


def _large(value: bytes | None) -> bool:
    return bool(value) and value[0] == _TAG_BLOB  # type: ignore[index]


def _small(spec: TaskSpec) -> bool:
    size = len(spec.payload) + len(spec.last or b"") + len(spec.item or b"")
    if spec.chunk:
        size += sum(len(c[1] or b"") + len(c[2] or b"") for c in spec.chunk)
    return size <= _PREFETCH_MAX_BYTES


def _task_step(spec: TaskSpec, step: str) -> str:
    """The step a worker says it is running: the task's own, or an item of its chunk."""
    if spec.chunk and any(c[0] == step for c in spec.chunk):
        return step
    return spec.step


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class PoolWorkers(Actor):
    """The workers of the pool (see the module docstring)."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        return SelectorInbox()

    def __init__(
        self,
        config: EngineConfig,
        route: Callable[[str], pykka.ActorRef[Any]],
        store: Store,
        ready: Promise[None],
        costs: dict[str, float] | None = None,
        host: Any = None,
    ) -> None:
        super().__init__()
        self._config = config
        # The engine core: answers requests that need more than the store (state, services).
        self._host = host
        self._route = route
        self._store = store
        self._ready = ready
        self._target = config.worker_count
        self._prefetch = config.prefetch
        self._workers: dict[int, _Worker] = {}
        self._by_conn: dict[Connection, _Worker] = {}
        self._by_sentinel: dict[int, _Worker] = {}
        self._idle: list[_Worker] = []  # a stack: reuse the warmest worker first
        self._queue: deque[TaskSpec] = deque()
        self._tasks: dict[int, tuple[_Worker, _Inflight]] = {}
        # Recent seconds per call by function key; this actor is its only writer.
        self._fn_ema: dict[str, float] = {} if costs is None else costs
        self._reports = Reports(route)
        self._next_task = 0
        self._next_wid = 0
        self._deaths: deque[float] = deque()
        self._breaker_until: float | None = None
        self._spawn_failures = 0
        self._starting = 0  # spawn requests not yet answered
        self._drain: Promise[None] | None = None
        self._stopping = False
        # Tasks known never to have started (a worker skipped them): see ``_unstarted``.
        self._unstarted: list[TaskSpec] = []
        self._max_tasks = config.max_tasks_per_worker
        self._max_memory = config.max_memory_per_worker
        self._memory_check_at = 0.0  # monotonic; next look at busy workers' memory
        self._probe: tuple[TaskSpec, float] | None = None
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        # Large values: segments lent for outputs, blobs held by tasks (``_blobs``).
        self._blobs = getattr(host, "blobs", None)
        self.stats = DispatcherStats()
        inbox: SelectorInbox = self.actor_inbox  # type: ignore[assignment]
        self._inbox = inbox
        inbox.timeout_fn = self._timeout
        # Imported here: the pool brings the worker's main module (asyncio, ctypes...), which
        # an engine needs from its start on, and ``import actorflow`` does not.
        from actorflow.workers._pool import Spawner, mp_context

        self._spawner = Spawner(
            mp_context(config.start_method, config.preload),
            config.preload,
            self._on_spawned,
            config.shm_threshold if self._blobs is not None else 0,
            config.tracing,
        )

    def statistics(self) -> DispatcherStats:
        """Current counters (ask this actor through a proxy; not for the hot path)."""
        s = self.stats
        s.queued = len(self._queue)
        s.busy = sum(1 for w in self._workers.values() if w.inflight)
        s.workers = sum(1 for w in self._workers.values() if w.state == _READY)
        samples = sorted(self._latencies)
        if samples:
            s.latency_p50_ms = samples[len(samples) // 2] * 1000
            s.latency_p99_ms = samples[min(len(samples) - 1, len(samples) * 99 // 100)] * 1000
        return DispatcherStats(**s.__dict__)

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
        os.set_blocking(w.fd, False)  # see _post
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

    @staticmethod
    def _own_memory(w: _Worker) -> int:
        """``w``'s resident memory of its own (0 if it cannot be read)."""
        import psutil  # here: only max_memory_per_worker reads it (a lean ``import actorflow``)

        try:
            if w.ps is None:
                w.ps = psutil.Process(w.pid)
            mem = w.ps.memory_info()
        except psutil.Error:
            return 0
        # Pages it shares (libraries, and the shared-memory segments of large values it
        # maps) are not what grows when a worker leaks.
        return int(mem.rss - getattr(mem, "shared", 0))

    def _worn_out(self, w: _Worker) -> bool:
        """True when ``w`` reached its task count or memory limit."""
        if self._max_tasks and w.done >= self._max_tasks:
            return True
        if self._max_memory:
            rss = self._own_memory(w)
            if rss > self._max_memory:
                log.info(
                    "worker %d uses %d MiB (max_memory_per_worker %d MiB): replacing it",
                    w.pid,
                    rss >> 20,
                    self._max_memory >> 20,
                )
                return True
        return False

    def _retire(self, w: _Worker) -> None:
        """Send ``w`` nothing more; start its replacement now (so capacity stays)."""
        w.state = _RETIRING
        if w in self._idle:
            self._idle.remove(w)
        self.stats.recycled += 1
        if not self._stopping and self._breaker_until is None:
            while self._live_workers() < self._target:
                self._spawn()

    def _forget(self, w: _Worker) -> None:
        self._workers.pop(w.wid, None)
        self._by_conn.pop(w.conn, None)
        self._by_sentinel.pop(w.proc.sentinel, None)
        try:
            w.conn.close()
        except OSError:
            pass
        try:
            w.proc.close()
        except ValueError:
            pass  # still running (stop gave up on it); the OS reaps it with us
        if w in self._idle:
            self._idle.remove(w)
        self._refresh_waitables()

    def _fail(self, spec: TaskSpec, error: ErrorInfo, pid: int | None) -> None:
        """Report a failure the engine observed (not one the step raised)."""
        self._reports.add(
            AttemptFailed(spec.run_id, spec.step, spec.attempt, error, None, time.time(), pid)
        )

    def _fail_queued(self) -> None:
        message = (
            f"no worker can run this step: the worker restart breaker is open after "
            f"more than {self._config.restart_limit} worker deaths in "
            f"{self._config.restart_window:g}s"
        )
        while self._queue:
            spec = self._queue.popleft()
            self._fail(spec, ErrorInfo("pool", POOL_TYPES[0], POOL_TYPES, message), None)

    def _replace(self, counted: bool = True) -> None:
        """Start workers up to the pool's size; ``counted``: a death the breaker counts."""
        now = time.monotonic()
        if not counted:
            if self._breaker_until is None:
                while self._live_workers() < self._target:
                    self._spawn()
            return
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

    def _post(self, w: _Worker, data: bytes) -> None:
        """Send one frame to ``w`` without ever blocking.

        What its pipe cannot take now waits in ``w.out`` and goes when the pipe has room: a
        worker only reads between steps, and one that stops reading must not stall every
        other worker, nor its own timeout's kill.

        Raises:
            OSError: the worker's end is closed (it is dying).
        """
        frame = W.frame_bytes(data)
        if w.out:
            w.out += frame
            return
        try:
            sent = os.write(w.fd, frame)
        except BlockingIOError:
            sent = 0
        if sent < len(frame):
            w.out += memoryview(frame)[sent:]
            self._inbox.want_write(w.conn, True)

    def _stop_retired(self, w: _Worker) -> None:
        """A retiring worker finished its last task: ask it to exit (killed if it lingers)."""
        w.kill_at = time.monotonic() + self._config.kill_grace + 5.0
        try:
            self._post(w, _dumps((W.STOP,), 5))
        except (OSError, ValueError):
            pass  # already gone: its sentinel reports it

    @staticmethod
    def _set_deadline(w: _Worker, head: _Inflight) -> None:
        spec = head.spec
        deadline = None if spec.timeout is None else head.started + spec.timeout
        if spec.heartbeat_timeout is not None:
            silent = head.beat + spec.heartbeat_timeout
            deadline = silent if deadline is None else min(deadline, silent)
        w.deadline = deadline

    def _arm_head(self, w: _Worker) -> None:
        """The head of ``w``'s queue starts now: its deadline (timeout, heartbeat)."""
        head = w.inflight[0]
        head.started = head.beat = time.monotonic()
        self._set_deadline(w, head)

    def _end(self, task_id: int, default: Any = None) -> Any:
        """Forget task ``task_id`` (ended in any way); release the large values it held."""
        found = self._tasks.pop(task_id, default)
        if self._blobs is not None:
            self._blobs.end_task(task_id)
        return found

    def _requeue(self, w: _Worker) -> None:
        """Put ``w``'s unstarted tasks back at the front of the queue, in order."""
        for entry in reversed(w.inflight):
            self._end(entry.task_id, None)
            if not entry.cancelled:
                self._queue.appendleft(entry.spec)
        w.inflight.clear()

    def _kill(self, w: _Worker) -> None:
        """Terminate a worker on purpose; tasks queued behind its head go back to the queue."""
        self._requeue(w)
        w.deadline = None
        w.state = _KILLING
        w.kill_at = time.monotonic() + self._config.kill_grace
        try:
            w.proc.terminate()
        except (OSError, ValueError):
            pass

    def _check_drained(self) -> None:
        if self._drain is not None and not self._tasks and not self._drain.done():
            self._drain.set_result(None)

    def _short(self, spec: TaskSpec) -> bool:
        ema = self._fn_ema.get(spec.fn.key)
        if ema is not None and spec.chunk:
            ema *= len(spec.chunk)
        return ema is not None and ema <= _PREFETCH_HEAD_MAX

    def _reply(self, w: _Worker, reply: tuple[Any, ...]) -> None:
        try:
            self._post(w, _dumps(reply, 5))
        except (OSError, ValueError):
            pass  # the worker died meanwhile; its sentinel reports it

    def _timeout(self) -> float | None:
        if self._reports:
            self._reports.send()  # never sleep on undelivered results
        nearest: float | None = None
        for w in self._workers.values():
            for t in (w.deadline, w.kill_at):
                if t is not None and (nearest is None or t < nearest):
                    nearest = t
        if self._breaker_until is not None and (nearest is None or self._breaker_until < nearest):
            nearest = self._breaker_until
        if (
            self._max_memory
            and self._tasks
            and (nearest is None or self._memory_check_at < nearest)
        ):
            nearest = self._memory_check_at
        return None if nearest is None else nearest - time.monotonic()
