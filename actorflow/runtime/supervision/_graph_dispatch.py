"""Sending a graph run's steps: one by one, or held and sent in chunks when tiny.

Item steps of a fan-out whose cost is known to be small (``Core.costs``) are held and sent
a window at a time, in chunks sized to a time budget (``_chunking``). A step's first items
in each run go first and the rest wait for one of them to report: alone while its cost is
unknown, in chunks of at most ``FIRST_CHUNK`` when another run (or earlier calls) left an
estimate. A chunk's report is unpacked per item; a chunk that fails makes its items go
again one by one.
"""

from __future__ import annotations

import struct
from collections import deque

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._spec import (
    FunctionRef,
    StepSpec,
    SubflowSpec,
    WaitSpec,
)
from actorflow.graph._codes import (
    C_RUN,
    E_FAILED,
)
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    ErrorInfo,
    TaskSpec,
)
from actorflow.runtime.supervision import _step_cache
from actorflow.runtime.supervision._chunking import Window
from actorflow.runtime.supervision._graph_state import (
    _LEAF_KIND,
    GraphState,
    Key,
    _Chunk,
    _exception_bytes,
    log,
)
from actorflow.runtime.supervision._plans import is_missing
from actorflow.runtime.supervision._run import move_status
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_summary,
    attempt_timeout,
    circuit_open,
    error_record,
)
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import dump_record, load_record, load_step
from actorflow.workers._protocol import CALL_CTX, CALL_ITEM

__all__ = ["GraphDispatch"]

_NONE = object()  # no mock for this step (a mock may be None)


