"""The evaluator's commands for a graph run's composite nodes.

Frames begin and end (items of a fan-out, iterations of a loop, branches), branches decide,
fan-outs expand their items, loops go round, sleeps and child runs start, cancels and
aborts stop what is in flight, and finished nodes are recorded.
"""

from __future__ import annotations

from typing import Any

from actorflow._types import StepStatus
from actorflow.definition._spec import (
    BranchSpec,
    ForEachSpec,
    ParallelSpec,
    SleepSpec,
    SubflowSpec,
    WhileSpec,
)
from actorflow.errors import MaxIterationsExceeded
from actorflow.graph._codes import (
    C_CHILD,
    C_RUN,
    C_SLEEP,
    E_CHOSEN,
    E_FAILED,
    E_ITEMS,
    E_LOOP,
    K_BRANCH,
    K_PARALLEL,
    K_RACE,
    K_WHILE,
    S_SUCCEEDED,
)
from actorflow.runtime.kernel._messages import (
    ErrorInfo,
)
from actorflow.runtime.supervision import _waits
from actorflow.runtime.supervision._depth import refuse_child
from actorflow.runtime.supervision._graph_dispatch import GraphDispatch
from actorflow.runtime.supervision._graph_state import (
    _COUNT_SLOT,
    _LEAF_KIND,
    _SAME,
    UNSEEN,
    _Frame,
)
from actorflow.runtime.supervision._nodes import (
    call_user,
    encode_dict,
    encode_list,
    error_info,
    items_of,
)
from actorflow.runtime.supervision._steps import (
    error_record,
)
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import input_of

__all__ = ["GraphNodes"]


class GraphNodes(GraphDispatch):
    """The commands of composite nodes (see the module docstring)."""

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
                got = self.collected.get(key)
                if got is None:  # (a fan-out expanded before a reload)
                    got = self.collected[key] = [UNSEEN] * self._progress(key)[0]
                if f.index >= len(got):
                    got.extend([UNSEEN] * (f.index + 1 - len(got)))
                got[f.index] = value
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
        # One slot per frame (8 bytes each, where a dict took ~50 per item of a large
        # fan-out): the output of each, or UNSEEN for one not ended in this supervisor's life.
        self.collected[key] = [UNSEEN] * n
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
        leaf.input = None if payload is None else input_of(payload)  # the child's payload
        self.fx.ops.append(leaf.put())
        parent = (self.run_id, leaf.path)
        self.fx.children.append(
            ("start", leaf.child, spec.workflow_id, payload, key, parent, self.depth + 1)
        )

    def _abort(self, frame: int, node: int) -> None:
        key = (frame, node)
        op = self.pending.pop(key, None)
        if self.replaying or self.plan.kind[node] not in _LEAF_KIND:
            return
        leaf = self.leaves.get(key) or self.load_leaf(frame, node)
        if op == C_RUN and leaf.status == StepStatus.RUNNING:
            if leaf.chunk is None:
                self.fx.stop.append((self.run_id, leaf.path))
                if leaf.window:
                    self._window_back(leaf)
            else:
                cid = leaf.chunk
                if self._left_chunk(leaf, False):  # stop it only once none of its items needs it
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
            # Assembled in the fan-out's own slots (no copy of a list of a million), which
            # are not needed once its output is.
            got = self.collected.pop((frame, node), None) or []
            del got[arg:]
            got.extend([UNSEEN] * (arg - len(got)))
            for i, part in enumerate(got):
                if part is UNSEEN:
                    got[i] = self._item_output(frame, node, i)
            value = encode_list(got)
            del got
        if value is None:
            value = b"Jnull"
        self.outputs[(frame, node)] = value
        self._put_composite(frame, node, StepStatus.SUCCEEDED, output=value, **extra)

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
