"""The graph evaluator in pure Python: the specification of both twins.

A run's state is a set of *frames* (the workflow's, plus one per running iteration, item or
chunk of a loop), each holding a state byte and three counters per node of its scope. The
evaluator applies one event to one node of one frame and returns the commands that follow, as
a flat list of ints, four per command: ``(command, frame, node, arg)`` (codes in ``_codes.py``).
It does no I/O, reads no clock, and never calls user code: predicates and item selectors run in
the engine, which answers ``C_DECIDE`` / ``C_EXPAND`` / ``C_LOOP`` with events.

Work per event is proportional to what the event changes: finishing one item of a 100,000-item
for_each touches that item's frame and its loop's counters, never the other items. Frames of a
finished item are reused for the next one, so memory follows concurrency, not item count.

Counters per node slot: ``a``: a join's pending arrivals, a loop's count (items, or iterations
done); ``b``: items started, a branch's chosen arm, a race's winner; ``c``: items done, a race's
failed arms.

``native/_evaluator_c.pyx`` implements the same functions over C arrays; Hypothesis tests
check that both return the same commands and reach the same states for random plans and events.
"""

from __future__ import annotations

from typing import Any

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
    C_REJECTED,
    C_RUN,
    C_SKIP,
    C_SLEEP,
    E_CANCEL,
    E_CHOSEN,
    E_FAILED,
    E_ITEMS,
    E_LOOP,
    E_SKIPPED,
    E_SUCCEEDED,
    J_ALL,
    J_FIRST,
    K_ACTION,
    K_BATCH,
    K_BRANCH,
    K_CANCEL,
    K_FOR_EACH,
    K_JOIN,
    K_PARALLEL,
    K_RACE,
    K_SLEEP,
    K_STEP,
    K_SUBFLOW,
    K_WAIT,
    K_WHILE,
    R_ACTIVE,
    R_CANCELLED,
    R_COMPLETED,
    R_FAILED,
    S_CANCELLED,
    S_FAILED,
    S_PENDING,
    S_RUNNING,
    S_SKIPPED,
    S_SUCCEEDED,
)
from actorflow.graph._plan import Plan

__all__ = [
    "IMPLEMENTATION",
    "State",
    "advance",
    "advance_many",
    "frame_info",
    "new_state",
    "outcome",
    "prepare",
    "snapshot",
    "start",
    "status",
]

IMPLEMENTATION = "python"

_LEAVES = (K_STEP, K_ACTION, K_SUBFLOW, K_SLEEP, K_WAIT)
_LOOPS = (K_WHILE, K_FOR_EACH, K_BATCH)


class State:
    """The evaluator's view of one run: frames and per-node slots."""

    __slots__ = (
        "a",
        "b",
        "c",
        "f_alive",
        "f_base",
        "f_child",
        "f_free",
        "f_index",
        "f_next",
        "f_owner",
        "f_parent",
        "f_prev",
        "f_scope",
        "free_head",
        "outcome",
        "st",
    )

    def __init__(self, plan: Plan) -> None:
        self.f_scope: list[int] = []
        self.f_parent: list[int] = []
        self.f_owner: list[int] = []
        self.f_index: list[int] = []
        self.f_base: list[int] = []
        self.f_alive: list[int] = []
        self.f_child: list[int] = []  # first child frame
        self.f_next: list[int] = []  # next sibling
        self.f_prev: list[int] = []  # previous sibling
        self.f_free: list[int] = []  # next frame in its scope's free list
        self.free_head: list[int] = [-1] * plan.scopes
        self.st: list[int] = []
        self.a: list[int] = []
        self.b: list[int] = []
        self.c: list[int] = []
        self.outcome = R_ACTIVE


def prepare(plan: Plan) -> Plan:
    """The plan in this twin's form (the pure twin uses it as it is)."""
    return plan


def new_state(plan: Plan) -> State:
    """A fresh state holding the workflow's frame (frame 0, not yet started)."""
    s = State(plan)
    _alloc(plan, s, 0, -1, -1, 0)
    return s


def start(plan: Plan, s: State) -> list[int]:
    """Start the run: the commands for its first nodes."""
    cmds: list[int] = []
    _activate(plan, s, 0, plan.scope_entry[0], cmds)
    return cmds


