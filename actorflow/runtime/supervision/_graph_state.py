"""A graph run's state, and what is read from it: values, inputs, records.

The graph supervisor is one class built as a chain of parts, each in its own module and
using the parts below it: ``GraphState`` (this module: the run's frames, leaves, outputs
and items, the values a step or a predicate reads, and the run's and nodes' records) <-
``GraphDispatch`` (sending steps: alone, held for chunks, or chunked) <- ``GraphNodes``
(the evaluator's commands for composite nodes: branches, fan-outs, loops, sleeps, child
runs, cancels) <- ``Supervisor`` (``_graph.py``: the run's events, and the evaluator loop).
A part may call the evaluator loop above it through ``_apply``, declared here.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._spec import (
    ForEachSpec,
    SubflowSpec,
)
from actorflow.graph._codes import (
    C_CHILD,
    C_DECIDE,
    C_EXPAND,
    C_LOOP,
    C_RUN,
    C_SLEEP,
    K_ACTION,
    K_BATCH,
    K_FOR_EACH,
    K_SLEEP,
    K_STEP,
    K_SUBFLOW,
    K_WAIT,
    K_WHILE,
    KIND_NAMES,
    S_FAILED,
    S_SUCCEEDED,
)
from actorflow.runtime._core import Compiled, Core
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    ErrorInfo,
)
from actorflow.runtime.supervision._chunking import Window
from actorflow.runtime.supervision._nodes import (
    call_user,
    engine_context,
    error_info,
)
from actorflow.runtime.supervision._run import RunMachine
from actorflow.runtime.supervision._steps import FROM_ITEM, Leaf
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import (
    dump_record,
    inline_output,
    input_of,
    load_record,
    load_step,
    output_of,
)
from actorflow.workers._context import RunInfo

__all__ = ["LAZY_MAX", "UNSEEN", "GraphState", "Key"]

log = logging.getLogger("actorflow.engine")

Key = tuple[int, int]  # (frame, node)
_SAME: Any = object()  # "as usual" for _ctx's optional arguments
#: A payload or ``ctx.last`` larger than this travels to a worker as a reference, fetched
#: only by a step that reads it (a step that reads only small values pays for no large one).
LAZY_MAX = 64 * 1024
_PAYLOAD_REF = b"Rpayload"
#: In ``collected``: a frame whose output this supervisor did not see (read from the store).
UNSEEN: Any = object()
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

    __slots__ = ("id", "key", "leaves", "live", "node", "reported")

    def __init__(self, cid: str, key: bytes, node: int, leaves: list[Leaf]) -> None:
        self.id = cid
        self.key = key  # of its dispatch record in ``values``
        self.node = node  # its step's node
        self.leaves = leaves
        self.live = len(leaves)  # members not yet reported, split off or aborted
        self.reported = 0  # members whose report came back


class GraphState(RunMachine):
    """A graph run's state and its records (see the module docstring)."""

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
        self.collected: dict[Key, list[Any]] = {}  # a fan-out's outputs, by frame index
        self.progress: dict[Key, list[int]] = {}  # [total, succeeded, failed, cancelled]
        self.dirty: set[Key] = set()
        self.loop_last: dict[Key, bytes | None] = {}
        self.loop_iter: dict[Key, int] = {}  # replayed: the iteration a pending C_LOOP is for
        # Fresh item steps waiting to be sent, by (loop frame, step node): sent in chunks
        # when the step is known to be tiny (see ``_send_held``).
        self.held: dict[Key, deque[Leaf]] = {}
        # The first items of a fan-out, sent before the rest (alone, or in small chunks),
        # and the step nodes of which one such item has reported in this run.
        self.probes: dict[Key, list[Leaf]] = {}
        self.calibrated: set[int] = set()
        # By step node: its tasks out from the held items, and its chunks' size cap.
        self.windows: dict[int, Window] = {}
        self.chunks: dict[str, _Chunk] = {}
        # Items out in chunks: the next chunk is sized for the whole fan-out in flight (the
        # items held and these), not just for the items a report freed.
        self.in_chunks = 0
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
        #: The workflow's hook (on_cancel, on_success, on_failure) while it runs
        #: (``_graph_hooks``), the outcome it runs for, and whether it has ended.
        self.hook: Leaf | None = None
        self.hook_status: RunStatus | None = None
        self.hook_done = False

    def path(self, frame: int, node: int) -> str:
        return self.frames[frame].prefix + self.plan.names[node]

    def output(self, frame: int, node: int) -> bytes | None:
        """The encoded output of a finished node of a live frame."""
        key = (frame, node)
        value = self.outputs.get(key)
        if value is None and key not in self.outputs:
            path = self.path(frame, node)
            raw = self.core.store.get(K.STEPS, K.step_key(self.run_id, path))
            if raw is not None:
                value = output_of(load_step(raw, path, "step"), self.core.store, self.run_id)
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

    def _item_frame(self, frame: int) -> bool:
        """Whether ``frame`` is one item of a for_each (its input is that item, kept).

        A batch's chunk is not: its input is a slice of the items, not one of them.
        """
        if frame == 0:
            return False
        owner = self.frames[frame].owner
        spec = self.plan.specs[owner]
        return self.plan.kind[owner] == K_FOR_EACH and getattr(spec, "size", None) is None

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

    def _names(self, frame: int) -> Any:
        """``ctx.steps``' names for engine-side code running in ``frame``: this frame's first."""

        def names() -> list[str]:
            out: list[str] = []
            fid = frame
            while True:
                scope = self._scope(fid)
                for node, name in enumerate(self.plan.names):
                    if (
                        self.plan.scope[node] == scope
                        and name not in out
                        and self.output(fid, node) is not None
                    ):
                        out.append(name)
                if fid == 0:
                    return out
                fid = self.frames[fid].parent

        return names

    def _scope(self, frame: int) -> int:
        return 0 if frame == 0 else self.plan.body[self.frames[frame].owner]

    def _task_payload(self) -> bytes:
        """The payload as a task carries it: itself, or a reference when it is large."""
        return self.payload if len(self.payload) <= LAZY_MAX else _PAYLOAD_REF

    def _task_last(self, leaf: Leaf) -> bytes | None:
        """``ctx.last`` as ``leaf``'s task carries it: itself, or a reference when it is large.

        The reference names the step output it is; the step fetches it only if it reads it.
        Its short rendering becomes ``leaf.input``, kept in the record that the dispatch
        writes (a chunk's item: in the item's record when it ends).
        """
        frame = leaf.frame
        src = self.plan.last_source[leaf.node]
        value = self.source(frame, src)
        if src < 0 and self._item_frame(frame):
            leaf.input = FROM_ITEM  # the loop keeps it: the record need not copy it
        else:
            leaf.input = input_of(b"Jnull" if value is None else value)
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
            self._names(frame),
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

    def _item_output(self, frame: int, owner: int, index: int) -> bytes | None:
        """The output of a finished item (after a restart it is no longer in memory)."""
        body = self.plan.body[owner]
        result = self.plan.scope_result[body]
        prefix = f"{self.frames[frame].prefix}{self.plan.names[owner]}[{index}]/"
        if result < 0:
            return encode_value(self._item(frame, owner, index), "item")
        path = prefix + self.plan.names[result]
        raw = self.core.store.get(K.STEPS, K.step_key(self.run_id, path))
        if raw is None:
            return None
        return output_of(load_step(raw, path, "step"), self.core.store, self.run_id)

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

    if TYPE_CHECKING:  # defined by the Supervisor, the top of the chain (types only here)

        def _apply(self, event: int, frame: int, node: int, arg: int = 0) -> None:
            """Feed one event to the evaluator and carry out its commands."""

        def on_failed(self, msg: AttemptFailed) -> None:
            """A step attempt failed (dispatching fails one at an open circuit)."""

        def _succeed(self, leaf: Leaf, output: bytes) -> None:
            """Record a leaf's output and tell the evaluator (a cache hit does too)."""


def _exception_bytes(err: ErrorInfo) -> bytes:
    """The step's exception, encoded for its error handler's ``ctx.error``."""
    if err.pickled is not None:
        return b"P" + err.pickled
    from actorflow.errors import RemoteError

    return encode_value(RemoteError(err.type, err.message), "error")
