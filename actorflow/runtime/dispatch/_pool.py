"""The process pool: the transport of ``executor="process"`` (the default).

The dispatcher core (``_dispatcher.py``) keeps the tasks, their deadlines, cancels, drains
and reports; this transport owns the worker processes. Its pipes and process sentinels are
waitables of the core's inbox (:class:`SelectorInbox`), so worker results, crashes and
the core's deadlines all arrive as messages on the one dispatcher thread.

Per worker, the life is: starting (process launched) -> ready (said hello) -> killing (timed
out or cancelled: SIGTERM, then SIGKILL after ``kill_grace``) -> gone (sentinel fired). A worker
whose sentinel fires while it was not being killed crashed: the one task it was running (the
head of its in-flight queue) fails with kind ``crash``; tasks queued behind it go back to the
queue unstarted. Every death is replaced, unless more than ``restart_limit`` happened within
``restart_window`` seconds: then the restart breaker opens for ``breaker_cooldown`` seconds
and, if no worker is left, queued tasks fail with kind ``pool``.

A task starts (its deadlines count) when it reaches the head of a worker's queue. A drain
sends nothing more and takes back the tasks queued inside workers; at the stop, the tasks
that never started (queued here, or dropped by a stopping worker) are recorded as such by
the core, so recovery does not count them as interrupted attempts (``_unstarted.py``).

Costs are per message, not per task, so work moves in batches: a busy worker gets up to
``prefetch`` tasks queued behind the one it runs (sent in one frame, so it never waits for the
engine between tasks), a wake-up reads every result a worker has written in one system call,
and results go to each shard as one message per wake-up.
"""

from __future__ import annotations

import select
import signal
import time
from collections import deque
from typing import Any

from actorflow.errors import PoolUnavailable
from actorflow.runtime.dispatch._core import CRASH_TYPES
from actorflow.runtime.dispatch._pool_wire import PoolWire
from actorflow.runtime.dispatch._pool_workers import (
    _KILLING,
    _MEMORY_EVERY,
    _READY,
    _RETIRING,
    _STARTING,
    _describe_exit,
    _dumps,
    _Reply,
    _Spawned,
    _Worker,
    log,
)
from actorflow.runtime.dispatch._transport import Task
from actorflow.runtime.kernel._inbox import IoReady, Writable
from actorflow.runtime.kernel._messages import ErrorInfo, Unmapped
from actorflow.workers import _protocol as W

__all__ = ["PoolTransport"]