def advance(plan: Plan, s: State, event: int, frame: int, node: int, arg: int) -> list[int]:
    """Apply one event; return the commands that follow (four ints each).

    Raises:
        ValueError: the event does not fit the state (unknown event, dead frame, a node that
            is not waiting for it).
    """
    cmds: list[int] = []
    if event == E_CANCEL:
        if s.outcome == R_ACTIVE:
            _cancel_range(
                plan, s, 0, plan.scope_first[0], plan.scope_first[0] + plan.scope_size[0], cmds
            )
            s.outcome = R_CANCELLED
        return cmds
    if frame < 0 or frame >= len(s.f_alive) or not s.f_alive[frame]:
        raise ValueError(f"frame {frame} is not alive")
    if node < 0 or node >= len(plan.kind) or plan.scope[node] != s.f_scope[frame]:
        raise ValueError(f"node {node} is not in frame {frame}'s scope")
    slot = s.f_base[frame] + node - plan.scope_first[plan.scope[node]]
    if s.st[slot] != S_RUNNING:
        raise ValueError(f"node {node} of frame {frame} is not running (state {s.st[slot]})")
    kind = plan.kind[node]
    if event in (E_SUCCEEDED, E_SKIPPED):
        if kind not in _LEAVES:
            raise ValueError(f"node {node} is not a leaf")
        s.st[slot] = S_SUCCEEDED if event == E_SUCCEEDED else S_SKIPPED
        _complete(plan, s, frame, node, cmds)
    elif event == E_FAILED:
        if kind not in _LEAVES and kind not in (K_BRANCH, K_FOR_EACH, K_BATCH, K_WHILE):
            raise ValueError(f"node {node} cannot fail by an event")
        _fail(plan, s, frame, node, cmds)
    elif event == E_CHOSEN:
        if kind != K_BRANCH:
            raise ValueError(f"node {node} is not a branch")
        _choose(plan, s, frame, node, arg, cmds)
    elif event == E_ITEMS:
        if kind != K_FOR_EACH and kind != K_BATCH:
            raise ValueError(f"node {node} is not a for_each or batch")
        if arg < 0:
            raise ValueError("item count must be >= 0")
        _items(plan, s, frame, node, arg, cmds)
    elif event == E_LOOP:
        if kind != K_WHILE:
            raise ValueError(f"node {node} is not a while")
        _loop(plan, s, frame, node, arg, cmds)
    else:
        raise ValueError(f"unknown event {event}")
    return cmds


def advance_many(plan: Plan, s: State, events: list[int]) -> list[int]:
    """Apply events one by one (four ints each, flat); return all their commands, in order.

    An event that does not fit the state is not applied: it yields ``(C_REJECTED, frame, node,
    event)`` instead of raising, so the events after it still apply.
    """
    cmds: list[int] = []
    for i in range(0, len(events) - 3, 4):
        event, frame, node, arg = events[i], events[i + 1], events[i + 2], events[i + 3]
        try:
            cmds += advance(plan, s, event, frame, node, arg)
        except ValueError:
            cmds += (C_REJECTED, frame, node, event)
    return cmds


def outcome(s: State) -> int:
    """``R_ACTIVE``, ``R_COMPLETED``, ``R_FAILED`` or ``R_CANCELLED``."""
    return s.outcome


def status(plan: Plan, s: State, frame: int, node: int) -> int:
    """The state of ``node`` in ``frame``."""
    return s.st[s.f_base[frame] + node - plan.scope_first[plan.scope[node]]]


def frame_info(s: State, frame: int) -> tuple[int, int, int, int, int]:
    """``(scope, parent frame, owner node, index, alive)`` of a frame."""
    return (s.f_scope[frame], s.f_parent[frame], s.f_owner[frame], s.f_index[frame],
            s.f_alive[frame])  # fmt: skip


def snapshot(plan: Plan, s: State) -> tuple[Any, ...]:
    """Everything observable, in a canonical form (for comparing the twins)."""
    frames = []
    for f in range(len(s.f_alive)):
        if not s.f_alive[f]:
            continue
        base, size = s.f_base[f], plan.scope_size[s.f_scope[f]]
        frames.append(
            (f, s.f_scope[f], s.f_parent[f], s.f_owner[f], s.f_index[f],
             tuple(s.st[base : base + size]), tuple(s.a[base : base + size]),
             tuple(s.b[base : base + size]), tuple(s.c[base : base + size]))
        )  # fmt: skip
    return (s.outcome, tuple(frames))


# -- frames ----------------------------------------------------------------------------------


