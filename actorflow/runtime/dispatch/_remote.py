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
"""

from __future__ import annotations

import abc
from typing import Any

from actorflow.runtime.dispatch._core import blob_ref
from actorflow.runtime.dispatch._transport import Task, Transport
from actorflow.store._codec import TAG_BLOB, decode_value, encode_value
from actorflow.workers._protocol import CALL_CHUNK

__all__ = ["RemoteTransport", "task_tuple"]


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
