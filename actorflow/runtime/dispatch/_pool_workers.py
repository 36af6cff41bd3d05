"""The process pool's workers: started, watched, retired, killed and replaced.

The pool is the transport of ``executor="process"`` (``_transport.py``): the dispatcher core
keeps the tasks, their deadlines, cancels, drains and reports; the pool moves tasks to its
worker processes and back. It is built of three parts, each in its own module and using the
parts below it: ``PoolWorkers`` (this module: the workers and their life, from launch to
ready to killing to gone, with memory and task limits, the restart breaker, and which
tasks each worker holds) <- ``PoolWire`` (``_pool_wire.py``: frames to and from the
workers' pipes: tasks sent in batches, results read in batches, requests answered, large
values in shared memory) <- ``PoolTransport`` (``_pool.py``: the queue, the pipes'
readiness, crashes, halts, cancels, withdrawals and the stop).
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pykka

from actorflow.errors import PoolUnavailable
from actorflow.runtime.dispatch._core import POOL_TYPES, DispatcherStats
from actorflow.runtime.dispatch._transport import Task, Transport, TransportHost
from actorflow.runtime.kernel._messages import ErrorInfo, TaskSpec
from actorflow.store._codec import TAG_BLOB, TAG_SHARED
from actorflow.workers import _protocol as W
from actorflow.workers._interceptors import TracingInterceptor, pack

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
_PREFETCH_WORK = 0.05

#: Queue tasks only behind a task whose function usually takes at most this long.
_PREFETCH_HEAD_MAX = 0.05

# How often the memory of busy workers is read (with max_memory_per_worker): a step that
# blows up is killed at twice the limit before the machine runs out, not after.
_MEMORY_EVERY = 0.25


class _Worker:
    __slots__ = (
        "conn",
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
        self.inflight: deque[Task] = deque()  # head: running; the rest: queued in it
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


class PoolWorkers(Transport):
    """The workers of the pool (see the module docstring).

    Args:
        core: the dispatcher core (its config sizes the pool; its host gives the blobs,
            for shared memory; its ``costs``, each function's recent seconds per item, size
            how many short tasks a worker gets queued ahead).
    """

    where = "worker"
    halted = "worker killed"
    ready_at_open = False  # ready once the first workers said hello

    def __init__(self, core: TransportHost) -> None:
        super().__init__(core)
        config = core.config
        self._config = config
        # The engine core: answers requests that need more than the store (state, services).
        host = core.host
        self._host = host
        self._store = core.store
        self._ready = core.ready
        self._reports = core.reports
        self.stats = core.stats
        self._inbox = core.inbox
        self._target = config.worker_count
        self._prefetch = config.prefetch
        self._workers: dict[int, _Worker] = {}
        self._by_conn: dict[Connection, _Worker] = {}
        self._by_sentinel: dict[int, _Worker] = {}
        self._idle: list[_Worker] = []  # a stack: reuse the warmest worker first
        self._queue: deque[Task] = deque()  # tasks no worker holds yet
        self._next_wid = 0
        self._deaths: deque[float] = deque()
        self._breaker_until: float | None = None
        self._spawn_failures = 0
        self._starting = 0  # spawn requests not yet answered
        self._stopping = False
        self._max_tasks = config.max_tasks_per_worker
        self._max_memory = config.max_memory_per_worker
        self._memory_check_at = 0.0  # monotonic; next look at busy workers' memory
        self._probe: tuple[Task, float] | None = None
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        # Large values: segments lent for outputs, blobs held by tasks (``_blobs``).
        self._blobs = getattr(host, "blobs", None)
        # Imported here: the pool brings the worker's main module (asyncio, ctypes...), which
        # an engine needs from its start on, and ``import actorflow`` does not.
        from actorflow.workers._pool import Spawner, mp_context

        self._spawner = Spawner(
            mp_context(config.start_method, config.preload),
            config.preload,
            self._on_spawned,
            config.shm_threshold if self._blobs is not None else 0,
            config.tracing,
            # (The tracing scope is the worker's own first interceptor: install() adds it.)
            pack([i for i in getattr(host, "interceptors", ()) if not _is_tracing(i)]),
        )

    def statistics(self, stats: DispatcherStats) -> None:
        s = stats
        s.queued = len(self._queue)
        s.busy = sum(1 for w in self._workers.values() if w.inflight)
        s.workers = sum(1 for w in self._workers.values() if w.state == _READY)
        samples = sorted(self._latencies)
        if samples:
            s.latency_p50_ms = samples[len(samples) // 2] * 1000
            s.latency_p99_ms = samples[min(len(samples) - 1, len(samples) * 99 // 100)] * 1000

    def _on_spawned(
        self,
        wid: int,
        proc: BaseProcess | None,
        conn: Connection | None,
        error: BaseException | None,
    ) -> None:
        # Runs on the spawner thread: hand the result to the actor as a message.
        try:
            self.core.actor_ref.tell(_Spawned(wid, proc, conn, error))
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

    def worker_count(self) -> int:
        return self._target

    def slack(self) -> float:
        """The least queued work of any busy worker, from its functions' recent costs.

        A busy worker with nothing queued behind its task, or a task whose cost is not
        known yet, gives none: it may need its next task as soon as it reports.
        """
        costs = self.core.costs
        least: float | None = None
        for w in self._workers.values():
            inflight = w.inflight
            if not inflight or w.state != _READY:
                continue
            if len(inflight) < 2:
                return 0.0
            work = 0.0
            for task in itertools.islice(inflight, 1, None):
                spec = task.spec
                cost = costs.get(spec.fn.key)
                if cost is None:
                    return 0.0
                work += cost * (len(spec.chunk) if spec.chunk else 1)
            if least is None or work < least:
                least = work
        return 0.0 if least is None else least

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
        # Out of the poll set before the descriptors close (an epoll set cannot drop a
        # descriptor already closed, and its number may be reused at once).
        self._refresh_waitables()
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

    def _fail_queued(self) -> None:
        message = (
            f"no worker can run this step: the worker restart breaker is open after "
            f"more than {self._config.restart_limit} worker deaths in "
            f"{self._config.restart_window:g}s"
        )
        while self._queue:
            task = self._queue.popleft()
            self.core.fail(task, ErrorInfo("pool", POOL_TYPES[0], POOL_TYPES, message))

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

    def _arm_head(self, w: _Worker) -> None:
        """The head of ``w``'s queue starts now: its deadlines count from here."""
        self.core.started(w.inflight[0])

    def _release(self, task: Task) -> None:
        """``task`` left its worker (ended in any way): release the large values it held."""
        if self._blobs is not None:
            self._blobs.end_task(task.id)

    def _requeue(self, w: _Worker) -> None:
        """Put ``w``'s unstarted tasks back at the front of the queue, in order."""
        for task in reversed(w.inflight):
            self._release(task)
            if task.cancelled:
                self.core.drop(task)
            else:
                task.pid = 0
                task.handle = None
                self._queue.appendleft(task)
        w.inflight.clear()

    def _kill(self, w: _Worker) -> None:
        """Terminate a worker on purpose; tasks queued behind its head go back to the queue."""
        self._requeue(w)
        w.state = _KILLING
        w.kill_at = time.monotonic() + self._config.kill_grace
        try:
            w.proc.terminate()
        except (OSError, ValueError):
            pass

    def _short(self, spec: TaskSpec) -> bool:
        ema = self.core.costs.get(spec.fn.key)
        if ema is not None and spec.chunk:
            ema *= len(spec.chunk)
        return ema is not None and ema <= _PREFETCH_HEAD_MAX

    def _reply(self, w: _Worker, reply: tuple[Any, ...]) -> None:
        try:
            self._post(w, _dumps(reply, 5))
        except (OSError, ValueError):
            pass  # the worker died meanwhile; its sentinel reports it

    def next_wakeup(self) -> float | None:
        nearest: float | None = None
        for w in self._workers.values():
            t = w.kill_at
            if t is not None and (nearest is None or t < nearest):
                nearest = t
        if self._breaker_until is not None and (nearest is None or self._breaker_until < nearest):
            nearest = self._breaker_until
        if (
            self._max_memory
            and self.core.tasks
            and (nearest is None or self._memory_check_at < nearest)
        ):
            nearest = self._memory_check_at
        return nearest


def _is_tracing(interceptor: object) -> bool:
    return type(interceptor) is TracingInterceptor