def _alloc(plan: Plan, s: State, scope: int, parent: int, owner: int, index: int) -> int:
    f = s.free_head[scope]
    size = plan.scope_size[scope]
    if f >= 0:
        s.free_head[scope] = s.f_free[f]
        base = s.f_base[f]
    else:
        f = len(s.f_alive)
        base = len(s.st)
        s.st.extend([0] * size)
        s.a.extend([0] * size)
        s.b.extend([0] * size)
        s.c.extend([0] * size)
        s.f_scope.append(scope)
        s.f_base.append(base)
        s.f_parent.append(-1)
        s.f_owner.append(-1)
        s.f_index.append(0)
        s.f_alive.append(0)
        s.f_child.append(-1)
        s.f_next.append(-1)
        s.f_prev.append(-1)
        s.f_free.append(-1)
    for i in range(base, base + size):
        s.st[i] = S_PENDING
        s.a[i] = 0
        s.b[i] = 0
        s.c[i] = 0
    s.f_parent[f] = parent
    s.f_owner[f] = owner
    s.f_index[f] = index
    s.f_alive[f] = 1
    s.f_child[f] = -1
    s.f_prev[f] = -1
    if parent >= 0:  # link at the head of the parent's children
        head = s.f_child[parent]
        s.f_next[f] = head
        if head >= 0:
            s.f_prev[head] = f
        s.f_child[parent] = f
    else:
        s.f_next[f] = -1
    return f


def _free(s: State, f: int) -> None:
    parent = s.f_parent[f]
    prev, nxt = s.f_prev[f], s.f_next[f]
    if prev >= 0:
        s.f_next[prev] = nxt
    elif parent >= 0:
        s.f_child[parent] = nxt
    if nxt >= 0:
        s.f_prev[nxt] = prev
    s.f_alive[f] = 0
    scope = s.f_scope[f]
    s.f_free[f] = s.free_head[scope]
    s.free_head[scope] = f


def _slot(plan: Plan, s: State, frame: int, node: int) -> int:
    return s.f_base[frame] + node - plan.scope_first[plan.scope[node]]


def _start_frame(
    plan: Plan, s: State, parent: int, owner: int, index: int, cmds: list[int]
) -> None:
    scope = plan.body[owner]
    f = _alloc(plan, s, scope, parent, owner, index)
    cmds += (C_FRAME, f, owner, index)
    _activate(plan, s, f, plan.scope_entry[scope], cmds)


# -- moving forward --------------------------------------------------------------------------


def _activate(plan: Plan, s: State, frame: int, node: int, cmds: list[int]) -> None:
    """``node`` of ``frame`` is ready: start it."""
    slot = _slot(plan, s, frame, node)
    s.st[slot] = S_RUNNING
    kind = plan.kind[node]
    if kind in (K_STEP, K_ACTION):
        cmds += (C_RUN, frame, node, 0)
    elif kind == K_SUBFLOW:
        cmds += (C_CHILD, frame, node, 0)
    elif kind in (K_SLEEP, K_WAIT):
        cmds += (C_SLEEP, frame, node, 0)
    elif kind == K_CANCEL:
        cmds += (C_CANCEL_RUN, frame, node, 0)
    elif kind == K_BRANCH:
        cmds += (C_DECIDE, frame, node, 0)
    elif kind in (K_FOR_EACH, K_BATCH):
        cmds += (C_EXPAND, frame, node, 0)
    elif kind == K_WHILE:
        cmds += (C_LOOP, frame, node, 0)
    elif kind in (K_PARALLEL, K_RACE):
        join = plan.join[node]
        jslot = _slot(plan, s, frame, join)
        s.st[jslot] = S_RUNNING
        first, last = plan.arm_start[node], plan.arm_start[node + 1]
        s.a[jslot] = last - first if kind == K_PARALLEL else 1
        for k in range(first, last):
            if s.st[slot] != S_RUNNING:
                break  # a race already won by an empty arm
            entry = plan.arm_entry[k]
            if entry == join:
                _arrive(plan, s, frame, join, k - first, cmds)
            else:
                _activate(plan, s, frame, entry, cmds)


