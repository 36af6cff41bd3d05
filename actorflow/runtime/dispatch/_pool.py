"""The dispatcher: owns the worker pool, queues ready steps, enforces deadlines.

One actor thread does everything here. Its inbox (:class:`SelectorInbox`) waits on the actor's
messages, every worker's pipe and process sentinel, and the nearest deadline at once, so worker
results, crashes and timeouts arrive as messages and the pool state has a single owner.

Per worker, the life is: starting (process launched) -> ready (said hello) -> killing (timed
out or cancelled: SIGTERM, then SIGKILL after ``kill_grace``) -> gone (sentinel fired). A worker
whose sentinel fires while it was not being killed crashed: the one task it was running (the
head of its in-flight queue) fails with kind ``crash``; tasks queued behind it go back to the
queue unstarted. Every death is replaced, unless more than ``restart_limit`` happened within
``restart_window`` seconds: then the restart breaker opens for ``breaker_cooldown`` seconds
and, if no worker is left, queued tasks fail with kind ``pool``.

A drain sends nothing more and takes back the tasks queued inside workers; at the stop, the
tasks that never started (queued here, or dropped by a stopping worker) are recorded as such,
so recovery does not count them as interrupted attempts (``_unstarted.py``).

Costs are per message, not per task, so work moves in batches: a busy worker gets up to
``prefetch`` tasks queued behind the one it runs (sent in one frame, so it never waits for the
engine between tasks), a wake-up reads every result a worker has written in one system call,
and results go to each shard as one message per wake-up.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pykka

from actorflow import _faults
from actorflow.config import EngineConfig
from actorflow.definition._options import qualified_name
from actorflow.errors import PoolUnavailable
from actorflow.runtime.dispatch._core import (
    CRASH_TYPES,
    POOL_TYPES,
    DispatcherStats,
    Reports,
    answer_request,
    attempt_report,
    blob_ref,
    mro_names,
    timeout_error,
)
from actorflow.runtime.kernel._inbox import Actor, IoReady, SelectorInbox, Tick, Writable
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    CancelTasks,
    ChunkItem,
    Dispatch,
    Drain,
    ErrorInfo,
    TaskSpec,
    Unmapped,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence._unstarted import left_in_inbox, record
from actorflow.store._codec import TAG_BLOB, TAG_SHARED
from actorflow.store._protocol import Store
from actorflow.workers import _protocol as W

__all__ = ["Dispatcher"]

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


class Dispatcher(Actor):
    """Runs tasks on the worker pool and reports their outcome to the runs' supervisors.

    Args:
        config: the engine config (pool size, start method, kill grace, breaker limits).
        route: maps a run id to its shard's actor ref.
        store: read to answer workers' ``ctx.steps[...]`` requests.
        ready: completed once the initial workers all said hello.
        costs: where to keep each function's recent seconds per call (shared with the
            supervisors, which size chunks of tiny item steps by it).
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

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        for _ in range(self._target):
            self._spawn()

    def on_stop(self) -> None:
        self._stopping = True
        self._spawner.close()
        for w in list(self._workers.values()):
            try:
                self._post(w, _dumps((W.STOP,), 5))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + self._config.kill_grace
        for w in list(self._workers.values()):
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join(1.0)
            self._settle(w)
            self._forget(w)
        if self._reports:
            self._reports.send()  # steps that finished as their workers stopped
        # Never sent, or never started: not attempts (see ``_unstarted``).
        unstarted = [*self._unstarted, *self._queue, *left_in_inbox(self.actor_inbox)]
        self._queue.clear()
        self._unstarted = []
        record(getattr(self._host, "writer", None), unstarted)
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
                elif type(item) is Writable:
                    w = self._by_conn.get(item.target)
                    if w is not None:
                        self._flush_out(w)
                else:
                    w = self._by_conn.get(item)
                    if w is not None:
                        self._read(w)
            self._pump()
        elif t is Dispatch:
            if message.tasks and self._probe is None:
                # Sample one task per message for the dispatch latency statistics.
                self._probe = (message.tasks[0], time.monotonic())
            self._queue.extend(message.tasks)
            self._pump()
        elif t is Tick:
            self._tick()
        elif t is _Spawned:
            self._spawned(message)
        elif t is CancelTasks:
            self._cancel(frozenset(message.run_ids), frozenset(message.tasks))
        elif t is Drain:
            self._drain = message.done
            self._withdraw()
            self._check_drained()
        elif t is _Reply:
            w = self._workers.get(message.wid)
            if w is not None and w.conn is message.conn:
                self._reply(w, message.msg)
        elif t is Unmapped:
            self._unmapped()
        else:
            return super().on_receive(message)
        if self._reports:
            self._reports.send()
        return None

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

    # -- sending ---------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._drain is not None:
            return
        queue, idle = self._queue, self._idle
        if queue:
            ready = self._ready_count() or 1
            while queue and idle:  # idle workers first, the warmest first
                w = idle.pop()
                if w.state == _READY and not w.inflight:
                    self._fill(w, -(-len(queue) // ready))
            if queue and self._prefetch:
                for w in self._workers.values():  # then top up the busy ones
                    if not queue:
                        break
                    if w.state == _READY and w.inflight:
                        self._fill(w, -(-len(queue) // ready))
        if queue and self._breaker_until is not None and not self._live_workers():
            self._fail_queued()

    def _fill(self, w: _Worker, share: int) -> None:
        """Send ``w`` up to ``share`` tasks: one to run, and maybe some to queue behind it.

        Tasks wait inside a worker only behind a task known to be short (its function's
        recent durations), so nothing is stuck behind a long task while another worker idles.
        How many may wait adapts to those durations (about :data:`_PREFETCH_WORK` of work, at
        most ``prefetch``): tiny tasks travel in large batches, 10 ms tasks one or two at a
        time. A busy worker is topped up only once its queue is half empty, so each frame
        carries several tasks.
        """
        head = w.inflight[0].spec if w.inflight else self._queue[0]
        allowed = 0
        if self._prefetch and self._short(head):
            ema = self._fn_ema[head.fn.key] * (len(head.chunk) if head.chunk else 1)
            allowed = max(1, min(self._prefetch, int(_PREFETCH_WORK / max(ema, 1e-6))))
        if w.inflight and not allowed:
            return
        queued = len(w.inflight) - 1  # -1: idle
        if queued >= 0 and queued >= max(1, allowed // 2):
            return
        room = min(1 + allowed - len(w.inflight), share)
        queue = self._queue
        batch: list[TaskSpec] = []
        last = w.inflight[-1].spec if w.inflight else None
        while room > 0 and queue:
            if last is not None and not (_small(queue[0]) and self._short(last)):
                break  # only small tasks wait, and only behind tasks known to be short
            last = queue.popleft()
            batch.append(last)
            room -= 1
        if batch:
            self._send(w, batch)

    def _short(self, spec: TaskSpec) -> bool:
        ema = self._fn_ema.get(spec.fn.key)
        if ema is not None and spec.chunk:
            ema *= len(spec.chunk)
        return ema is not None and ema <= _PREFETCH_HEAD_MAX

    def _send(self, w: _Worker, specs: list[TaskSpec]) -> None:
        if _faults.ACTIVE:
            _faults.crash_point("dispatcher.before_send")
        level = step_log.getEffectiveLevel()
        frames = []
        entries = []
        probe = self._probe
        sent: list[TaskSpec] = []
        for spec in specs:
            if probe is not None and spec is probe[0]:
                self._latencies.append(time.monotonic() - probe[1])
                self._probe = probe = None
            self._next_task += 1
            task_id = self._next_task
            payload: bytes | None
            payload, last, item, error, chunk = (
                spec.payload,
                spec.last,
                spec.item,
                spec.error,
                spec.chunk,
            )
            if self._blobs is not None:
                try:
                    payload, last, item, error = (
                        self._wire(payload, task_id, lazy=True),
                        self._wire(last, task_id, lazy=True),
                        self._wire(item, task_id),
                        self._wire(error, task_id),
                    )
                    if chunk and any(_large(c[1]) or _large(c[2]) for c in chunk):
                        chunk = tuple(
                            (c[0], self._wire(c[1], task_id), self._wire(c[2], task_id), c[3])
                            for c in chunk
                        )
                except Exception as exc:  # a blob is missing, or no shared memory is left
                    self._blobs.end_task(task_id)
                    qual = qualified_name(type(exc))
                    self._fail(spec, ErrorInfo("error", qual, mro_names(type(exc)), str(exc)), None)
                    continue
            sent.append(spec)
            fn = spec.fn
            first = fn.key not in w.fns
            if first:
                w.fns.add(fn.key)
            frames.append(
                (
                    task_id,
                    spec.run_id,
                    spec.step,
                    spec.attempt,
                    spec.workflow_id,
                    fn.key,
                    fn.ref if first else None,
                    fn.blob if first else None,
                    payload,
                    last,
                    level,
                    item if chunk is None else chunk,
                    spec.position,
                    spec.call if chunk is None else W.CALL_CHUNK | spec.call,
                    error,
                    spec.details,
                )
            )
            entries.append(_Inflight(task_id, spec))
        if not entries:
            return
        try:
            data = _dumps((W.TASKS, frames), 5)
            self.stats.bytes_sent += len(data)
            self._post(w, data)
        except (OSError, ValueError):
            # The worker is dying; its sentinel will report it. None of these tasks started,
            # but the one it was running (if any) did: its death is that task's crash.
            if self._blobs is not None:
                for entry in entries:
                    self._blobs.end_task(entry.task_id)
            self._queue.extendleft(reversed(sent))
            w.fns.clear()
            w.state = _BROKEN if w.inflight else _KILLING
            return
        was_idle = not w.inflight
        for entry in entries:
            w.inflight.append(entry)
            self._tasks[entry.task_id] = (w, entry)
        if was_idle:
            self._arm_head(w)
        self.stats.dispatched += len(entries)

    # -- receiving -------------------------------------------------------------------------

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

    def _flush_out(self, w: _Worker) -> None:
        try:
            sent = os.write(w.fd, w.out)
        except BlockingIOError:
            return
        except OSError:
            w.out.clear()  # dying: its sentinel reports it
            sent = 0
        del w.out[:sent]
        if not w.out:
            self._inbox.want_write(w.conn, False)

    def _read(self, w: _Worker) -> None:
        try:
            messages = w.reader.read()
        except BlockingIOError:
            return  # woken for room to write, or a spurious wake-up: nothing to read yet
        except (EOFError, OSError):
            # The worker closed its pipe: it is exiting. Stop polling the pipe; the
            # sentinel reports the death.
            self._by_conn.pop(w.conn, None)
            self._refresh_waitables()
            return
        for msg in messages:
            self._handle(w, msg)

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op == W.DONE:
            self._done(w, msg)
        elif op == W.SKIPPED:
            found = self._end(msg[1], None)
            if found is not None:
                entry = found[1]
                if not entry.cancelled:  # taken back by a drain or a stop: never started
                    self._unstarted.append(entry.spec)
                self._pop_entry(w, entry)
        elif op == W.REQUEST:
            self._answer(w, msg)
        elif op == W.BEAT:
            self._beat(w, msg)
        elif op == W.LOG:
            found = self._tasks.get(msg[1])
            if found is not None:
                spec = found[1].spec
                step_log.log(
                    msg[2],
                    msg[3],
                    extra={
                        "run_id": spec.run_id,
                        "step": _task_step(spec, msg[4]),
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

    def _pop_entry(self, w: _Worker, entry: _Inflight) -> None:
        """A task of ``w`` ended: the next one in its queue (if any) is now running."""
        inflight = w.inflight
        if inflight and inflight[0] is entry:
            inflight.popleft()
        else:
            try:
                inflight.remove(entry)
            except ValueError:
                pass
        if inflight:
            self._arm_head(w)
        else:
            w.deadline = None
            if w.state == _READY:
                self._idle.append(w)
            elif w.state == _RETIRING:
                self._stop_retired(w)
        if self._drain is not None:
            self._check_drained()

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

    def _stop_retired(self, w: _Worker) -> None:
        """A retiring worker finished its last task: ask it to exit (killed if it lingers)."""
        w.kill_at = time.monotonic() + self._config.kill_grace + 5.0
        try:
            self._post(w, _dumps((W.STOP,), 5))
        except (OSError, ValueError):
            pass  # already gone: its sentinel reports it

    def _arm_head(self, w: _Worker) -> None:
        """The head of ``w``'s queue starts now: its deadline (timeout, heartbeat)."""
        head = w.inflight[0]
        head.started = head.beat = time.monotonic()
        self._set_deadline(w, head)

    @staticmethod
    def _set_deadline(w: _Worker, head: _Inflight) -> None:
        spec = head.spec
        deadline = None if spec.timeout is None else head.started + spec.timeout
        if spec.heartbeat_timeout is not None:
            silent = head.beat + spec.heartbeat_timeout
            deadline = silent if deadline is None else min(deadline, silent)
        w.deadline = deadline

    def _beat(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        found = self._tasks.get(msg[1])
        if found is None:
            return
        entry = found[1]
        entry.details = msg[2]
        entry.beat = time.monotonic()
        if w.inflight and w.inflight[0] is entry and entry.spec.heartbeat_timeout is not None:
            self._set_deadline(w, entry)

    def _done(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        _, task_id, ok, data, started, ended = msg
        found = self._tasks.get(task_id)
        if found is None:
            return  # it already timed out
        entry = found[1]
        if self._blobs is not None:
            ok, data = self._adopt(task_id, ok, data, entry.spec.chunk is not None)
        self._end(task_id)
        w.done += 1
        if w.state == _READY and (self._max_tasks or self._max_memory) and self._worn_out(w):
            self._retire(w)
        self._pop_entry(w, entry)
        spec = entry.spec
        chunk = spec.chunk
        took = ended - started
        if chunk:
            took /= len(chunk)
        key = spec.fn.key
        ema = self._fn_ema.get(key)
        self._fn_ema[key] = took if ema is None else 0.8 * ema + 0.2 * took
        if entry.cancelled:
            return
        if chunk is not None and ok:
            self._chunk_done(w, spec, chunk, data)
            return
        if ok:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        self._reports.add(
            attempt_report(spec, spec.step, ok, data, started, ended, w.pid, entry.details)
        )

    def _chunk_done(
        self, w: _Worker, spec: TaskSpec, chunk: tuple[ChunkItem, ...], outcomes: list[Any]
    ) -> None:
        """Report each item of a chunk as the step attempt it is."""
        add, pid = self._reports.add, w.pid
        failed = 0
        for item, (ok, data, started, ended) in zip(chunk, outcomes, strict=True):
            if not ok:
                failed += 1
            add(attempt_report(spec, item[0], ok, data, started, ended, pid))
        self.stats.succeeded += len(chunk) - failed
        self.stats.failed += failed

    # -- large values ------------------------------------------------------------------------

    def _end(self, task_id: int, default: Any = None) -> Any:
        """Forget task ``task_id`` (ended in any way); release the large values it held."""
        found = self._tasks.pop(task_id, default)
        if self._blobs is not None:
            self._blobs.end_task(task_id)
        return found

    def _wire(self, value: bytes | None, task_id: int, lazy: bool = False) -> bytes | None:
        """A value as the worker of ``task_id`` receives it (a large one in shared memory).

        ``lazy`` (payload, ``ctx.last``): a value whose blobs are not in memory (after a
        restart) goes as a reference, loaded only if the step reads it.
        """
        if value and value[0] == _TAG_BLOB:
            assert self._blobs is not None
            if lazy and not self._blobs.resident(value):
                return blob_ref(value)
            wired: bytes = self._blobs.wire(value, task_id)
            return wired
        return value

    def _adopt(self, task_id: int, ok: bool, data: Any, chunk: bool) -> tuple[bool, Any]:
        """Outputs a worker left in shared memory become the engine's (``B`` values)."""
        blobs = self._blobs
        assert blobs is not None
        try:
            if chunk and ok:
                outcomes = []
                for item_ok, item_data, t0, t1 in data:
                    if item_ok and item_data and item_data[0] == _TAG_SHARED:
                        item_data = blobs.adopt(task_id, item_data)
                    outcomes.append((item_ok, item_data, t0, t1))
                return ok, outcomes
            if ok and data and data[0] == _TAG_SHARED:
                return ok, blobs.adopt(task_id, data)
        except ValueError as exc:
            from actorflow.workers._main import error_tuple

            return False, error_tuple(exc)
        return ok, data

    def _unmapped(self) -> None:
        """Tell every worker which segments were unlinked, so it drops its mappings."""
        if self._blobs is None:
            return
        names = self._blobs.take_unlinked()
        if not names:
            return
        frame = _dumps((W.UNMAP, names), 5)
        for w in self._workers.values():
            if w.state in (_READY, _RETIRING):
                try:
                    self._post(w, frame)
                except (OSError, ValueError):
                    pass

    def _answer(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        _, req_id, task_id, op, arg, step = msg
        found = self._tasks.get(task_id)
        try:
            if found is None:
                raise LookupError("the task is no longer running")
            spec = found[1].spec
            if op == "state" and self._host is not None:
                # Answered once durable, from the writer's thread: back through this inbox,
                # so that only this actor ever writes to a worker's pipe.
                ref, wid, conn = self.actor_ref, w.wid, w.conn

                def done(ok: bool, value: Any) -> None:
                    answer = value if ok else _error_reply(value)
                    try:
                        ref.tell(_Reply(wid, conn, (W.REPLY, req_id, ok, answer)))
                    except pykka.ActorDeadError:
                        pass  # stopping: the step's worker is going away too

                state_op, scope, args = arg
                self._host.state.call(state_op, str(scope), tuple(args), done)
                return
            if op == "shm":  # segments for this task's large output buffers
                value = None if self._blobs is None else self._blobs.lend(task_id, list(arg))
            else:  # output, ref (a large value sent by reference), service, breaker
                value = answer_request(
                    op, arg, self._store, self._host, spec.run_id, spec.workflow_id,
                    _task_step(spec, step),
                )  # fmt: skip
            if op in ("output", "ref") and self._blobs is not None:
                value = self._wire(value, task_id)
            reply: tuple[Any, ...] = (W.REPLY, req_id, True, value)
        except Exception as exc:
            reply = (W.REPLY, req_id, False, _error_reply(exc))
        self._reply(w, reply)

    def _reply(self, w: _Worker, reply: tuple[Any, ...]) -> None:
        try:
            self._post(w, _dumps(reply, 5))
        except (OSError, ValueError):
            pass  # the worker died meanwhile; its sentinel reports it

    # -- deadlines, kills, crashes ---------------------------------------------------------

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
        if self._max_memory and now >= self._memory_check_at:
            self._memory_check_at = now + _MEMORY_EVERY
            for w in list(self._workers.values()):
                if w.inflight and w.state in (_READY, _RETIRING):
                    rss = self._own_memory(w)
                    if rss > 2 * self._max_memory:
                        self._blew_up(w, rss)
        if self._breaker_until is not None and now >= self._breaker_until:
            log.warning("worker restart breaker closes; starting workers again")
            self._breaker_until = None
            self._deaths.clear()
            while self._live_workers() < self._target:
                self._spawn()
        self._pump()

    def _timed_out(self, w: _Worker) -> None:
        entry = w.inflight.popleft()
        spec = entry.spec
        self._end(entry.task_id, None)
        if not entry.cancelled:
            self.stats.timeouts += 1
            error = timeout_error(spec, entry.started, entry.beat, entry.details, "worker killed")
            log.warning(
                "step %r of run %s: %s; killing worker %d",
                spec.step,
                spec.run_id,
                error.message,
                w.pid,
            )
            self._fail(spec, error, w.pid)
        self._kill(w)

    def _blew_up(self, w: _Worker, rss: int) -> None:
        """``w``'s step passed twice max_memory_per_worker: kill it, fail the step (a crash)."""
        entry = w.inflight.popleft()
        spec = entry.spec
        self._end(entry.task_id, None)
        self.stats.crashes += 1
        message = (
            f"worker process killed: its memory ({rss >> 20} MiB) passed twice "
            f"max_memory_per_worker ({self._max_memory >> 20} MiB) while the step ran"
        )
        log.error("step %r of run %s: %s (worker %d)", spec.step, spec.run_id, message, w.pid)
        if not entry.cancelled:
            error = ErrorInfo(
                "crash",
                CRASH_TYPES[0],
                CRASH_TYPES,
                message,
                exitcode=-signal.SIGKILL,
                details=entry.details,
            )
            self._fail(spec, error, w.pid)
        self._kill(w)
        try:
            w.proc.kill()  # a process eating memory gets no grace period
        except (OSError, ValueError):
            pass

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

    def _requeue(self, w: _Worker) -> None:
        """Put ``w``'s unstarted tasks back at the front of the queue, in order."""
        for entry in reversed(w.inflight):
            self._end(entry.task_id, None)
            if not entry.cancelled:
                self._queue.appendleft(entry.spec)
        w.inflight.clear()

    def _exited(self, w: _Worker) -> None:
        # Results the worker sent just before dying are still in the pipe: take them first.
        if w.conn in self._by_conn:
            fd = w.conn.fileno()
            try:
                while select.select([fd], [], [], 0)[0]:
                    for msg in w.reader.read():
                        self._handle(w, msg)
            except (EOFError, OSError):
                pass
        w.proc.join(0.5)
        code = w.proc.exitcode
        if w.state == _STARTING and not self._ready.done():
            # Dying before hello, at engine start: an import or environment problem that a
            # restart will not fix. Fail start() now rather than after its timeout.
            self._spawn_failures += 1
            if self._spawn_failures >= 3:
                self._ready.set_exception(
                    PoolUnavailable(
                        f"worker processes exit while starting ({_describe_exit(code)}); "
                        "their error output is above"
                    )
                )
        if w.state != _KILLING and not (w.state == _RETIRING and not w.inflight):
            self.stats.crashes += 1
            how = _describe_exit(code)
            if w.inflight:
                entry = w.inflight.popleft()
                spec = entry.spec
                self._end(entry.task_id, None)
                log.error(
                    "worker %d died (%s) running step %r of run %s",
                    w.pid,
                    how,
                    spec.step,
                    spec.run_id,
                )
                if not entry.cancelled:
                    self._fail(
                        spec,
                        ErrorInfo(
                            "crash",
                            CRASH_TYPES[0],
                            CRASH_TYPES,
                            f"worker process died ({how})",
                            exitcode=code,
                            details=entry.details,
                        ),
                        w.pid,
                    )
            else:
                log.error("idle worker %d died (%s)", w.pid, how)
        self._requeue(w)
        self._forget(w)
        if not self._stopping:
            self._replace(counted=w.state != _RETIRING)
        if self._drain is not None:
            self._check_drained()

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

    def _fail_queued(self) -> None:
        message = (
            f"no worker can run this step: the worker restart breaker is open after "
            f"more than {self._config.restart_limit} worker deaths in "
            f"{self._config.restart_window:g}s"
        )
        while self._queue:
            spec = self._queue.popleft()
            self._fail(spec, ErrorInfo("pool", POOL_TYPES[0], POOL_TYPES, message), None)

    def _fail(self, spec: TaskSpec, error: ErrorInfo, pid: int | None) -> None:
        """Report a failure the engine observed (not one the step raised)."""
        self._reports.add(
            AttemptFailed(spec.run_id, spec.step, spec.attempt, error, None, time.time(), pid)
        )

    def _cancel(self, run_ids: frozenset[str], tasks: frozenset[tuple[str, str]]) -> None:
        def doomed(spec: TaskSpec) -> bool:
            return spec.run_id in run_ids or (spec.run_id, spec.step) in tasks

        self._queue = deque(s for s in self._queue if not doomed(s))
        for w in list(self._workers.values()):
            for i, entry in enumerate(w.inflight):
                if entry.cancelled or not doomed(entry.spec):
                    continue
                entry.cancelled = True
                if i > 0:
                    # Queued in the worker, not started: ask it to drop the task.
                    try:
                        self._post(w, _dumps((W.CANCEL, entry.task_id), 5))
                    except (OSError, ValueError):
                        pass
            if w.inflight and w.inflight[0].cancelled and w.state == _READY:
                head = w.inflight.popleft()
                self._end(head.task_id, None)
                log.info("killing worker %d: the run of its step was cancelled", w.pid)
                self._kill(w)
        if self._drain is not None:
            self._check_drained()

    def _check_drained(self) -> None:
        if self._drain is not None and not self._tasks and not self._drain.done():
            self._drain.set_result(None)

    def _withdraw(self) -> None:
        """Draining starts nothing new: take back the tasks queued inside workers.

        A worker reads its pipe between tasks, so it drops each (``SKIPPED``) before it would
        start it; one it started already reports its result as usual.
        """
        for w in self._workers.values():
            for entry in list(w.inflight)[1:]:
                if not entry.cancelled:
                    try:
                        self._post(w, _dumps((W.CANCEL, entry.task_id), 5))
                    except (OSError, ValueError):
                        break  # dying: its tasks are settled at its death or the stop

    def _settle(self, w: _Worker) -> None:
        """At stop, once ``w`` exited or was killed: take its last words, note what never began.

        A stopped worker finishes its task (``DONE``) and drops those queued behind it
        (``SKIPPED``); either way it answers each task before it starts the next, in order. So
        of the tasks it left unanswered (it was killed), only the first may have started: that
        one is interrupted, the rest never started.
        """
        if w.conn in self._by_conn:
            try:
                while select.select([w.fd], [], [], 0)[0]:
                    for msg in w.reader.read():
                        if msg[0] in (W.DONE, W.SKIPPED):
                            self._handle(w, msg)
            except (EOFError, OSError):
                pass  # its pipe is closed: everything it wrote was read
        for entry in list(w.inflight)[1:]:
            if not entry.cancelled:
                self._unstarted.append(entry.spec)

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
