"""The dispatcher for ``executor=af.DaskExecutor(...)``: steps run on a Dask cluster.

It takes the same messages as the local :class:`~actorflow.runtime._dispatcher.Dispatcher`
(``Dispatch``, ``CancelTasks``, ``Drain``) and reports the same ``StepSucceeded`` /
``StepFailed``, so supervisors, the store and recovery do not know where steps run. What
differs, and why:

- **Start and timeout.** A task may wait in Dask's queue; its timeout counts from the moment
  it starts on a worker (the task says so over the callback link), like a local step's.
  At the timeout the step fails with ``StepTimeout`` and the worker process running it is
  restarted (``Client.restart_workers``), which is the only way to stop Python code in a
  Dask worker; anything else running in that worker fails with it and is retried by policy.
- **Crashes.** When a worker dies, Dask itself runs its tasks again elsewhere, up to the
  scheduler's ``allowed-failures``; only then does the future fail (``KilledWorker``), which
  is reported as a crash (``WorkerCrashed``). So a step may run twice without an attempt
  being recorded for the first run (steps are at-least-once anyway; use
  ``ctx.idempotency_key``).
- **Large values** travel as Dask moves data, not through the engine's shared memory: a
  ``B`` value (or a large payload) goes as a reference that the step fetches over the
  callback link only if it reads it.
"""

from __future__ import annotations

import base64
import functools
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, Listener
from typing import Any
from urllib.parse import urlparse

import pykka

from actorflow.config import EngineConfig
from actorflow.runtime._dispatcher import (
    _CRASH_TYPES,
    DispatcherStats,
    _resolve_output,
    timeout_error,
)
from actorflow.runtime._inbox import Actor, SelectorInbox, Tick
from actorflow.runtime._messages import (
    CancelTasks,
    Dispatch,
    Drain,
    ErrorInfo,
    StepFailed,
    StepResults,
    StepSucceeded,
    TaskSpec,
    Unmapped,
)
from actorflow.runtime._promise import Promise
from actorflow.store import _keys as K
from actorflow.store._codec import TAG_BLOB, decode_value, encode_value
from actorflow.store._protocol import Store
from actorflow.store._records import step_output
from actorflow.workers._dask import DaskExecutor, run_task

__all__ = ["DaskDispatcher"]

log = logging.getLogger("actorflow.dispatcher")
step_log = logging.getLogger("actorflow.step")


class _Task:
    __slots__ = (
        "beat",
        "cancelled",
        "details",
        "future",
        "key",
        "pid",
        "spec",
        "started",
        "worker",
    )

    def __init__(self, key: str, spec: TaskSpec, future: Any) -> None:
        self.key = key
        self.spec = spec
        self.future = future
        self.started: float | None = None  # monotonic, once it runs on a worker
        self.beat = 0.0
        self.worker = ""  # the Dask worker's address
        self.pid = 0  # its process id
        self.details = spec.details
        self.cancelled = False


@dataclass(frozen=True, slots=True)
class _Finished:
    key: str
    outcome: Any  # what run_task returned, or the exception the future raised


@dataclass(frozen=True, slots=True)
class _Started:
    key: str
    worker: str
    pid: int


@dataclass(frozen=True, slots=True)
class _Beat:
    key: str
    details: bytes | None