def _complete(plan: Plan, s: State, frame: int, node: int, cmds: list[int]) -> None:
    """``node`` of ``frame`` succeeded (or was skipped): go on from it."""
    for i in range(plan.succ_start[node], plan.succ_start[node + 1]):
        nxt = plan.succ[i]
        if plan.kind[nxt] == K_JOIN:
            _arrive(plan, s, frame, nxt, plan.parent_arm[node], cmds)
        else:
            _activate(plan, s, frame, nxt, cmds)
    if node == plan.scope_exit[s.f_scope[frame]]:
        _frame_succeeded(plan, s, frame, cmds)


def _arrive(plan: Plan, s: State, frame: int, join: int, arm: int, cmds: list[int]) -> None:
    """Arm ``arm`` of ``join``'s composite finished."""
    jslot = _slot(plan, s, frame, join)
    if s.st[jslot] != S_RUNNING:
        return
    comp = plan.join[join]
    mode = plan.join_mode[join]
    if mode == J_FIRST:
        cslot = _slot(plan, s, frame, comp)
        s.b[cslot] = arm
        base = plan.arm_start[comp]
        for k in range(base, plan.arm_start[comp + 1]):
            if k - base != arm:
                _cancel_range(plan, s, frame, plan.arm_lo[k], plan.arm_hi[k], cmds)
        _fire(plan, s, frame, join, comp, arm, cmds)
    elif mode == J_ALL:
        s.a[jslot] -= 1
        if s.a[jslot] == 0:
            _fire(plan, s, frame, join, comp, plan.arm_start[comp + 1] - plan.arm_start[comp], cmds)
    else:
        _fire(plan, s, frame, join, comp, s.b[_slot(plan, s, frame, comp)], cmds)


def _fire(
    plan: Plan, s: State, frame: int, join: int, comp: int, arg: int, cmds: list[int]
) -> None:
    s.st[_slot(plan, s, frame, join)] = S_SUCCEEDED
    s.st[_slot(plan, s, frame, comp)] = S_SUCCEEDED
    cmds += (C_DONE, frame, comp, arg)
    _complete(plan, s, frame, join, cmds)


def _choose(plan: Plan, s: State, frame: int, node: int, arm: int, cmds: list[int]) -> None:
    first, last = plan.arm_start[node], plan.arm_start[node + 1]
    if arm < -1 or arm >= last - first:
        raise ValueError(f"branch {node} has no arm {arm}")
    s.b[_slot(plan, s, frame, node)] = arm
    join = plan.join[node]
    s.st[_slot(plan, s, frame, join)] = S_RUNNING
    for k in range(first, last):
        if k - first != arm:
            _skip_range(plan, s, frame, plan.arm_lo[k], plan.arm_hi[k], cmds)
    if arm < 0 or plan.arm_entry[first + arm] == join:
        _arrive(plan, s, frame, join, arm, cmds)
    else:
        _activate(plan, s, frame, plan.arm_entry[first + arm], cmds)


def _items(plan: Plan, s: State, frame: int, node: int, n: int, cmds: list[int]) -> None:
    slot = _slot(plan, s, frame, node)
    if s.a[slot] or s.b[slot]:
        raise ValueError(f"node {node} of frame {frame} already has its items")
    s.a[slot] = n
    s.b[slot] = 0
    s.c[slot] = 0
    if n == 0:
        _loop_done(plan, s, frame, node, 0, cmds)
        return
    limit = plan.limit[node]
    for _ in range(n if limit <= 0 or limit > n else limit):
        index = s.b[slot]
        s.b[slot] = index + 1
        _start_frame(plan, s, frame, node, index, cmds)


def _loop(plan: Plan, s: State, frame: int, node: int, go_on: int, cmds: list[int]) -> None:
    slot = _slot(plan, s, frame, node)
    if s.b[slot]:
        raise ValueError(f"while {node} of frame {frame} is running an iteration")
    if go_on:
        s.b[slot] = 1  # an iteration is running
        _start_frame(plan, s, frame, node, s.a[slot], cmds)
    else:
        _loop_done(plan, s, frame, node, s.a[slot], cmds)


def _loop_done(plan: Plan, s: State, frame: int, node: int, count: int, cmds: list[int]) -> None:
    s.st[_slot(plan, s, frame, node)] = S_SUCCEEDED
    cmds += (C_DONE, frame, node, count)
    _complete(plan, s, frame, node, cmds)