class GraphDispatch(GraphState):
    """Sending the run's steps (see the module docstring)."""

    def _run(self, frame: int, node: int) -> None:
        key = (frame, node)
        leaf = self.leaves.get(key)
        if leaf is None:
            leaf = self._leaf(frame, node)
        self.pending[key] = C_RUN
        if is_missing(self.plan.specs[node]):  # (only a run's own old plan has these)
            self.hold_missing(leaf)
            return
        if leaf.attempt == 0 and self.mocks is not None:
            mocked = self.mocks.get(leaf.path, self.mocks.get(self.plan.names[node], _NONE))
            if mocked is not _NONE:
                _step_cache.answer(self, leaf, encode_value(mocked, "mock"), "mocked")
                return  # engine.retry(..., mock_steps=) gave its output
        if leaf.attempt == 0 and _step_cache.lookup(self, frame, node, leaf):
            return  # answered from its cache (or its cache key failed it)
        if leaf.attempt == 0 and self.compiled.chunkable[node]:
            group = (self.frames[frame].parent, node)
            held = self.held.get(group)
            if held is None:
                self.held[group] = deque((leaf,))
            else:
                held.append(leaf)
            return
        self._dispatch(leaf)

    def _send_held(self) -> None:
        """Send what the windows let go of the held item steps: alone, or in chunks.

        A step's first items in each run go first, one task per worker (alone while its
        cost, seconds per item kept by the dispatcher core, is unknown; else in chunks of at
        most ``FIRST_CHUNK``), and the rest wait until one of them reports. From then on the
        step's :class:`Window` (``_chunking``) says how many tasks may be out and how large
        each is, so a held fan-out goes out a window at a time, each task sized by the
        estimate as the reports before it left it. A chunk has one dispatch record (in
        ``values``, listing its items), not one per item; each item is still recorded on its
        own when it finishes. A chunk that fails as a whole (its worker died or it overran
        ``timeout`` x items) is split: its unreported items run again one by one, so the
        item at fault fails alone.
        """
        if self.finished:
            self.held.clear()
            return
        costs = self.core.costs
        workers = max(1, self.core.config.worker_count)
        budget = self.core.config.chunk_budget
        for group, held in list(self.held.items()):
            node = group[1]
            window = self.windows.get(node)
            if window is None:
                window = self.windows[node] = Window()
            spec = self.plan.specs[node]
            assert isinstance(spec, StepSpec)
            fn = spec.fn.key
            if node not in self.calibrated:
                sent = self.probes.get(group)
                if sent is None:
                    # This step's first items in this run: a few go first (alone while its
                    # cost is unknown, else in chunks of at most FIRST_CHUNK), and the rest
                    # wait for one of them to report. What another run taught is not
                    # trusted for more than that (kernel/_costs.py says why).
                    room, size = window.next(
                        costs.get(fn), len(held) + self.in_chunks, workers, budget
                    )
                    first = self._take(group, held, min(room, workers) * size)
                    if first:
                        self._send_items(group, spec, first, size, window)
                        self.probes[group] = first
                    continue
                if all(p.status is StepStatus.RUNNING and p.attempt == 1 for p in sent):
                    continue  # none reported yet
                self.calibrated.add(node)
                del self.probes[group]
            # (No cost yet: a transport that reports no times.)
            room, size = window.next(costs.get(fn), len(held) + self.in_chunks, workers, budget)
            if room:  # (else the window is full: a write costs nothing more here)
                self._send_items(group, spec, self._take(group, held, room * size), size, window)

    def _take(self, group: Key, held: deque[Leaf], most: int) -> list[Leaf]:
        """Up to ``most`` of the held leaves still to run (others were cancelled meanwhile)."""
        pending = self.pending
        taken: list[Leaf] = []
        while held and len(taken) < most:
            leaf = held.popleft()
            if (
                leaf.status is StepStatus.PENDING
                and leaf.attempt == 0
                and pending.get((leaf.frame, leaf.node)) == C_RUN
            ):
                taken.append(leaf)
        if not held:
            del self.held[group]
        return taken

    def _send_items(
        self, group: Key, spec: StepSpec, leaves: list[Leaf], size: int, window: Window
    ) -> None:
        """Send ``leaves`` one by one (``size`` < 2) or in chunks of ``size``."""
        if size < 2:
            window.sent(len(leaves))
            for leaf in leaves:
                leaf.window = True  # (first: an open circuit fails the attempt at once)
                self._dispatch(leaf)
            return
        window.sent(-(-len(leaves) // size))
        for i in range(0, len(leaves), size):
            self._dispatch_chunk(group, spec, leaves[i : i + size])

    def _window_back(self, leaf: Leaf) -> None:
        """A leaf sent alone from the held items is back: its place in the window is free."""
        leaf.window = False
        window = self.windows.get(leaf.node)
        if window is not None:
            window.back()

    def _dispatch_chunk(self, group: Key, spec: StepSpec, leaves: list[Leaf]) -> None:
        loop_frame, node = group
        first = self.frames[leaves[0].frame]
        loop_path = self.path(loop_frame, first.owner)
        cid = f"{loop_path}#chunk/{node}/{first.index}"
        now = self.core.clock.now()
        members = []
        indices = []
        for leaf in leaves:
            leaf.attempt = 1
            leaf.status = StepStatus.RUNNING
            leaf.dispatched_at = now
            leaf.chunk = cid
            item, index = self._ctx_item(leaf.frame)
            members.append((leaf.path, self._task_last(leaf), item, index))
            indices.append(self.frames[leaf.frame].index)
        chunk = self.chunks[cid] = _Chunk(cid, K.step_key(self.run_id, cid), node, leaves)
        self.in_chunks += len(leaves)
        record = {"kind": "chunk", "step": spec.name, "node": node, "attempt": 1}
        record["dispatched_at"] = now
        record["items"] = indices
        self.fx.ops.append((K.VALUES, chunk.key, dump_record(record)))
        self.fx.tasks.append(
            TaskSpec(
                self.run_id,
                cid,
                1,
                self.workflow_id,
                spec.fn,
                self._task_payload(),
                None,
                None if spec.timeout is None else spec.timeout * len(leaves),
                None,
                None,
                CALL_ITEM if spec.call == "item" else CALL_CTX,
                None,
                tuple(members),
            )
        )

    def _left_chunk(self, leaf: Leaf, reported: bool) -> bool:
        """``leaf`` no longer waits on its chunk; True if nothing of the chunk does.

        ``reported``: its report came (else it was aborted); only a chunk whose every item
        reported lets its step's chunks grow.
        """
        chunk = self.chunks.get(leaf.chunk or "")
        leaf.chunk = None
        if chunk is None:
            return True
        chunk.live -= 1
        chunk.reported += reported
        self.in_chunks -= 1
        if chunk.live > 0:
            return False
        del self.chunks[chunk.id]
        self.fx.ops.append((K.VALUES, chunk.key, None))
        window = self.windows.get(chunk.node)
        if window is not None:
            n = len(chunk.leaves)
            window.back(n if chunk.reported == n else 0)  # only a whole chunk grows the cap
        return True

    def _chunk_failed(self, chunk: _Chunk, msg: AttemptFailed) -> None:
        """A chunk failed as a whole: run its unreported items again, one by one."""
        del self.chunks[chunk.id]
        self.fx.ops.append((K.VALUES, chunk.key, None))
        self.in_chunks -= chunk.live
        window = self.windows.get(chunk.node)
        if window is not None:
            window.back()  # (its items go alone, outside the window: they are retries)
        note = (
            f"ran in a chunk of {len(chunk.leaves)} items that failed as a whole "
            f"({attempt_summary(msg.error)}); it runs again on its own"
        )
        for leaf in chunk.leaves:
            if leaf.chunk != chunk.id:
                continue
            leaf.chunk = None
            key = (leaf.frame, leaf.node)
            if self.pending.get(key) != C_RUN or leaf.status is not StepStatus.RUNNING:
                continue
            leaf.attempts.append(
                attempt_record(
                    leaf.attempt, "interrupted", "chunk", msg.started_at, msg.ended_at, note
                )
            )
            self._dispatch(leaf)

    def chunked_before(self, frame: int, node: int) -> tuple[int, float | None] | None:
        """After a reload: the attempt and dispatch time of the chunk an item was sent in."""
        f = self.frames[frame]
        group = (f.parent, node)
        found = self._chunked.get(group)
        if found is None:
            found = self._chunked[group] = {}
            prefix = K.step_key(self.run_id, f"{self.path(f.parent, f.owner)}#chunk/{node}/")
            run_prefix = K.step_prefix(self.run_id)
            for key, raw in self.core.store.scan(K.VALUES, prefix):
                rec = load_record(raw, "chunk")
                # Its items are recorded on their own from now on.
                self.fx.ops.append((K.VALUES, key, None))
                cid = key[len(run_prefix) :].decode()
                if self.unstarted.get(cid) == rec["attempt"]:
                    continue  # it never started (the last stop says): its items were not sent
                for index in rec["items"]:
                    found[index] = (rec["attempt"], rec.get("dispatched_at"))
        return found.get(f.index)

    def load_leaf(self, frame: int, node: int) -> Leaf:
        """The leaf at (frame, node), from its record when it has one (after a reload)."""
        path = self.path(frame, node)
        raw = self.core.store.get(K.STEPS, K.step_key(self.run_id, path))
        if raw is None:
            return self._leaf(frame, node)
        leaf = Leaf.from_record(self.run_id, load_step(raw, path, f"step {path}"), frame, node)
        self.leaves[(frame, node)] = leaf
        self.by_path[path] = (frame, node)
        return leaf

    def _leaf(self, frame: int, node: int) -> Leaf:
        path = self.path(frame, node)
        kind = _LEAF_KIND[self.plan.kind[node]]
        if kind == "wait":
            spec = self.plan.specs[node]
            assert isinstance(spec, WaitSpec)
            kind = "wait_for_event" if spec.kind == "event" else "approval"
        leaf = Leaf(self.run_id, frame, node, path, kind)
        self.leaves[(frame, node)] = leaf
        self.by_path[path] = (frame, node)
        return leaf

    def hold_missing(self, leaf: Leaf) -> None:
        """The run reached a step of its plan that the code defined now lacks: hold it there.

        Nothing is recorded: the step stays pending, and at the next start with code that
        defines it the run takes it up as if it had just reached it.
        """
        self.pending[(leaf.frame, leaf.node)] = C_RUN
        reason = (
            f"step {leaf.path!r} of this run's plan is not defined in workflow "
            f"{self.workflow_id!r} now; deploy code that defines it to resume the run"
        )
        if self.core.held.get(self.run_id) != reason:
            log.warning("run %s is held: %s", self.run_id, reason)
        self.core.held[self.run_id] = reason
        if self.status != RunStatus.WAITING_FOR_DEFINITION or self.held_reason != reason:
            move_status(self, RunStatus.WAITING_FOR_DEFINITION)
            self.held_reason = reason
            self._put_run()

    def _dispatch(
        self, leaf: Leaf, handler: FunctionRef | None = None, error: bytes | None = None
    ) -> None:
        """Record a new attempt of ``leaf`` (or of its error handler) and queue its task."""
        if handler is None and is_missing(self.plan.specs[leaf.node]):
            self.hold_missing(leaf)
            return
        now = self.core.clock.now()
        leaf.attempt += 1
        leaf.status = StepStatus.RUNNING
        leaf.dispatched_at = now
        if leaf.scheduled_at is None:
            leaf.scheduled_at = now
        leaf.next_retry_at = None
        leaf.handling = handler is not None
        last = self._task_last(leaf)  # (and its rendering, leaf.input, goes in this record)
        self.fx.ops.append(leaf.put())
        spec = self.plan.specs[leaf.node]
        item, index = self._ctx_item(leaf.frame)
        if handler is None:
            assert isinstance(spec, StepSpec)
            fn, call = spec.fn, CALL_ITEM if spec.call == "item" else CALL_CTX
        else:
            fn, call = handler, 0
        breaker = spec.breaker if isinstance(spec, StepSpec) and handler is None else None
        if breaker is not None and not breaker.allow():
            # Open circuit: this attempt fails now, without running, and is retried by policy.
            self.on_failed(circuit_open(self.run_id, leaf.path, leaf.attempt, breaker, now))
            return
        self.fx.tasks.append(
            TaskSpec(
                self.run_id,
                leaf.path,
                leaf.attempt,
                self.workflow_id,
                fn,
                self._task_payload(),
                last,
                attempt_timeout(spec.timeout, spec.retry, leaf, now)
                if isinstance(spec, StepSpec)
                else None,
                item,
                index,
                call,
                error,
                None,
                spec.heartbeat_timeout if isinstance(spec, StepSpec) and handler is None else None,
                leaf.details,
                spec.queue if isinstance(spec, StepSpec) and handler is None else None,
                self.priority,
            )
        )

    def take_history(self) -> None:
        """Send held item steps; fold progress records and this write's history into the effects."""
        if self.held:
            self._send_held()
        for frame, node in list(self.dirty):
            self._put_composite(frame, node, StepStatus.RUNNING)
        self.dirty.clear()
        if self.hist:
            events = self.hist
            self.hist = []
            self.fx.ops.append(
                (
                    K.HISTORY,
                    K.history_key(self.run_id, self.seq),
                    struct.pack(f"<{len(events)}i", *events),
                )
            )
            self.seq += 1

    def _leaf_failed_for_good(self, leaf: Leaf, err: ErrorInfo) -> None:
        """No retry left: run the error handler if there is one, else fail the node."""
        spec = self.plan.specs[leaf.node]
        handler = getattr(spec, "on_error", None) or self.compiled.spec.on_error
        if handler is not None and not leaf.handling and isinstance(spec, StepSpec | SubflowSpec):
            if leaf.error is None:
                leaf.error = error_record(err, leaf.path, leaf.attempt)
            if isinstance(spec, SubflowSpec):
                self.pending[(leaf.frame, leaf.node)] = C_RUN  # the handler is a task now
            self._dispatch(leaf, handler, _exception_bytes(err))
            return
        leaf.handling = False
        leaf.status = StepStatus.FAILED
        leaf.error = error_record(err, leaf.path, leaf.attempt)
        self.last_error = leaf.error
        self.error = self.error or leaf.error
        self.fx.ops.append(leaf.put())
        self._apply(E_FAILED, leaf.frame, leaf.node)
