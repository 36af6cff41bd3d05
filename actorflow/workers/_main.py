"""The worker process: receive tasks on its pipe, run step functions, send results back.

A worker imports nothing of the engine beyond this package and the codec; it never opens the
store. Step functions arrive by reference or as cloudpickle bytes and are cached by key, so a
function is imported or unpickled once per worker. SIGINT is ignored (a Ctrl-C in the terminal
is the engine's to handle); SIGTERM keeps its default action, so a timed-out step dies at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import inspect
import logging
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from actorflow import _platform
from actorflow._tracebacks import format_error
from actorflow.errors import ClientError
from actorflow.store._codec import TAG_SHARED, encode_value, set_resolver
from actorflow.workers import _interceptors, _tracing
from actorflow.workers import _protocol as W
from actorflow.workers._context import CURRENT, RunInfo, StepContext
from actorflow.workers._shm import Maps, WorkerSink

__all__ = ["error_tuple", "load_function", "worker_main"]

_step_logger = logging.getLogger("actorflow.step")
_PR_SET_PDEATHSIG = 1


def error_tuple(exc: BaseException) -> W.ErrorTuple:
    """Describe an exception so the engine can match, show and (if possible) re-raise it.

    Its traceback comes in full and without the engine's frames (``format_error``).
    """
    t = type(exc)
    qual = f"{t.__module__}.{t.__qualname__}"
    mro = tuple(
        f"{c.__module__}.{c.__qualname__}" for c in t.__mro__ if issubclass(c, BaseException)
    )
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the error
        message = f"<unprintable {t.__qualname__}>"
    tb, user_tb = format_error(exc)
    blob: bytes | None
    try:
        blob = pickle.dumps(exc, protocol=5)
        pickle.loads(blob)  # exceptions with required init args pickle but do not unpickle
    except Exception:
        blob = None
    return qual, mro, message, tb, blob, user_tb


class _Worker:
    def __init__(self, conn: Connection, shm_threshold: int = 0) -> None:
        self.conn = conn
        # Large values arrive in (and large outputs leave through) shared-memory segments
        # the engine owns; this worker keeps its mappings of them.
        self.maps = Maps()
        set_resolver(TAG_SHARED, self.maps.view)
        self.sink = (
            WorkerSink(shm_threshold, self.maps, lambda sizes: self.request("shm", sizes))
            if shm_threshold > 0
            else None
        )
        self.fd = conn.fileno()
        self.reader = W.FrameReader(self.fd)
        self.poller = select.poll()
        self.poller.register(conn.fileno(), select.POLLIN)
        self.send_lock = threading.Lock()
        self.functions: dict[str, Callable[..., Any]] = {}
        self.tasks: deque[tuple[Any, ...]] = deque()  # received, not started
        self.cancelled: set[int] = set()
        self.replies: dict[int, tuple[Any, ...]] = {}
        self.stopping = False
        self.next_req = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task_id = -1
        self.step = ""  # the step running now (inside a chunk: the current item's)
        self.log_level = logging.NOTSET
        handler = _PipeLogHandler(self)
        _step_logger.handlers[:] = [handler]
        _step_logger.propagate = False

    def send(self, msg: tuple[Any, ...]) -> None:
        frame = W.encode_frame(msg)
        with self.send_lock:
            view = memoryview(frame)
            while view:  # a blocking pipe takes it all; the loop only guards against EINTR
                view = view[os.write(self.fd, view) :]

    def take(self, msg: tuple[Any, ...]) -> None:
        """File one incoming message."""
        op = msg[0]
        if op == W.TASKS:
            self.tasks.extend(msg[1])
        elif op == W.CANCEL:
            self.cancelled.add(msg[1])
        elif op == W.REPLY:
            self.replies[msg[1]] = msg
        elif op == W.UNMAP:
            self.maps.drop(msg[1])
        elif op == W.STOP:
            self.stopping = True

    def receive(self, block: bool) -> None:
        """Take every message waiting in the pipe (waiting for at least one if ``block``).

        One read takes whatever the pipe holds; a persistent poll object tells whether it
        holds anything (``Connection.poll`` builds a selector on every call).
        """
        if not block and not self.poller.poll(0):
            return
        while True:
            messages = self.reader.read()
            for msg in messages:
                self.take(msg)
            if messages or not block:
                return  # a partial frame is finished by the next read

    def serve(self) -> None:
        fresh = False
        while not self.stopping:
            if not self.tasks:
                self.receive(block=True)
                fresh = True  # just drained the pipe: nothing more to look for yet
                continue
            if not fresh:
                # Cancels for queued tasks may be in the pipe behind them: read them first.
                self.receive(block=False)
            fresh = False
            task = self.tasks.popleft()
            if task[0] in self.cancelled:
                self.cancelled.discard(task[0])
                self.send((W.SKIPPED, task[0]))
                continue
            self.run(task)
        # Told to stop: the tasks still queued here never start, and the engine must know
        # that they did not (they are not attempts; see runtime/persistence/_unstarted.py).
        while self.tasks:
            self.send((W.SKIPPED, self.tasks.popleft()[0]))

    def request(self, op: str, arg: Any) -> Any:
        """Ask the engine something and wait for the reply; other messages are filed."""
        self.next_req += 1
        req_id = self.next_req
        self.send((W.REQUEST, req_id, self.task_id, op, arg, self.step))
        while req_id not in self.replies:
            self.receive(block=True)
        msg = self.replies.pop(req_id)
        if not msg[2]:
            kind, message = msg[3]
            if kind == "client":
                raise ClientError(message)
            raise RuntimeError(f"engine could not answer {op!r}: {message}")
        return msg[3]

    def function(self, key: str, ref: str | None, blob: bytes | None) -> Callable[..., Any]:
        return load_function(self.functions, key, ref, blob)

    def run(self, task: tuple[Any, ...]) -> None:
        (task_id, run_id, step, attempt, workflow_id, key, ref, blob, payload, last, level,
         item, index, call, error, details) = task  # fmt: skip
        self.task_id = task_id
        self.step = step
        if level != self.log_level:  # setLevel clears every logger's cache: only on change
            _step_logger.setLevel(level)
            self.log_level = level
        if call & W.CALL_CHUNK:  # a chunk of tiny item steps
            self.run_chunk(task)
            return
        started = time.time()
        try:
            fn = self.function(key, ref, blob)
            # From here: the first call's import is not the step's time (nor its cost).
            started = time.time()
            info = RunInfo(run_id, workflow_id, step, attempt)
            data = self.call(fn, call, info, payload, last, item, index, error, details)
        except BaseException as exc:
            self.send((W.DONE, task_id, False, error_tuple(exc), started, time.time()))
        else:
            self.send((W.DONE, task_id, True, data, started, time.time()))
        finally:
            self.task_id = -1

    def run_chunk(self, task: tuple[Any, ...]) -> None:
        """Run a chunk's items one after the other; report all their outcomes at once.

        An item that raises is reported as failed and the next one runs. If the worker dies
        (or is killed at the chunk's timeout), the engine reports the whole chunk as failed
        and runs its items again one by one, so the item at fault is found.
        """
        (task_id, run_id, chunk_id, attempt, workflow_id, key, ref, blob, payload, _, _,
         items, _, call, _, _) = task  # fmt: skip
        started = time.time()
        try:
            fn = self.function(key, ref, blob)
        except BaseException as exc:
            self.send((W.DONE, task_id, False, error_tuple(exc), started, time.time()))
            self.task_id = -1
            return
        started = time.time()
        with_item = call & W.CALL_ITEM
        outcomes: list[tuple[bool, Any, float, float]] = []
        for step, last, item, index in items:
            self.step = step
            t = time.time()
            try:
                info = RunInfo(run_id, workflow_id, step, attempt)
                data = self.call(fn, with_item, info, payload, last, item, index, None)
                outcomes.append((True, data, t, time.time()))
            except BaseException as exc:
                outcomes.append((False, error_tuple(exc), t, time.time()))
        self.step = chunk_id
        self.task_id = -1
        self.send((W.DONE, task_id, True, outcomes, started, time.time()))

    def call(
        self,
        fn: Callable[..., Any],
        with_item: int,
        info: RunInfo,
        payload: bytes,
        last: bytes | None,
        item: bytes | None,
        index: int | None,
        error: bytes | None,
        details: bytes | None = None,
    ) -> bytes:
        """Call a step function (awaiting it if async); return its encoded output."""
        ctx = StepContext(
            info, payload, last, self.fetch_output, item, index, error, host=self, details=details
        )
        token = CURRENT.set(ctx)

        def invoke() -> Any:
            if with_item == W.CALL_ARGS:  # a code workflow's step: fn(*args)
                result = fn(*ctx.item)
            else:
                result = fn(ctx.item, ctx) if with_item else fn(ctx)
            if inspect.iscoroutine(result):
                if self.loop is None:
                    self.loop = asyncio.new_event_loop()
                result = self.loop.run_until_complete(result)
            return result

        try:
            # Through the interceptors (the tracing scope first, when tracing is on).
            result = _interceptors.run_step(_interceptors.CHAIN, info, fn, invoke, os.getpid())
        finally:
            CURRENT.reset(token)
        return encode_value(result, f"output of step {info.step!r}", self.sink)

    def heartbeat(self, details: Any) -> None:
        """``ctx.heartbeat(details)``: tell the engine the running step is alive."""
        data = None if details is None else encode_value(details, "heartbeat details")
        self.send((W.BEAT, self.task_id, data))

    def fetch_output(self, step: str) -> bytes | None:
        value: bytes | None = self.request("output", step)
        return value


def load_function(
    cache: dict[str, Callable[..., Any]], key: str, ref: str | None, blob: bytes | None
) -> Callable[..., Any]:
    """A step function by key: cached, else unpickled from ``blob`` or imported by ``ref``.

    ``ref`` is ``module:qualname``.
    """
    fn = cache.get(key)
    if fn is None:
        if blob is not None:
            fn = pickle.loads(blob)
        elif ref is not None:
            module, _, qualname = ref.partition(":")
            target: Any = importlib.import_module(module)
            for part in qualname.split("."):
                target = getattr(target, part)
            fn = target
        else:
            raise RuntimeError(f"no function {key!r} is cached here and none was sent")
        cache[key] = fn
    assert fn is not None
    return fn


class _PipeLogHandler(logging.Handler):
    """Forwards ``ctx.log`` records to the engine, which re-emits them with run fields."""

    def __init__(self, worker: _Worker) -> None:
        super().__init__()
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            w = self.worker
            message = self.format(record)  # with its traceback, if it has one
            w.send((W.LOG, w.task_id, record.levelno, message, w.step, record.created))
        except Exception:
            self.handleError(record)


def _die_with_parent(engine_pid: int) -> None:
    """Make sure this worker dies with the engine process ``engine_pid`` (0: not known).

    An engine killed by SIGKILL must not leave workers running steps that the next engine will
    run again. On Linux the kernel SIGKILLs a worker whose parent dies (``PR_SET_PDEATHSIG``),
    which covers a ``spawn`` worker: its parent is the engine. A forkserver worker's parent is
    the forkserver, and other systems have no such signal: there :func:`_watch_pid` watches
    the engine. (:func:`_watch_engine`, the pipe's hang-up, covers every worker, unless a
    process the engine forked keeps the engine's end of the pipe open.)
    """
    parent = os.getppid()
    if _platform.PDEATHSIG:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        else:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            if parent == engine_pid:
                return
    if engine_pid:
        _watch_pid(engine_pid, _platform.PARENT_POLL_INTERVAL)


def _watch_pid(pid: int, interval: float) -> None:
    """Exit once process ``pid`` is gone, checking every ``interval`` seconds.

    A process that died but was not reaped yet (a zombie) counts as gone, and so does a new
    process that took the pid over (its start time differs).
    """
    import psutil

    try:
        engine = psutil.Process(pid)
    except psutil.NoSuchProcess:
        os._exit(1)

    def gone() -> bool:
        try:
            return not engine.is_running() or engine.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False  # denied a look: not a sign of death

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="actorflow-engine-poll", daemon=True).start()


def _watch_engine(conn: Connection) -> None:
    """Exit as soon as the engine's end of the pipe closes, even in the middle of a step.

    The parent-death signal does not cover forkserver workers: their parent is the forkserver,
    which every worker keeps alive (each holds a copy of its "alive" pipe). A thread blocked
    in poll for the pipe's hang-up costs nothing until the engine dies.
    """
    hangup = getattr(select, "POLLRDHUP", 0) | select.POLLHUP
    poller = select.poll()
    poller.register(conn.fileno(), hangup)
    # An error on the pipe (reported whether asked for or not) ends it as surely as a hang-up,
    # and would otherwise make this loop spin.
    gone = hangup | select.POLLERR | select.POLLNVAL

    def watch() -> None:
        while True:
            for _, event in poller.poll():
                if event & gone:
                    os._exit(0)

    threading.Thread(target=watch, name="actorflow-engine-watch", daemon=True).start()


def worker_main(
    conn: Connection,
    sys_path: list[str],
    preload: tuple[str, ...],
    shm_threshold: int = 0,
    tracing: bool = False,
    engine_pid: int = 0,
    interceptors: bytes = b"",
) -> None:
    """Entry point of a worker process.

    Args:
        conn: this worker's end of its pipe.
        sys_path: the engine's ``sys.path``, so that step functions import as they do there.
        preload: modules to import before announcing readiness.
        shm_threshold: output buffers above this many bytes go through shared memory (0: no).
        tracing: run each step inside its span's trace context (OpenTelemetry).
        engine_pid: the engine's process id: the worker exits when it is gone (0: the pipe's
            hang-up and the parent-death signal alone).
        interceptors: the engine's interceptors, pickled (``workers/_interceptors.py``).
    """
    _tracing.ENABLED = tracing
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(engine_pid)
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for module in preload:
        importlib.import_module(module)
    _interceptors.install(interceptors, tracing)  # (after sys.path: their classes import)
    _watch_engine(conn)
    worker = _Worker(conn, shm_threshold)
    worker.send((W.HELLO, os.getpid()))
    try:
        worker.serve()
    except (EOFError, OSError):
        return  # the engine went away