def _frame_succeeded(plan: Plan, s: State, frame: int, cmds: list[int]) -> None:
    if frame == 0:
        s.outcome = R_COMPLETED
        return
    parent, owner = s.f_parent[frame], s.f_owner[frame]
    cmds += (C_FRAME_END, frame, owner, S_SUCCEEDED)
    _free(s, frame)
    slot = _slot(plan, s, parent, owner)
    if plan.kind[owner] == K_WHILE:
        s.a[slot] += 1
        s.b[slot] = 0
        cmds += (C_LOOP, parent, owner, s.a[slot])
        return
    s.c[slot] += 1
    if s.b[slot] < s.a[slot]:
        index = s.b[slot]
        s.b[slot] = index + 1
        _start_frame(plan, s, parent, owner, index, cmds)
    elif s.c[slot] == s.a[slot]:
        _loop_done(plan, s, parent, owner, s.a[slot], cmds)


# -- failing and stopping --------------------------------------------------------------------


def _fail(plan: Plan, s: State, frame: int, node: int, cmds: list[int]) -> None:
    """``node`` of ``frame`` failed: fail its race arm, or else its frame."""
    s.st[_slot(plan, s, frame, node)] = S_FAILED
    kind = plan.kind[node]
    if kind in _LOOPS:
        _cancel_children(plan, s, frame, node, cmds)
    if kind not in _LEAVES:
        cmds += (C_NODE_FAILED, frame, node, 0)
    race = plan.race_of[node]
    if race >= 0:
        rslot = _slot(plan, s, frame, race)
        if s.st[rslot] == S_RUNNING:
            k = plan.arm_start[race] + plan.race_arm[node]
            _cancel_range(plan, s, frame, plan.arm_lo[k], plan.arm_hi[k], cmds)
            s.c[rslot] += 1
            if s.c[rslot] == plan.arm_start[race + 1] - plan.arm_start[race]:
                s.st[_slot(plan, s, frame, plan.join[race])] = S_FAILED
                _fail(plan, s, frame, race, cmds)
            return
    _frame_failed(plan, s, frame, cmds)


def _frame_failed(plan: Plan, s: State, frame: int, cmds: list[int]) -> None:
    scope = s.f_scope[frame]
    first = plan.scope_first[scope]
    _cancel_range(plan, s, frame, first, first + plan.scope_size[scope], cmds)
    if frame == 0:
        s.outcome = R_FAILED
        return
    parent, owner = s.f_parent[frame], s.f_owner[frame]
    cmds += (C_FRAME_END, frame, owner, S_FAILED)
    _free(s, frame)
    _cancel_children(plan, s, parent, owner, cmds)
    _fail(plan, s, parent, owner, cmds)


def _cancel_children(plan: Plan, s: State, frame: int, owner: int, cmds: list[int]) -> None:
    """Cancel every live frame that ``owner`` (a loop node of ``frame``) started."""
    child = s.f_child[frame]
    while child >= 0:
        nxt = s.f_next[child]
        if s.f_owner[child] == owner:
            _cancel_frame(plan, s, child, cmds)
        child = nxt


def _cancel_frame(plan: Plan, s: State, frame: int, cmds: list[int]) -> None:
    scope = s.f_scope[frame]
    first = plan.scope_first[scope]
    _cancel_range(plan, s, frame, first, first + plan.scope_size[scope], cmds)
    cmds += (C_FRAME_END, frame, s.f_owner[frame], S_CANCELLED)
    _free(s, frame)


def _cancel_range(plan: Plan, s: State, frame: int, lo: int, hi: int, cmds: list[int]) -> None:
    """Stop every unfinished node of ``frame`` in ``[lo, hi)``."""
    base = s.f_base[frame] - plan.scope_first[s.f_scope[frame]]
    for node in range(lo, hi):
        slot = base + node
        state = s.st[slot]
        if state == S_RUNNING:
            kind = plan.kind[node]
            if kind in _LEAVES:
                cmds += (C_ABORT, frame, node, 0)
            elif kind in _LOOPS:
                _cancel_children(plan, s, frame, node, cmds)
            s.st[slot] = S_CANCELLED
        elif state == S_PENDING:
            s.st[slot] = S_CANCELLED


def _skip_range(plan: Plan, s: State, frame: int, lo: int, hi: int, cmds: list[int]) -> None:
    """Mark the nodes of an arm not taken as skipped."""
    base = s.f_base[frame] - plan.scope_first[s.f_scope[frame]]
    for node in range(lo, hi):
        if s.st[base + node] == S_PENDING:
            s.st[base + node] = S_SKIPPED
            if plan.kind[node] != K_JOIN:
                cmds += (C_SKIP, frame, node, 0)
