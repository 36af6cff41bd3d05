"""The process pool's wire: tasks sent to workers and their results read back, in batches.

A busy worker gets up to ``prefetch`` tasks queued behind the one it runs, in one frame; a
wake-up reads every frame a worker has written in one system call; a result becomes an
attempt report (``_core.attempt_report``), a step's request is answered on the spot (or,
for ``ctx.state``, once durable, back through the actor's inbox); large values travel as
shared-memory segments (``_wire``, ``_adopt``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pykka

from actorflow import _faults
from actorflow.definition._options import qualified_name
from actorflow.runtime.dispatch._core import answer_request, blob_ref, mro_names
from actorflow.runtime.dispatch._pool_workers import (
    _BROKEN,
    _KILLING,
    _PREFETCH_WORK,
    _READY,
    _RETIRING,
    _STARTING,
    _TAG_BLOB,
    _TAG_SHARED,
    PoolWorkers,
    _dumps,
    _error_reply,
    _large,
    _Reply,
    _small,
    _task_step,
    _Worker,
)
from actorflow.runtime.dispatch._transport import Task
from actorflow.runtime.kernel._messages import ErrorInfo
from actorflow.workers import _protocol as W

__all__ = ["PoolWire"]


class PoolWire(PoolWorkers):
    """Frames to and from the workers (see the module docstring)."""

    def _send(self, w: _Worker, batch: list[Task]) -> None:
        if _faults.ACTIVE:
            _faults.crash_point("dispatcher.before_send")
        level = self.core.log_level()
        frames = []
        probe = self._probe
        sent: list[Task] = []
        blobs = self._blobs
        for task in batch:
            if probe is not None and task is probe[0]:
                self._latencies.append(time.monotonic() - probe[1])
                self._probe = probe = None
            spec = task.spec
            task_id = task.id
            payload: bytes | None
            payload, last, item, error, chunk = (
                spec.payload,
                spec.last,
                spec.item,
                spec.error,
                spec.chunk,
            )
            if blobs is not None:
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
                    blobs.end_task(task_id)
                    qual = qualified_name(type(exc))
                    self.core.fail(task, ErrorInfo("error", qual, mro_names(type(exc)), str(exc)))
                    continue
            sent.append(task)
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
        if not sent:
            return
        try:
            data = _dumps((W.TASKS, frames), 5)
            self.stats.bytes_sent += len(data)
            self._post(w, data)
        except (OSError, ValueError):
            # The worker is dying; its sentinel will report it. None of these tasks started,
            # but the one it was running (if any) did: its death is that task's crash.
            if blobs is not None:
                for task in sent:
                    blobs.end_task(task.id)
            self._queue.extendleft(reversed(sent))
            w.fns.clear()
            w.state = _BROKEN if w.inflight else _KILLING
            return
        was_idle = not w.inflight
        pid = w.pid
        for task in sent:
            task.handle = w
            task.pid = pid
        w.inflight.extend(sent)
        if was_idle:
            self._arm_head(w)
        self.stats.dispatched += len(sent)

    def _fill(self, w: _Worker, share: int) -> None:
        """Send ``w`` up to ``share`` tasks: one to run, and maybe some to queue behind it.

        Tasks wait inside a worker only behind a task known to be short (its function's
        recent durations), so nothing is stuck behind a long task while another worker idles.
        How many may wait adapts to those durations (about :data:`_PREFETCH_WORK` of work, at
        most ``prefetch``): tiny tasks travel in large batches, 10 ms tasks one or two at a
        time. A busy worker is topped up only once its queue is half empty, so each frame
        carries several tasks.
        """
        head = w.inflight[0].spec if w.inflight else self._queue[0].spec
        allowed = 0
        if self._prefetch and self._short(head):
            ema = (self.core.costs.get(head.fn.key) or 0.0) * (len(head.chunk) if head.chunk else 1)
            allowed = max(1, min(self._prefetch, int(_PREFETCH_WORK / max(ema, 1e-6))))
        if w.inflight and not allowed:
            return
        queued = len(w.inflight) - 1  # -1: idle
        if queued >= 0 and queued >= max(1, allowed // 2):
            return
        room = min(1 + allowed - len(w.inflight), share)
        queue = self._queue
        batch: list[Task] = []
        last = w.inflight[-1].spec if w.inflight else None
        while room > 0 and queue:
            if last is not None and not (_small(queue[0].spec) and self._short(last)):
                break  # only small tasks wait, and only behind tasks known to be short
            task = queue.popleft()
            batch.append(task)
            last = task.spec
            room -= 1
        if batch:
            self._send(w, batch)

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
            task = self.core.tasks.get(msg[1])
            if task is not None:
                self._release(task)
                self._pop_entry(w, task)
                if task.cancelled:
                    self.core.drop(task)
                else:  # taken back by a drain or a stop: never started
                    self.core.not_started(task)
        elif op == W.REQUEST:
            self._answer(w, msg)
        elif op == W.BEAT:
            self._beat(w, msg)
        elif op == W.LOG:
            task = self.core.tasks.get(msg[1])
            if task is not None:
                at = msg[5] if len(msg) > 5 else None  # when it was logged, in the worker
                self.core.step_log(task, msg[2], msg[3], _task_step(task.spec, msg[4]), at)
        elif op == W.HELLO:
            w.pid = msg[1]
            if w.state == _STARTING:
                w.state = _READY
                self._idle.append(w)
                self._spawn_failures = 0
                if not self._ready.done() and self._ready_count() >= self._target:
                    self._ready.set_result(None)

    def _pop_entry(self, w: _Worker, task: Task) -> None:
        """A task of ``w`` ended: the next one in its queue (if any) is now running."""
        inflight = w.inflight
        if inflight and inflight[0] is task:
            inflight.popleft()
        else:
            try:
                inflight.remove(task)
            except ValueError:
                pass
        if inflight:
            self._arm_head(w)
        elif w.state == _READY:
            self._idle.append(w)
        elif w.state == _RETIRING:
            self._stop_retired(w)

    def _beat(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        task = self.core.tasks.get(msg[1])
        if task is not None:
            self.core.beat(task, msg[2])

    def _done(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        _, task_id, ok, data, started, ended = msg
        task = self.core.tasks.get(task_id)
        if task is None:
            return  # it already timed out
        spec = task.spec
        chunk = spec.chunk
        if self._blobs is not None:
            ok, data = self._adopt(task_id, ok, data, chunk is not None)
            self._blobs.end_task(task_id)
        w.done += 1
        if w.state == _READY and (self._max_tasks or self._max_memory) and self._worn_out(w):
            self._retire(w)
        self._pop_entry(w, task)
        self.core.finished(task, ok, data, started, ended)

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
        task = self.core.tasks.get(task_id)
        try:
            if task is None:
                raise LookupError("the task is no longer running")
            spec = task.spec
            if op == "state" and self._host is not None:
                # Answered once durable, from the writer's thread: back through the core's
                # inbox, so that only the dispatcher's thread ever writes to a worker's pipe.
                ref, wid, conn = self.core.actor_ref, w.wid, w.conn

                def done(ok: bool, value: Any) -> None:
                    answer = value if ok else _error_reply(value)
                    try:
                        ref.tell(_Reply(wid, conn, (W.REPLY, req_id, ok, answer)))
                    except pykka.ActorDeadError:
                        pass  # stopping: the step's worker is going away too

                self.core.state_call(arg, done)
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