class DaskDispatcher(Actor):
    """Runs tasks on a Dask cluster and reports their outcome (see the module docstring).

    Args:
        config: the engine configuration.
        route: run id -> its shard's actor ref.
        store: read to answer steps' ``ctx.steps[...]`` requests.
        ready: completed once connected to the cluster.
        host: the engine core (``ctx.state``, services).
        executor: where to run.
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
        host: Any,
        executor: DaskExecutor,
    ) -> None:
        super().__init__()
        self._config = config
        self._route = route
        self._store = store
        self._ready = ready
        self._host = host
        self._executor = executor
        self._client: Any = None
        self._owns_client = False
        self._tasks: dict[str, _Task] = {}
        self._next = 0
        self._drain: Promise[None] | None = None
        self._reports: dict[pykka.ActorRef[Any], list[StepSucceeded | StepFailed]] = {}
        self._authkey = secrets.token_bytes(32)
        self._listener: Listener | None = None
        self._address: Any = None
        self.stats = DispatcherStats()
        inbox: SelectorInbox = self.actor_inbox  # type: ignore[assignment]
        inbox.timeout_fn = self._timeout

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self._client, self._owns_client = self._executor.connect()
            host = self._executor.callback_host or _callback_host(self._client)
            self._listener = Listener((host, 0), authkey=self._authkey)
            self._address = self._listener.address
            threading.Thread(target=self._accept, name="actorflow-dask-link", daemon=True).start()
        except BaseException as exc:
            self._ready.set_exception(exc)
            raise
        self._ready.set_result(None)

    def on_stop(self) -> None:
        for task in self._tasks.values():
            task.future.cancel()
        self._tasks.clear()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        if self._client is not None and self._owns_client:
            try:
                self._client.close()
            except Exception:
                log.debug("closing the Dask client failed", exc_info=True)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- messages --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        t = type(message)
        if t is Dispatch:
            for spec in message.tasks:
                self._submit(spec)
        elif t is _Finished:
            self._finished(message.key, message.outcome)
        elif t is _Started:
            task = self._tasks.get(message.key)
            if task is not None:
                task.started = task.beat = time.monotonic()
                task.worker = message.worker
                task.pid = message.pid
        elif t is _Beat:
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
            self._check_drained()
        elif t is Unmapped:
            pass  # no shared memory here
        else:
            return super().on_receive(message)
        if self._reports:
            reports, self._reports = self._reports, {}
            for shard, batch in reports.items():
                try:
                    shard.tell(batch[0] if len(batch) == 1 else StepResults(tuple(batch)))
                except pykka.ActorDeadError:
                    pass
        return None

    def statistics(self) -> DispatcherStats:
        """Current counters (ask this actor through a proxy)."""
        s = self.stats
        s.queued = sum(1 for t in self._tasks.values() if t.started is None)
        s.busy = sum(1 for t in self._tasks.values() if t.started is not None)
        try:
            s.workers = len(self._client.scheduler_info().get("workers", {}))
        except Exception:
            s.workers = 0
        return DispatcherStats(**s.__dict__)

    # -- sending ---------------------------------------------------------------------------

    def _submit(self, spec: TaskSpec) -> None:
        if self._drain is not None:
            return  # stopping: left to recovery, as locally
        self._next += 1
        key = f"actorflow-{spec.run_id}-{self._next}"
        fn = spec.fn
        task = (
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
            step_log.getEffectiveLevel(),
            _inline(spec.item) if spec.chunk is None else _inline_chunk(spec.chunk),
            spec.position,
            spec.call if spec.chunk is None else 2 | spec.call,
            _inline(spec.error),
            spec.details,
            self._address,
            self._authkey,
        )
        future = self._client.submit(run_task, task, key=key, pure=False, retries=0)
        self._tasks[key] = _Task(key, spec, future)
        future.add_done_callback(functools.partial(_collect, self.actor_ref, key))
        self.stats.dispatched += 1

    # -- results ---------------------------------------------------------------------------

    def _finished(self, key: str, outcome: Any) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return  # timed out or cancelled already
        spec = task.spec
        if isinstance(outcome, BaseException):
            exc = outcome
            self.stats.crashes += 1
            info = ErrorInfo(
                "crash",
                _CRASH_TYPES[0],
                _CRASH_TYPES,
                f"the Dask task failed: {type(exc).__name__}: {exc}",
                details=task.details,
            )
            self._report(
                StepFailed(spec.run_id, spec.step, spec.attempt, info, None, time.time(), None)
            )
            self._check_drained()
            return
        ok, data, started, ended = outcome
        if not task.cancelled:
            if spec.chunk is not None and ok:
                for (step, _, _, _), (item_ok, item_data, t0, t1) in zip(
                    spec.chunk, data, strict=True
                ):
                    self._outcome(spec, step, item_ok, item_data, t0, t1, task)
            else:
                self._outcome(spec, spec.step, ok, data, started, ended, task)
        self._check_drained()

    def _outcome(
        self,
        spec: TaskSpec,
        step: str,
        ok: bool,
        data: Any,
        started: float,
        ended: float,
        task: _Task,
    ) -> None:
        if ok:
            self.stats.succeeded += 1
            self._report(
                StepSucceeded(spec.run_id, step, spec.attempt, data, started, ended, task.pid)
            )
            return
        self.stats.failed += 1
        qual, mro, message, tb, blob = data
        info = ErrorInfo("error", qual, tuple(mro), message, tb, blob, details=task.details)
        self._report(StepFailed(spec.run_id, step, spec.attempt, info, started, ended, task.pid))

    def _report(self, message: StepSucceeded | StepFailed) -> None:
        shard = self._route(message.run_id)
        self._reports.setdefault(shard, []).append(message)

    # -- deadlines, cancels ------------------------------------------------------------------

    def _deadline(self, task: _Task) -> float | None:
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
        for task in self._tasks.values():
            d = self._deadline(task)
            if d is not None and (nearest is None or d < nearest):
                nearest = d
        return None if nearest is None else max(0.0, nearest - time.monotonic())

    def _tick(self) -> None:
        now = time.monotonic()
        for task in list(self._tasks.values()):
            d = self._deadline(task)
            if d is None or d > now:
                continue
            del self._tasks[task.key]
            spec = task.spec
            self.stats.timeouts += 1
            started = task.started if task.started is not None else now
            info = timeout_error(spec, started, task.beat, task.details, "Dask worker restarted")
            log.warning("step %r of run %s on Dask: %s", spec.step, spec.run_id, info.message)
            self._halt(task)
            self._report(
                StepFailed(spec.run_id, spec.step, spec.attempt, info, None, time.time(), None)
            )
        self._check_drained()

    def _halt(self, task: _Task) -> None:
        """Make sure ``task`` does nothing more: cancel it, and restart its worker if it runs."""
        task.cancelled = True
        task.future.cancel()
        if task.worker and self._executor.restart_on_timeout:
            worker = task.worker

            def restart() -> None:
                try:
                    self._client.restart_workers([worker], timeout=60, raise_for_error=False)
                except Exception as exc:
                    log.warning("could not restart Dask worker %s: %s", worker, exc)

            # Off this actor's thread: a restart takes a while.
            threading.Thread(target=restart, name="actorflow-dask-restart", daemon=True).start()

    def _cancel(self, run_ids: frozenset[str], tasks: frozenset[tuple[str, str]]) -> None:
        for task in list(self._tasks.values()):
            spec = task.spec
            if spec.run_id in run_ids or (spec.run_id, spec.step) in tasks:
                del self._tasks[task.key]
                self._halt(task)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._drain is not None and not self._tasks and not self._drain.done():
            self._drain.set_result(None)

    # -- the callback link (on its own threads) ---------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError):
                return  # closed at stop
            except Exception:  # a peer that failed the handshake
                log.warning("refused a Dask worker connection (bad key)")
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="actorflow-dask-req", daemon=True
            ).start()

    def _serve(self, conn: Connection) -> None:
        ref = self.actor_ref
        while True:
            try:
                op, key, run_id, workflow_id, step, arg = conn.recv()
            except (EOFError, OSError):
                return
            try:
                value = self._answer(ref, op, key, run_id, workflow_id, step, arg)
                reply: tuple[bool, Any] = (True, value)
            except Exception as exc:
                from actorflow.errors import ClientError

                kind = "client" if isinstance(exc, ClientError) else "engine"
                reply = (False, (kind, str(exc)))
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return

    def _answer(
        self, ref: Any, op: str, key: str, run_id: str, workflow_id: str, step: str, arg: Any
    ) -> Any:
        if op == "start":
            _tell(ref, _Started(key, str(arg[1]), int(arg[0])))
            return None
        if op == "beat":
            _tell(ref, _Beat(key, arg))
            return None
        if op == "log":
            level, message = arg
            step_log.log(
                level,
                message,
                extra={"run_id": run_id, "step": step, "workflow_id": workflow_id},
            )
            return None
        if op == "output":
            return _inline(_resolve_output(self._store, run_id, step, str(arg)))
        if op == "ref":
            target = str(arg)
            if target == "payload":
                return _inline(self._store.get(K.VALUES, K.payload_key(run_id)))
            if target.startswith("step:"):
                return _inline(step_output(self._store, run_id, target[5:]))
            if target.startswith("blob:"):
                return _inline(base64.b64decode(target[5:]))
            raise ValueError(f"unknown reference {target!r}")
        if op == "service":
            return self._host.service_blob(workflow_id, str(arg))
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
        raise ValueError(f"unknown request {op!r}")


def _collect(ref: Any, key: str, future: Any) -> None:
    """A future finished (on a thread of the Dask client): fetch its result, tell the actor."""
    try:
        outcome: Any = future.result()
    except BaseException as exc:  # the task's failure (KilledWorker, CancelledError...)
        outcome = exc
    _tell(ref, _Finished(key, outcome))


def _tell(ref: Any, message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


def _inline(value: bytes | None) -> bytes | None:
    """A value a Dask worker can decode: large (``B``) values re-encoded whole."""
    if value and value[0] == TAG_BLOB:
        return encode_value(decode_value(value, "value"), "value", None)
    return value


def _by_ref(value: bytes | None) -> bytes | None:
    """Payload and ``ctx.last``: a large value goes as a reference, fetched if read."""
    if value and value[0] == TAG_BLOB:
        return b"Rblob:" + base64.b64encode(value)
    return value


def _inline_chunk(chunk: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [(step, _inline(last), _inline(item), index) for step, last, item, index in chunk]


def _callback_host(client: Any) -> str:
    """The local address that routes to the scheduler (loopback for a local cluster)."""
    try:
        address = client.scheduler.address
    except Exception:
        return "127.0.0.1"
    host = urlparse(address).hostname or "127.0.0.1"
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "0.0.0.0"
