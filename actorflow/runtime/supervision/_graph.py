"""The supervisor: one run's state machine.

A supervisor handles its run's events one at a time (on its shard's thread). It feeds them to
the graph evaluator, carries out the commands that come back (dispatch a step, evaluate a
predicate, arm a timer, start a child run...), and turns everything into :class:`Effects`:
store ops to commit, and actions to take only once they are durable. It never blocks and never
writes the store itself; the shard sends the effects to the store writer as one write.

Every event the evaluator applies is also appended to the run's history (one record per
write), so a run can be rebuilt exactly by replaying it (``_replay.py``): after a restart,
when a sleeping run is woken, or when a child run finishes.

The durability rules (docs/design.md) live here:

1. A step's dispatch record is in the same write as whatever made it ready (the previous
   step's result), and the task is sent only after that write is durable.
2. A completed step is never dispatched again: reports for an attempt that is not the step's
   current running attempt are ignored.
3. Recovery re-dispatches steps recorded as running, as new attempts, through the same path as
   new work.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from typing import Any

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._options import NO_RETRY
from actorflow.definition._spec import (
    BranchSpec,
    CancelSpec,
    ForEachSpec,
    FunctionRef,
    ParallelSpec,
    SleepSpec,
    StepSpec,
    SubflowSpec,
    WaitSpec,
    WhileSpec,
)
from actorflow.errors import MaxIterationsExceeded
from actorflow.graph._codes import (
    C_ABORT,
    C_CANCEL_RUN,
    C_CHILD,
    C_DECIDE,
    C_DONE,
    C_EXPAND,
    C_FRAME,
    C_FRAME_END,
    C_LOOP,
    C_NODE_FAILED,
    C_RUN,
    C_SKIP,
    C_SLEEP,
    E_CANCEL,
    E_CHOSEN,
    E_FAILED,
    E_ITEMS,
    E_LOOP,
    E_SUCCEEDED,
    K_ACTION,
    K_BATCH,
    K_BRANCH,
    K_FOR_EACH,
    K_PARALLEL,
    K_RACE,
    K_SLEEP,
    K_STEP,
    K_SUBFLOW,
    K_WAIT,
    K_WHILE,
    KIND_NAMES,
    R_CANCELLED,
    R_COMPLETED,
    R_FAILED,
    S_FAILED,
    S_SUCCEEDED,
)
from actorflow.runtime._core import Compiled, Core
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptSucceeded,
    ChildFinished,
    ErrorInfo,
    EventDelivered,
    ResumeApproval,
    TaskSpec,
)
from actorflow.runtime.supervision import _replay, _waits
from actorflow.runtime.supervision._depth import refuse_child
from actorflow.runtime.supervision._nodes import (
    call_user,
    encode_dict,
    encode_list,
    engine_context,
    error_info,
    items_of,
)
from actorflow.runtime.supervision._plans import is_missing
from actorflow.runtime.supervision._run import RunMachine, move_status, open_run
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_summary,
    attempt_timeout,
    child_failure,
    circuit_open,
    error_record,
)
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import dump_record, inline_output, load_record, output_of
from actorflow.workers._context import RunInfo

__all__ = ["Supervisor", "chunk_size"]

log = logging.getLogger("actorflow.engine")

Key = tuple[int, int]  # (frame, node)
_SAME: Any = object()  # "as usual" for _ctx's optional arguments
#: Chunking of tiny item steps: a chunk aims at this much work in its worker...
_CHUNK_SECONDS = 0.02
#: ...holds at most this many items...
_CHUNK_MAX = 512
#: ...and only steps this quick are chunked: above it, per-task overhead is already small.
#: (1 ms items sent one by one run at ~0.75 of Pool.map's efficiency on 2 cores; in chunks
#: of ~20 ms, at ~0.93: bench B11.)
_CHUNK_COST_MAX = 0.004
#: A payload or ``ctx.last`` larger than this travels to a worker as a reference, fetched
#: only by a step that reads it (a step that reads only small values pays for no large one).
LAZY_MAX = 64 * 1024
_PAYLOAD_REF = b"Rpayload"
_AWAITED = frozenset({C_RUN, C_DECIDE, C_EXPAND, C_LOOP, C_SLEEP, C_CHILD})
_ITEM_LOOPS = frozenset({K_FOR_EACH, K_BATCH})
_COUNT_SLOT = {S_SUCCEEDED: 1, S_FAILED: 2}  # where a finished item is counted
_LEAF_KIND = {
    K_STEP: "step",
    K_ACTION: "action",
    K_SUBFLOW: "subflow",
    K_SLEEP: "sleep",
    K_WAIT: "wait",  # recorded as wait_for_event or approval
}


class _Frame:
    __slots__ = ("id", "index", "input", "owner", "parent", "prefix")

    def __init__(self, fid: int, parent: int, owner: int, index: int, prefix: str) -> None:
        self.id = fid
        self.parent = parent
        self.owner = owner
        self.index = index
        self.prefix = prefix
        self.input: Any = _SAME  # the encoded input, once computed


class _Chunk:
    """Fresh attempts of one step for many items of a fan-out, sent as one task."""

    __slots__ = ("id", "key", "leaves", "live")

    def __init__(self, cid: str, key: bytes, leaves: list[Leaf]) -> None:
        self.id = cid
        self.key = key  # of its dispatch record in ``values``
        self.leaves = leaves
        self.live = len(leaves)  # members not yet reported, split off or aborted


def chunk_size(cost: float, ready: int, workers: int) -> int:
    """How many items of a step that takes ``cost`` seconds go in one task (1: no chunking).

    Enough items that the per-task overhead (a record, a message, a pipe frame: tens of
    microseconds) is small next to the work, few enough that every worker gets at least two
    chunks of the ``ready`` items (those to send and those out in chunks) and a lost chunk
    costs little to run again.
    """
    if cost > _CHUNK_COST_MAX:
        return 1
    return max(
        1, min(_CHUNK_MAX, int(_CHUNK_SECONDS / max(cost, 1e-6)), -(-ready // (2 * workers)))
    )


class Supervisor(RunMachine):
    """Owns one run: its record, its live frames and leaves, and the evaluator state.

    Build with :meth:`new` (a trigger) or ``_replay.load`` (from the store), then feed events.
    After each call the owner takes :attr:`fx` and commits it.
    """

    compiled: Compiled

    def __init__(self, core: Core, compiled: Compiled, run_id: str) -> None:
        super().__init__(core, compiled, run_id, b"Jnull")
        self.plan = compiled.plan
        self.ev = core.evaluator
        self.pp = compiled.prepared
        self.state = self.ev.new_state(self.pp)
        self.frames: dict[int, _Frame] = {0: _Frame(0, -1, -1, 0, "")}
        self.leaves: dict[Key, Leaf] = {}
        self.by_path: dict[str, Key] = {}
        self.outputs: dict[Key, bytes] = {}
        self.pending: dict[Key, int] = {}
        self.items: dict[Key, list[Any]] = {}
        self.collected: dict[Key, dict[int, bytes | None]] = {}
        self.progress: dict[Key, list[int]] = {}  # [total, succeeded, failed, cancelled]
        self.dirty: set[Key] = set()
        self.loop_last: dict[Key, bytes | None] = {}
        self.loop_iter: dict[Key, int] = {}  # replayed: the iteration a pending C_LOOP is for
        # Fresh item steps waiting to be sent, by (loop frame, step node): sent in chunks
        # when the step is known to be tiny (see ``_send_held``).
        self.held: dict[Key, list[Leaf]] = {}
        self.probes: dict[Key, list[Leaf]] = {}  # items sent alone to learn a step's cost
        self.chunks: dict[str, _Chunk] = {}
        self._chunked: dict[Key, dict[int, tuple[int, float | None]]] = {}  # after a reload
        self.hist: list[int] = []
        self.seq = 0
        self.replaying = False
        self._queue: deque[tuple[int, int, int, int]] = deque()
        self._applying = False
        self.last_error: dict[str, Any] | None = None
        self.shape = self.plan.shape
        #: Why the run waits for its definition (status ``waiting_for_definition``).
        self.held_reason: str | None = None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        core: Core,
        compiled: Compiled,
        run_id: str,
        payload: bytes,
        idempotency_key: str | None,
        parent: tuple[str, str] | None = None,
        depth: int = 0,
    ) -> Supervisor:
        """A new run: record it (queued or running) and start its first nodes."""
        sup = cls(core, compiled, run_id)
        open_run(sup, payload, idempotency_key, parent, depth)
        return sup

    @classmethod
    def load(cls, core: Core, compiled: Compiled, rec: dict[str, Any]) -> Supervisor:
        """Rebuild a run from its records by replaying its history (see ``_replay.py``)."""
        sup = cls(core, compiled, rec["id"])
        _replay.replay(sup, rec)
        return sup

    def resume(self) -> None:
        """Start a queued run, or take up again what a loaded run had in flight."""
        _replay.resume(self)

    def _begin(self, now: float) -> None:
        self.started_at = now
        timeout = self.compiled.spec.timeout
        if timeout is not None:
            self.deadline = now + timeout
            self._timer(self.deadline, "deadline")
        self._put_run()
        self._commands(self.ev.start(self.pp, self.state))
        self._check_outcome()

    # -- the event loop --------------------------------------------------------------------

    def _apply(self, event: int, frame: int, node: int, arg: int = 0) -> None:
        """Apply an event (and, in order, any it leads to) and carry out the commands."""
        self._queue.append((event, frame, node, arg))
        if self._applying:
            return
        self._applying = True
        try:
            while self._queue:
                e = self._queue.popleft()
                if not self.replaying:
                    self.hist.extend(e)
                if e[0] != E_CANCEL:  # its (frame, node) is (0, 0) and names no node
                    self.pending.pop((e[1], e[2]), None)
                self._commands(self.ev.advance(self.pp, self.state, *e))
        finally:
            self._applying = False
        if not self.replaying:
            self._check_outcome()

    def _commands(self, cmds: Any) -> None:
        for i in range(0, len(cmds), 4):
            op, frame, node, arg = cmds[i], cmds[i + 1], cmds[i + 2], cmds[i + 3]
            # The three commands of every finished item come first.
            if op == C_RUN:
                if self.replaying:
                    self.pending[(frame, node)] = op
                else:
                    self._run(frame, node)
            elif op == C_FRAME_END:
                self._frame_ended(frame, node, arg)
            elif op == C_FRAME:
                self._frame_started(frame, node, arg)
            elif op == C_ABORT:
                self._abort(frame, node)
            elif self.replaying:
                if op in _AWAITED:
                    self.pending[(frame, node)] = op
                    if op == C_LOOP:
                        self.loop_iter[(frame, node)] = arg
            elif op == C_DECIDE:
                self._decide(frame, node)
            elif op == C_EXPAND:
                self._expand(frame, node)
            elif op == C_LOOP:
                self._loop(frame, node, arg)
            elif op == C_SLEEP:
                if self.plan.kind[node] == K_WAIT:
                    _waits.start_wait(self, frame, node)
                else:
                    self._sleep(frame, node)
            elif op == C_CHILD:
                self._child(frame, node)
            elif op == C_CANCEL_RUN:
                spec = self.plan.specs[node]
                assert isinstance(spec, CancelSpec)
                self.cancel(spec.reason)
            elif op == C_DONE:
                self._done(frame, node, arg)
            elif op == C_NODE_FAILED:
                self._composite_failed(frame, node)
            elif op == C_SKIP:
                self._skipped(frame, node)

    def _check_outcome(self) -> None:
        if self.finished:
            return
        outcome = self.ev.outcome(self.state)
        if outcome == R_COMPLETED:
            self._finish(RunStatus.COMPLETED)
        elif outcome == R_FAILED:
            self.error = self.error or self.last_error
            self._finish(RunStatus.FAILED)
        elif outcome == R_CANCELLED and self.status != RunStatus.CANCELLED:
            self._finish(RunStatus.CANCELLED)

    # -- paths, inputs and outputs ---------------------------------------------------------

    def path(self, frame: int, node: int) -> str:
        return self.frames[frame].prefix + self.plan.names[node]

    def output(self, frame: int, node: int) -> bytes | None:
        """The encoded output of a finished node of a live frame."""
        key = (frame, node)
        value = self.outputs.get(key)
        if value is None and key not in self.outputs:
            raw = self.core.store.get(K.STEPS, K.step_key(self.run_id, self.path(frame, node)))
            if raw is not None:
                value = output_of(load_record(raw, "step"), self.core.store, self.run_id)
            self.outputs[key] = value  # type: ignore[assignment]
        return value

    def source(self, frame: int, src: int) -> bytes | None:
        """``src``'s output in ``frame``, or the frame's input when ``src`` is -1."""
        return self.output(frame, src) if src >= 0 else self.frame_input(frame)

    def frame_input(self, frame: int) -> bytes | None:
        """What a frame starts from: the item (chunk), the previous iteration's output."""
        if frame == 0:
            return None
        f = self.frames[frame]
        if f.input is not _SAME:
            return f.input  # type: ignore[no-any-return]
        kind = self.plan.kind[f.owner]
        if kind == K_WHILE:
            if f.index == 0:
                value = self.source(f.parent, self.plan.last_source[f.owner])
            else:
                value = self._loop_last(f.parent, f.owner)
        else:
            value = encode_value(self._item(f.parent, f.owner, f.index), "item")
        f.input = value
        return value

    def _item(self, frame: int, owner: int, index: int) -> Any:
        items = self._items(frame, owner)
        spec = self.plan.specs[owner]
        assert isinstance(spec, ForEachSpec)
        if spec.size is not None:
            return items[index * spec.size : (index + 1) * spec.size]
        return items[index]

    def _items(self, frame: int, owner: int) -> list[Any]:
        key = (frame, owner)
        items = self.items.get(key)
        if items is None:
            raw = self.core.store.get(K.VALUES, self._items_key(frame, owner))
            from actorflow.store._codec import decode_value

            items = self.items[key] = list(decode_value(raw, "items")) if raw else []
        return items

    def _items_key(self, frame: int, owner: int) -> bytes:
        return K.step_key(self.run_id, self.path(frame, owner) + "#items")

    def _loop_last(self, frame: int, owner: int) -> bytes | None:
        key = (frame, owner)
        if key in self.loop_last:
            return self.loop_last[key]
        value = self.core.store.get(K.VALUES, self._last_key(frame, owner))
        self.loop_last[key] = value
        return value

    def _last_key(self, frame: int, owner: int) -> bytes:
        return K.step_key(self.run_id, self.path(frame, owner) + "#last")

    def _ctx_item(self, frame: int) -> tuple[bytes | None, int | None]:
        """The item and index a step in ``frame`` sees (the innermost loop's)."""
        fid = frame
        while fid != 0:
            f = self.frames[fid]
            kind = self.plan.kind[f.owner]
            if kind in _ITEM_LOOPS:
                return self.frame_input(fid), f.index
            if kind == K_WHILE:
                return None, f.index
            fid = f.parent
        return None, None

    def _fetch(self, frame: int) -> Any:
        """``ctx.steps[name]`` for engine-side code running in ``frame``."""

        def fetch(name: str) -> bytes | None:
            node = self.plan.index.get(name)
            if node is None:
                return None
            fid = frame  # this frame first, then the enclosing ones
            while True:
                if self.plan.scope[node] == self._scope(fid):
                    return self.output(fid, node)
                if fid == 0:
                    return None
                fid = self.frames[fid].parent

        return fetch

    def _scope(self, frame: int) -> int:
        return 0 if frame == 0 else self.plan.body[self.frames[frame].owner]

    def _task_payload(self) -> bytes:
        """The payload as a task carries it: itself, or a reference when it is large."""
        return self.payload if len(self.payload) <= LAZY_MAX else _PAYLOAD_REF

    def _task_last(self, frame: int, node: int) -> bytes | None:
        """``ctx.last`` as a task carries it: itself, or a reference when it is large.

        The reference names the step output it is; the step fetches it only if it reads it.
        """
        src = self.plan.last_source[node]
        value = self.source(frame, src)
        if src >= 0 and value is not None and len(value) > LAZY_MAX:
            return b"Rstep:" + self.path(frame, src).encode()
        return value

    def _ctx(self, frame: int, node: int, last: Any = _SAME, index: Any = _SAME) -> Any:
        item, item_index = self._ctx_item(frame)
        return engine_context(
            RunInfo(self.run_id, self.workflow_id, self.path(frame, node), 1),
            self.payload,
            self.source(frame, self.plan.last_source[node]) if last is _SAME else last,
            self._fetch(frame),
            item,
            item_index if index is _SAME else index,
            self.core.host,
        )

    # -- commands ----------------------------------------------------------------------------

    def _frame_started(self, frame: int, owner: int, index: int) -> None:
        parent = self.ev.frame_info(self.state, frame)[1]
        prefix = f"{self.frames[parent].prefix}{self.plan.names[owner]}[{index}]/"
        self.frames[frame] = _Frame(frame, parent, owner, index, prefix)

    def _frame_ended(self, frame: int, owner: int, outcome: int) -> None:
        f = self.frames[frame]
        key = (f.parent, owner)
        if outcome == S_SUCCEEDED and not self.replaying:
            result = self.plan.scope_result[self.plan.body[owner]]
            value = self.output(frame, result) if result >= 0 else self.frame_input(frame)
            if self.plan.kind[owner] == K_WHILE:
                self.loop_last[key] = value
                self.fx.ops.append((K.VALUES, self._last_key(f.parent, owner), value or b"Jnull"))
            else:
                self.collected.setdefault(key, {})[f.index] = value
        if not self.replaying and self.plan.kind[owner] != K_WHILE:
            counts = self._progress(key)
            counts[_COUNT_SLOT.get(outcome, 3)] += 1
            self.dirty.add(key)
        # Forget the frame: its records are in the store, its id will be reused. Only its own
        # scope's nodes can have entries, so this costs the scope's size, not the run's.
        scope = self.plan.body[owner]
        first = self.plan.scope_first[scope]
        for node in range(first, first + self.plan.scope_size[scope]):
            k = (frame, node)
            leaf = self.leaves.pop(k, None)
            if leaf is not None:
                self.by_path.pop(leaf.path, None)
            self.outputs.pop(k, None)
            self.pending.pop(k, None)
        for node in self.compiled.loops_in[scope]:  # only loops keep state of their own
            k = (frame, node)
            self.items.pop(k, None)
            self.collected.pop(k, None)
            self.progress.pop(k, None)
            self.loop_last.pop(k, None)
            self.dirty.discard(k)
        del self.frames[frame]

    def _run(self, frame: int, node: int) -> None:
        key = (frame, node)
        leaf = self.leaves.get(key)
        if leaf is None:
            leaf = self._leaf(frame, node)
        self.pending[key] = C_RUN
        if is_missing(self.plan.specs[node]):  # (only a run's own old plan has these)
            self.hold_missing(leaf)
            return
        if leaf.attempt == 0 and self.compiled.chunkable[node]:
            group = (self.frames[frame].parent, node)
            held = self.held.get(group)
            if held is None:
                self.held[group] = [leaf]
            else:
                held.append(leaf)
            return
        self._dispatch(leaf)

    def _send_held(self) -> None:
        """Send the fresh item steps of this event: alone, or in chunks when they are tiny.

        A step's cost (seconds per call, kept by the dispatcher) is unknown until it ran
        once: then one item per worker goes first, alone, and the rest wait for the first
        result. A chunk has one dispatch record (in ``values``, listing its items), not one
        per item; each item is still recorded on its own when it finishes. A chunk that
        fails as a whole (its worker died or it overran ``timeout`` x items) is split: its
        unreported items run again one by one, so the item at fault fails alone.
        """
        held, self.held = self.held, {}
        if self.finished:
            return
        costs = self.core.costs
        workers = max(1, self.core.config.worker_count)
        pending = self.pending
        for group, leaves in held.items():
            fresh = [
                leaf
                for leaf in leaves
                if leaf.status is StepStatus.PENDING
                and leaf.attempt == 0
                and pending.get((leaf.frame, leaf.node)) == C_RUN
            ]
            if not fresh:
                continue
            spec = self.plan.specs[group[1]]
            assert isinstance(spec, StepSpec)
            cost = costs.get(spec.fn.key)
            if cost is None:
                probes = [
                    p
                    for p in self.probes.get(group, ())
                    if p.status is StepStatus.RUNNING and p.attempt == 1
                ]
                if not probes:
                    probes = fresh[:workers]
                    fresh = fresh[workers:]
                    for leaf in probes:
                        self._dispatch(leaf)
                self.probes[group] = probes
                if fresh:
                    self.held[group] = fresh
                continue
            self.probes.pop(group, None)
            # Items already out in chunks count too: as one chunk comes back, the next one
            # is sized for the whole fan-out in flight, not just for the items it freed.
            in_flight = sum(c.live for c in self.chunks.values())
            size = chunk_size(cost, len(fresh) + in_flight, workers)
            if size < 2:
                for leaf in fresh:
                    self._dispatch(leaf)
                continue
            for i in range(0, len(fresh), size):
                self._dispatch_chunk(group, spec, fresh[i : i + size])

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
            members.append((leaf.path, self._task_last(leaf.frame, leaf.node), item, index))
            indices.append(self.frames[leaf.frame].index)
        chunk = self.chunks[cid] = _Chunk(cid, K.step_key(self.run_id, cid), leaves)
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
                1 if spec.call == "item" else 0,
                None,
                tuple(members),
            )
        )

    def _left_chunk(self, leaf: Leaf) -> bool:
        """``leaf`` no longer waits on its chunk; True if nothing of the chunk does."""
        chunk = self.chunks.get(leaf.chunk or "")
        leaf.chunk = None
        if chunk is None:
            return True
        chunk.live -= 1
        if chunk.live > 0:
            return False
        del self.chunks[chunk.id]
        self.fx.ops.append((K.VALUES, chunk.key, None))
        return True

    def _chunk_failed(self, chunk: _Chunk, msg: AttemptFailed) -> None:
        """A chunk failed as a whole: run its unreported items again, one by one."""
        del self.chunks[chunk.id]
        self.fx.ops.append((K.VALUES, chunk.key, None))
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
        leaf = Leaf.from_record(self.run_id, load_record(raw, f"step {path}"), frame, node)
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
        self.fx.ops.append(leaf.put())
        spec = self.plan.specs[leaf.node]
        item, index = self._ctx_item(leaf.frame)
        if handler is None:
            assert isinstance(spec, StepSpec)
            fn, call = spec.fn, 1 if spec.call == "item" else 0
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
                self._task_last(leaf.frame, leaf.node),
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
            )
        )

    def _decide(self, frame: int, node: int) -> None:
        spec = self.plan.specs[node]
        assert isinstance(spec, BranchSpec)
        ctx = self._ctx(frame, node)
        chosen = -1
        for i, arm in enumerate(spec.arms):
            if arm.pred is None:
                chosen = i
                break
            value, err = call_user(arm.pred, ctx)
            if err is not None:
                self._node_error(frame, node, err)
                self._apply(E_FAILED, frame, node)
                return
            if value:
                chosen = i
                break
        branch = spec.arms[chosen].name if chosen >= 0 else None
        self._put_composite(frame, node, StepStatus.RUNNING, branch=branch)
        self._apply(E_CHOSEN, frame, node, chosen)

    def _expand(self, frame: int, node: int) -> None:
        spec = self.plan.specs[node]
        assert isinstance(spec, ForEachSpec)
        key = (frame, node)
        # The items are stored in the same write as the E_ITEMS event: after a restart that
        # lost them, the selector runs again.
        value, err = call_user(spec.items, self._ctx(frame, node))
        if err is None:
            try:
                items = items_of(value)
                data = encode_value(items, f"items of {spec.name!r}")
            except Exception as exc:
                err = error_info(exc)
        if err is not None:
            self._node_error(frame, node, err)
            self._apply(E_FAILED, frame, node)
            return
        self.items[key] = items
        self.fx.ops.append((K.VALUES, self._items_key(frame, node), data))
        n = len(items) if spec.size is None else -(-len(items) // spec.size)
        self.progress[key] = [n, 0, 0, 0]
        self.collected[key] = {}
        self._put_composite(frame, node, StepStatus.RUNNING)
        self._apply(E_ITEMS, frame, node, n)

    def _loop(self, frame: int, node: int, iteration: int) -> None:
        spec = self.plan.specs[node]
        assert isinstance(spec, WhileSpec)
        # The predicate sees the previous iteration's output as ctx.last (the loop's input
        # before the first one) and the iteration about to start as ctx.iteration.
        last = self._loop_last(frame, node) if iteration else _SAME
        value, err = call_user(spec.pred, self._ctx(frame, node, last=last, index=iteration))
        if err is None and value and iteration >= spec.max_iterations:
            err = error_info(
                MaxIterationsExceeded(
                    f"while_ {spec.name!r} would run more than max_iterations="
                    f"{spec.max_iterations} times"
                )
            )
        if err is not None:
            self._node_error(frame, node, err)
            self._apply(E_FAILED, frame, node)
            return
        self.progress.setdefault((frame, node), [0, 0, 0, 0])[0] = iteration + (1 if value else 0)
        self._put_composite(frame, node, StepStatus.RUNNING)
        self._apply(E_LOOP, frame, node, 1 if value else 0)

    def _sleep(self, frame: int, node: int) -> None:
        spec = self.plan.specs[node]
        assert isinstance(spec, SleepSpec)
        leaf = self.leaves.get((frame, node)) or self._leaf(frame, node)
        self.pending[(frame, node)] = C_SLEEP
        now = self.core.clock.now()
        leaf.status = StepStatus.RUNNING
        leaf.dispatched_at = now
        leaf.wake_at = now + spec.seconds
        self.fx.ops.append(leaf.put())
        self._timer(leaf.wake_at, "sleep:" + leaf.path)

    def _child(self, frame: int, node: int) -> None:
        spec = self.plan.specs[node]
        assert isinstance(spec, SubflowSpec)
        leaf = self.leaves.get((frame, node)) or self._leaf(frame, node)
        self.pending[(frame, node)] = C_CHILD
        payload, err = self.child_input(frame, node)
        if err is not None:
            self._leaf_failed_for_good(leaf, err)
            return
        refused = refuse_child(self, leaf.path, spec.workflow_id)
        if refused is not None:  # deterministic: no retry, the handler (if any) sees it
            self._leaf_failed_for_good(leaf, refused)
            return
        now = self.core.clock.now()
        leaf.status = StepStatus.RUNNING
        leaf.dispatched_at = now
        leaf.attempt += 1
        key = f"{self.run_id}/{leaf.path}"  # the child's idempotency key: one child, ever
        leaf.child = self.core.child_run_id(spec.workflow_id, key)
        self.fx.ops.append(leaf.put())
        parent = (self.run_id, leaf.path)
        self.fx.children.append(
            ("start", leaf.child, spec.workflow_id, payload, key, parent, self.depth + 1)
        )

    def child_input(self, frame: int, node: int) -> tuple[bytes | None, ErrorInfo | None]:
        """The encoded input of the subflow at (frame, node), or None and the error.

        Its ``input(ctx)``, else the run's payload; the error if ``input`` raised or its
        value cannot be stored. Deterministic, so a reloaded run that starts its child
        again (which a child that exists ignores) gives it the same input as the first time.
        """
        spec = self.plan.specs[node]
        assert isinstance(spec, SubflowSpec)
        payload = self.payload
        if spec.input is not None:
            value, err = call_user(spec.input, self._ctx(frame, node))
            if err is not None:
                return None, err
            try:
                payload = encode_value(value, f"input of subflow {spec.name!r}")
            except Exception as exc:
                return None, error_info(exc)
        return self.core.input_for(spec.workflow_id, payload), None

    def _abort(self, frame: int, node: int) -> None:
        key = (frame, node)
        op = self.pending.pop(key, None)
        if self.replaying or self.plan.kind[node] not in _LEAF_KIND:
            return
        leaf = self.leaves.get(key) or self.load_leaf(frame, node)
        if op == C_RUN and leaf.status == StepStatus.RUNNING:
            if leaf.chunk is None:
                self.fx.stop.append((self.run_id, leaf.path))
            else:
                cid = leaf.chunk
                if self._left_chunk(leaf):  # stop it only once none of its items needs it
                    self.fx.stop.append((self.run_id, cid))
        elif leaf.status == StepStatus.RETRYING and leaf.next_retry_at is not None:
            self._drop_timer(leaf.next_retry_at, "retry:" + leaf.path)
        elif op == C_SLEEP and leaf.wait is not None:
            _waits.abort_wait(self, leaf)
        elif op == C_SLEEP and leaf.wake_at is not None:
            self._drop_timer(leaf.wake_at, "sleep:" + leaf.path)
        elif op == C_CHILD and leaf.child is not None:
            self.fx.children.append(("cancel", leaf.child))
        now = self.core.clock.now()
        leaf.attempts.append(
            {
                "attempt": leaf.attempt,
                "status": "cancelled",
                "kind": "cancelled",
                "started_at": leaf.started_at,
                "ended_at": now,
                "error": self.cancel_reason or "stopped: its run, race or loop ended first",
                "pid": None,
            }
        )
        leaf.status = StepStatus.CANCELLED
        leaf.next_retry_at = None
        self.fx.ops.append(leaf.put())

    def _done(self, frame: int, node: int, arg: int) -> None:
        """A composite succeeded: assemble its output and record it."""
        if self.replaying:
            return
        plan = self.plan
        kind = plan.kind[node]
        extra: dict[str, Any] = {}
        if kind in (K_BRANCH, K_RACE):
            if arg >= 0:
                k = plan.arm_start[node] + arg
                r = plan.arm_result[k]
                value = (
                    self.output(frame, r) if r >= 0 else self.source(frame, plan.last_source[node])
                )
                spec = plan.specs[node]
                assert isinstance(spec, BranchSpec | ParallelSpec)
                extra["branch" if kind == K_BRANCH else "winner"] = spec.arms[arg].name
            else:
                value = self.source(frame, plan.last_source[node])
                extra["branch"] = None
        elif kind == K_PARALLEL:
            spec = plan.specs[node]
            assert isinstance(spec, ParallelSpec)
            parts = []
            for k in plan.arms(node):
                r = plan.arm_result[k]
                parts.append(
                    self.output(frame, r) if r >= 0 else self.source(frame, plan.last_source[node])
                )
            value = encode_dict([a.name for a in spec.arms], parts)
        elif kind == K_WHILE:
            extra["iterations"] = arg
            value = (
                self._loop_last(frame, node) if arg else self.source(frame, plan.last_source[node])
            )
        else:  # for_each, batch
            got = self.collected.get((frame, node), {})
            value = encode_list(
                [got[i] if i in got else self._item_output(frame, node, i) for i in range(arg)]
            )
        if value is None:
            value = b"Jnull"
        self.outputs[(frame, node)] = value
        self._put_composite(frame, node, StepStatus.SUCCEEDED, output=value, **extra)

    def _progress(self, key: Key) -> list[int]:
        """A fan-out's counts; after a replay, as its last durable record has them."""
        counts = self.progress.get(key)
        if counts is None:
            counts = [0, 0, 0, 0]
            raw = self.core.store.get(K.STEPS, K.step_key(self.run_id, self.path(*key)))
            if raw is not None:
                items = load_record(raw, "step").get("items") or {}
                counts = [items.get(k, 0) for k in ("total", "succeeded", "failed", "cancelled")]
            self.progress[key] = counts
        return counts

    def _item_output(self, frame: int, owner: int, index: int) -> bytes | None:
        """The output of a finished item (after a restart it is no longer in memory)."""
        body = self.plan.body[owner]
        result = self.plan.scope_result[body]
        prefix = f"{self.frames[frame].prefix}{self.plan.names[owner]}[{index}]/"
        if result < 0:
            return encode_value(self._item(frame, owner, index), "item")
        raw = self.core.store.get(
            K.STEPS, K.step_key(self.run_id, prefix + self.plan.names[result])
        )
        if raw is None:
            return None
        return output_of(load_record(raw, "step"), self.core.store, self.run_id)

    def _composite_failed(self, frame: int, node: int) -> None:
        if self.replaying:
            return
        self._put_composite(frame, node, StepStatus.FAILED, error=self.last_error)

    def _skipped(self, frame: int, node: int) -> None:
        if self.replaying or self.plan.kind[node] not in _LEAF_KIND:
            return
        leaf = self.leaves.get((frame, node)) or self._leaf(frame, node)
        leaf.status = StepStatus.SKIPPED
        self.fx.ops.append(leaf.put())

    def _node_error(self, frame: int, node: int, err: ErrorInfo) -> None:
        """A predicate, selector or input of a composite raised."""
        self.last_error = error_record(err, self.path(frame, node), 1)
        self.error = self.error or self.last_error

    # -- worker reports ----------------------------------------------------------------------

    def on_succeeded(self, msg: AttemptSucceeded) -> None:
        leaf = self._reported(msg.step, msg.attempt)
        if leaf is None:
            return
        spec = self.plan.specs[leaf.node]
        if isinstance(spec, StepSpec) and spec.breaker is not None and not leaf.handling:
            spec.breaker.succeeded()
        leaf.status = StepStatus.SUCCEEDED
        leaf.started_at = msg.started_at
        leaf.ended_at = msg.ended_at
        leaf.error = None if not leaf.handling else leaf.error
        leaf.recovered = leaf.handling
        leaf.handling = False
        leaf.attempts.append(
            {
                "attempt": msg.attempt,
                "status": "recovered" if leaf.recovered else "succeeded",
                "kind": "handler" if leaf.recovered else None,
                "started_at": msg.started_at,
                "ended_at": msg.ended_at,
                "error": None,
                "pid": msg.pid,
            }
        )
        self._succeed(leaf, msg.output)

    def _succeed(self, leaf: Leaf, output: bytes) -> None:
        key = (leaf.frame, leaf.node)
        self.outputs[key] = output
        leaf.inline = inline_output(output)
        if leaf.inline is None:  # large or pickled: in its own record
            self.fx.ops.append((K.VALUES, leaf.key, output))
        self.fx.ops.append(leaf.put())
        self._apply(E_SUCCEEDED, leaf.frame, leaf.node)

    def on_failed(self, msg: AttemptFailed) -> None:
        if self.chunks:
            chunk = self.chunks.get(msg.step)
            if chunk is not None:
                if not self.finished:
                    self._chunk_failed(chunk, msg)
                return
        leaf = self._reported(msg.step, msg.attempt)
        if leaf is None:
            return
        if leaf.handling:  # the error handler itself failed: the step fails with its error
            self.record_attempt(leaf, msg, "handler")
            self._leaf_failed_for_good(leaf, msg.error)
            return
        spec = self.plan.specs[leaf.node]
        step = spec if isinstance(spec, StepSpec) else None
        retry = step.retry if step is not None else NO_RETRY
        delay = self.attempt_failed(leaf, msg, retry, step.breaker if step is not None else None)
        if delay is None:
            self._leaf_failed_for_good(leaf, msg.error)
        elif delay <= 0:
            self._dispatch(leaf)
        else:
            self.retry_later(leaf, delay)

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

    def _reported(self, path: str, attempt: int) -> Leaf | None:
        """The leaf a worker's report is about, if that attempt is still the current one."""
        if self.finished:
            return None
        key = self.by_path.get(path)
        if key is None or self.pending.get(key) != C_RUN:
            return None
        leaf = self.leaves[key]
        if leaf.status != StepStatus.RUNNING or leaf.attempt != attempt:
            return None  # a late report for an attempt that already ended: never record twice
        if leaf.chunk is not None:
            self._left_chunk(leaf)
        return leaf

    def on_timer(self, name: str, due: float) -> None:
        if self.finished:
            return
        if name == "deadline":
            if self.deadline is None or abs(self.deadline - due) > 1e-3:
                return
            timeout = self.compiled.spec.timeout or 0.0
            self.error = {
                "kind": "run_timeout",
                "type": "actorflow.errors.RunTimeout",
                "types": ["actorflow.errors.RunTimeout"],
                "message": f"the run exceeded the workflow timeout of {timeout:g}s",
                "timeout": timeout,
            }
            self.cancel_reason = "the run exceeded its timeout"
            self._apply(E_CANCEL, 0, 0)
            self._finish(RunStatus.FAILED)
            return
        kind, _, path = name.partition(":")
        key = self.by_path.get(path)
        leaf = self.leaves.get(key) if key is not None else None
        if leaf is None:
            return
        if kind == "retry":
            if leaf.status != StepStatus.RETRYING or leaf.next_retry_at is None:
                return
            if abs(leaf.next_retry_at - due) > 1e-3:
                return  # a stale timer from an earlier retry
            self.fx.ops.append((K.TIMERS, K.timer_key(due, self.run_id, name), None))
            self._dispatch(leaf)
        elif kind == "wait":
            _waits.on_wait_timer(self, leaf, due)
        elif kind == "sleep":
            if self.pending.get(key) != C_SLEEP or leaf.wake_at is None:  # type: ignore[arg-type]
                return
            if abs(leaf.wake_at - due) > 1e-3:
                return
            self.fx.ops.append((K.TIMERS, K.timer_key(due, self.run_id, name), None))
            leaf.status = StepStatus.SUCCEEDED
            leaf.ended_at = self.core.clock.now()
            leaf.attempts.append(
                attempt_record(1, "succeeded", None, leaf.dispatched_at, leaf.ended_at)
            )
            self.fx.ops.append(leaf.put())
            self._apply(E_SUCCEEDED, leaf.frame, leaf.node)

    def on_event(self, msg: EventDelivered) -> None:
        _waits.on_event(self, msg)

    def on_resume(self, msg: ResumeApproval) -> str | None:
        return _waits.on_resume(self, msg)

    def on_child_finished(self, msg: ChildFinished) -> None:
        if self.finished:
            return
        key = self.by_path.get(msg.path)
        if key is None or self.pending.get(key) != C_CHILD:
            return
        self._child_outcome(self.leaves[key])  # its child, or the run it continued as

    def _child_outcome(self, leaf: Leaf) -> bool:
        """Apply the child's final state, if it has one; False while it still runs."""
        from actorflow.views import final_run, run_outcome

        found = final_run(self.core.store, leaf.child or "")
        if found is None:
            return False
        child_id, rec = found
        status = RunStatus(rec["status"])
        if not status.terminal:
            return False
        now = self.core.clock.now()
        leaf.ended_at = now
        if status == RunStatus.COMPLETED:
            _, result, _ = run_outcome(self.core.store, child_id)
            leaf.status = StepStatus.SUCCEEDED
            leaf.attempts.append(
                attempt_record(leaf.attempt, "succeeded", None, leaf.dispatched_at, now)
            )
            self._succeed(leaf, encode_value(result, f"result of child run {leaf.child}"))
            return True
        info = child_failure(child_id, rec)
        leaf.attempts.append(
            attempt_record(
                leaf.attempt, "failed", "child", leaf.dispatched_at, now, attempt_summary(info)
            )
        )
        leaf.failures += 1
        self._leaf_failed_for_good(leaf, info)
        return True

    # -- ending ----------------------------------------------------------------------------

    def cancel(self, reason: str) -> bool:
        """Cancel the run; False if it had already finished."""
        if self.finished:
            return False
        self.cancel_reason = reason
        self._apply(E_CANCEL, 0, 0)
        if not self.finished:
            self._finish(RunStatus.CANCELLED)
        return True

    def _on_internal_failure(self) -> None:
        self.fx.cancel_tasks = True

    def _finish(self, status: RunStatus) -> None:
        self._close_run(status)
        for leaf in self.leaves.values():
            if leaf.next_retry_at is not None:
                self._drop_timer(leaf.next_retry_at, "retry:" + leaf.path)
                leaf.next_retry_at = None
        self._put_run()
        self.fx.finished = True
        self.fx.cancel_tasks = self.fx.cancel_tasks or status != RunStatus.COMPLETED

    # -- records -----------------------------------------------------------------------------

    def _put_composite(self, frame: int, node: int, status: StepStatus, **extra: Any) -> None:
        path = self.path(frame, node)
        now = self.core.clock.now()
        rec: dict[str, Any] = {
            "name": self.plan.names[node],
            "path": path,
            "node": node,
            "kind": KIND_NAMES[self.plan.kind[node]],
            "status": status,
            "ended_at": now if status in (StepStatus.SUCCEEDED, StepStatus.FAILED) else None,
        }
        counts = self.progress.get((frame, node))
        if counts is not None and self.plan.kind[node] != K_WHILE:
            total, ok, failed, cancelled = counts
            rec["items"] = {
                "total": total,
                "succeeded": ok,
                "failed": failed,
                "cancelled": cancelled,
                "pending": total - ok - failed - cancelled,
            }
        elif counts is not None:
            rec["iterations"] = counts[0]
        output = extra.pop("output", None)
        for k, v in extra.items():
            rec[k] = v
        key = K.step_key(self.run_id, path)
        if output is not None:
            inline = inline_output(output)
            if inline is None:
                self.fx.ops.append((K.VALUES, key, output))
            else:
                rec["output"] = inline
        self.fx.ops.append((K.STEPS, key, dump_record(rec)))
        self.dirty.discard((frame, node))

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

    def passive(self) -> bool:
        """True when nothing of the run is in a worker: it only waits on timers or children."""
        if self.finished or self.status == RunStatus.QUEUED or self.fx.tasks:
            return False
        for key, op in self.pending.items():
            if op != C_RUN:
                if op not in (C_SLEEP, C_CHILD):
                    return False
                continue
            if self.leaves[key].status != StepStatus.RETRYING:
                return False
        return True

    def _put_run(self) -> None:
        rec = self.run_header()
        rec["plan"] = self.shape
        if self.held_reason is not None:
            rec["held"] = self.held_reason
        if self.status == RunStatus.COMPLETED:
            result = self.plan.scope_result[0]
            value = self.output(0, result) if result >= 0 else None
            inline = inline_output(value) if value is not None else None
            if value is None:
                rec["result"] = None
            elif inline is not None:
                rec["result"] = inline
            else:
                rec["result_step"] = self.plan.names[result]
        self.fx.ops.append((K.RUNS, K.run_key(self.run_id), dump_record(rec)))


def _exception_bytes(err: ErrorInfo) -> bytes:
    """The step's exception, encoded for its error handler's ``ctx.error``."""
    if err.pickled is not None:
        return b"P" + err.pickled
    from actorflow.errors import RemoteError

    return encode_value(RemoteError(err.type, err.message), "error")
