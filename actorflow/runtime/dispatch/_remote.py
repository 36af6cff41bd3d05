"""What the transports whose steps run elsewhere share: inline threads, Dask, Ray.

Such a transport hands a task to something that queues and runs it on its own (a thread
pool, a cluster's scheduler); the step, once it is about to call the user's function, asks
the engine to start (``answer("start")``), which the dispatcher core refuses from a drain
on (the task then ends as not started, without running). So a drain waits only for the
steps that did start, and the tasks that never started are not attempts (``_unstarted``).

What a running step asks comes back over a *link* (``workers/_task.Link``) to
:meth:`RemoteTransport.answer`, on the caller's thread; outcomes come back as the core's
thread-safe ``Finished`` / ``Started`` messages. A subclass says how a task is sent
(:meth:`RemoteTransport.send`) and how a running one is stopped (``halt``).

:class:`ClusterTransport` is the part Dask and Ray share: the cluster connected at open (and
let go at close if the engine made the connection), a callback link listening on the
address that routes to it, every task sent with the link's address and key, and its
outcome reported from the cluster's future on whatever thread completes it.
"""

from __future__ import annotations

import abc
import functools
import logging
import os
from typing import TYPE_CHECKING, Any, Protocol

from actorflow.runtime.dispatch._core import blob_ref
from actorflow.runtime.dispatch._transport import Task, Transport, TransportHost
from actorflow.store._codec import TAG_BLOB, decode_value, encode_value
from actorflow.workers._protocol import CALL_CHUNK
from actorflow.workers._task import Intercept, TaskHost, execute

if TYPE_CHECKING:
    from actorflow.runtime.dispatch._link import CallbackListener

__all__ = ["ClusterTransport", "RemoteTransport", "run_here", "task_tuple"]

log = logging.getLogger("actorflow.dispatcher")


class RemoteTransport(Transport):
    """A transport whose tasks queue and run elsewhere (see the module docstring)."""

    def submit(self, tasks: list[Task]) -> None:
        stats = self.core.stats
        for task in tasks:
            task.handle = self.send(task, task_tuple(task))
            stats.dispatched += 1

    @abc.abstractmethod
    def send(self, task: Task, body: tuple[Any, ...]) -> Any:
        """Start running ``body`` (see :func:`task_tuple`); return a handle for ``halt``."""

    def answer(self, msg: tuple[Any, ...]) -> Any:
        """A running step's request ``(op, key, run_id, workflow_id, step, arg)``.

        Values go whole (``B`` values re-encoded inline): the step's process cannot map
        the engine's shared memory.
        """
        value = self.core.answer(*msg)
        return _inline(value) if msg[0] in ("output", "ref") else value

    def call(self, msg: tuple[Any, ...]) -> Any:
        """The link interface (``workers/_task.Link``) for a step on a thread of this process."""
        return self.answer(msg)


class _Future(Protocol):
    """The part of ``concurrent.futures.Future`` a cluster's futures have."""

    def add_done_callback(self, fn: Any, /) -> None: ...

    def result(self, timeout: float | None = None) -> Any: ...


class _ClusterExecutor(Protocol):
    callback_host: str | None


class ClusterTransport(RemoteTransport):
    """A transport to a cluster (Dask, Ray): its link, its connection, its futures.

    A subclass says how to connect (:meth:`connect`, returning the address workers are
    reached through), how to let go (:meth:`disconnect`) and how to launch one task
    (:meth:`launch`).
    """

    def __init__(self, core: TransportHost, executor: _ClusterExecutor) -> None:
        super().__init__(core)
        self._executor = executor
        self._owns = False
        self._link: CallbackListener | None = None

    @abc.abstractmethod
    def connect(self) -> tuple[str | None, bool]:
        """Connect; the cluster's address (None for a local one), and whether we own it."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Let go of a connection :meth:`connect` made (called only if the engine owns it)."""

    @abc.abstractmethod
    def launch(self, task: Task, args: tuple[Any, ...]) -> tuple[Any, _Future]:
        """Submit ``args`` (the task tuple, log level, link address and key) for ``task``.

        Returns the handle ``halt`` uses and a future that completes with its outcome.
        """

    def open(self) -> None:
        # Imported here: sockets and keys are for an engine that uses a cluster, not for
        # every ``import actorflow``.
        from actorflow.runtime.dispatch._link import CallbackListener, route_host

        address, self._owns = self.connect()
        host = self._executor.callback_host or route_host(address)
        self._link = CallbackListener(host, self.answer, self.where.lower())

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        if self._owns:
            try:
                self.disconnect()
            except Exception:
                log.debug("letting go of %s failed", self.where, exc_info=True)

    def send(self, task: Task, body: tuple[Any, ...]) -> Any:
        link = self._link
        assert link is not None, "send before open"
        args = (*body, self.core.log_level(), link.address, link.authkey)
        handle, future = self.launch(task, args)
        future.add_done_callback(functools.partial(_collect, self.core, task.id))
        return handle


def _collect(core: TransportHost, key: int, future: _Future) -> None:
    """A cluster task ended (on a thread of the cluster's client): tell the core its outcome."""
    try:
        outcome: Any = future.result()
    except BaseException as exc:  # the task's failure (KilledWorker, WorkerCrashedError...)
        outcome = exc
    core.tell_finished(key, outcome)


def run_here(
    transport: RemoteTransport,
    task: Task,
    body: tuple[Any, ...],
    where: str,
    *,
    intercept: Intercept | None = None,
    services: dict[tuple[str, str], Any] | None = None,
) -> tuple[bool, Any, float, float] | None:
    """Run ``task``'s step on this thread of the engine's process (a thread-pool transport).

    The step asks to start first, as a step on a cluster does; its requests go straight to
    ``transport.answer``. Give what returns to ``core.tell_finished(task.id, ...)``.

    Args:
        transport: the transport the task came from.
        task: the task, as ``send`` got it.
        body: the task tuple ``send`` got (see :func:`task_tuple`).
        where: where it runs, for the record (``task.worker`` once started).
        intercept: replaces the step's function before the call (the test harness's mocks).
        services: the set-up services steps on this transport share.

    Returns:
        ``(ok, encoded output or error, started, ended)``, or None when the engine refused
        the start (it drains or stops: the step did not run).
    """
    spec = task.spec
    host = TaskHost(transport, task.id, spec.run_id, spec.workflow_id, services)
    host.step = spec.step
    # This thread's ``ctx.log`` records go to the engine through its link, as a cluster
    # step's do (the engine's own ``actorflow.step`` logger cannot tell them apart).
    host.thread_log_level = transport.core.log_level()
    if not host.request("start", (os.getpid(), where)):
        return None
    core = transport.core.host  # the engine core (None in bare tests)
    return execute(body, host, intercept=intercept, chain=getattr(core, "interceptors", ()))


def task_tuple(task: Task) -> tuple[Any, ...]:
    """What :func:`~actorflow.workers._task.execute` takes, for ``task``.

    Large (``B``) values go inline or, for the payload and ``ctx.last``, as references
    fetched only if read.
    """
    spec = task.spec
    fn = spec.fn
    return (
        task.id,
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