class PoolTransport(PoolWire):
    """Runs tasks on the worker pool (see the module docstring)."""

    def open(self) -> None:
        for _ in range(self._target):
            self._spawn()

    def stop(self) -> None:
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
        self._queue.clear()  # never sent: the core records them as not started

    def forget(self, task: Task) -> None:
        pass  # its worker is gone (stopped or killed) already

    def on_message(self, message: Any) -> bool:
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
        elif t is _Spawned:
            self._spawned(message)
        elif t is _Reply:
            w = self._workers.get(message.wid)
            if w is not None and w.conn is message.conn:
                self._reply(w, message.msg)
        elif t is Unmapped:
            self._unmapped()
        else:
            return False
        return True

    def submit(self, tasks: list[Task]) -> None:
        if tasks and self._probe is None:
            # Sample one task per message for the dispatch latency statistics.
            self._probe = (tasks[0], time.monotonic())
        self._queue.extend(tasks)
        self._pump()

    def _pump(self) -> None:
        if self.core.draining:
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

    def tick(self, now: float) -> None:
        for w in list(self._workers.values()):
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

    def halt(self, task: Task) -> None:
        """``task`` passed its deadline (it runs at the head of its worker): kill the worker."""
        w = task.handle
        if isinstance(w, _Worker) and w.inflight and w.inflight[0] is task:
            w.inflight.popleft()
            self._release(task)
            log.warning(
                "step %r of run %s: past its deadline; killing worker %d",
                task.spec.step,
                task.spec.run_id,
                w.pid,
            )
            self._kill(w)
        else:  # not in a worker (never started): it no longer goes to one
            try:
                self._queue.remove(task)
            except ValueError:
                pass

    def _blew_up(self, w: _Worker, rss: int) -> None:
        """``w``'s step passed twice max_memory_per_worker: kill it, fail the step (a crash)."""
        task = w.inflight.popleft()
        spec = task.spec
        self._release(task)
        self.stats.crashes += 1
        message = (
            f"worker process killed: its memory ({rss >> 20} MiB) passed twice "
            f"max_memory_per_worker ({self._max_memory >> 20} MiB) while the step ran"
        )
        log.error("step %r of run %s: %s (worker %d)", spec.step, spec.run_id, message, w.pid)
        error = ErrorInfo(
            "crash",
            CRASH_TYPES[0],
            CRASH_TYPES,
            message,
            exitcode=-signal.SIGKILL,
            details=task.details,
        )
        self.core.fail(task, error)
        self._kill(w)
        try:
            w.proc.kill()  # a process eating memory gets no grace period
        except (OSError, ValueError):
            pass

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
                task = w.inflight.popleft()
                spec = task.spec
                self._release(task)
                log.error(
                    "worker %d died (%s) running step %r of run %s",
                    w.pid,
                    how,
                    spec.step,
                    spec.run_id,
                )
                self.core.fail(
                    task,
                    ErrorInfo(
                        "crash",
                        CRASH_TYPES[0],
                        CRASH_TYPES,
                        f"worker process died ({how})",
                        exitcode=code,
                        details=task.details,
                    ),
                )
            else:
                log.error("idle worker %d died (%s)", w.pid, how)
        self._requeue(w)
        self._forget(w)
        if not self._stopping:
            self._replace(counted=w.state != _RETIRING)

    def cancel(self, tasks: list[Task]) -> None:
        """Stop cancelled runs' tasks (each marked ``cancelled`` already).

        Queued ones are dropped, those queued inside a worker are asked back, and a running
        one's worker is killed.
        """
        doomed = {task.id for task in tasks}
        if self._queue:
            kept = []
            for task in self._queue:
                if task.id in doomed:
                    self.core.drop(task)
                else:
                    kept.append(task)
            self._queue = deque(kept)
        for w in list(self._workers.values()):
            for i, task in enumerate(w.inflight):
                if i == 0 or task.id not in doomed:
                    continue
                # Queued in the worker, not started: ask it to drop the task (it answers
                # SKIPPED, and the task is dropped then).
                try:
                    self._post(w, _dumps((W.CANCEL, task.id), 5))
                except (OSError, ValueError):
                    pass
            if w.inflight and w.inflight[0].cancelled and w.state == _READY:
                head = w.inflight.popleft()
                self._release(head)
                self.core.drop(head)
                log.info("killing worker %d: the run of its step was cancelled", w.pid)
                self._kill(w)

    def withdraw(self) -> None:
        """Draining starts nothing new: take back the tasks queued inside workers.

        A worker reads its pipe between tasks, so it drops each (``SKIPPED``) before it would
        start it; one it started already reports its result as usual.
        """
        for w in self._workers.values():
            for task in list(w.inflight)[1:]:
                if not task.cancelled:
                    try:
                        self._post(w, _dumps((W.CANCEL, task.id), 5))
                    except (OSError, ValueError):
                        break  # dying: its tasks are settled at its death or the stop

    def _settle(self, w: _Worker) -> None:
        """At stop, once ``w`` exited or was killed: take its last words.

        A stopped worker finishes its task (``DONE``) and drops those queued behind it
        (``SKIPPED``); either way it answers each task before it starts the next, in order. So
        of the tasks it left unanswered (it was killed), only the first (the started head)
        may have run: the core counts that one as interrupted, the rest as never started.
        """
        if w.conn in self._by_conn:
            try:
                while select.select([w.fd], [], [], 0)[0]:
                    for msg in w.reader.read():
                        if msg[0] in (W.DONE, W.SKIPPED):
                            self._handle(w, msg)
            except (EOFError, OSError):
                pass  # its pipe is closed: everything it wrote was read
