"""The graph evaluator, in pure Python: the specification of both twins.

Functions take the plan's arrays and a run's state arrays and mutate the state in place. They
are pure otherwise (no I/O, no clock, no randomness), and the work done per event is
proportional to the node's successors, never to the size of the run.

``native/_evaluator_c.pyx`` implements the same functions; Hypothesis tests check that both
give identical results for random plans and event orders.
"""

from __future__ import annotations

from array import array

from actorflow.graph._codes import (
    EV_FAILED,
    EV_SKIPPED,
    EV_SUCCEEDED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SKIPPED,
    NODE_SUCCEEDED,
    RUN_ACTIVE,
    RUN_COMPLETED,
    RUN_FAILED,
)

__all__ = ["IMPLEMENTATION", "advance", "rebuild", "start"]

IMPLEMENTATION = "python"


def start(roots: array[int], status: bytearray, counters: array[int]) -> list[int]:
    """Choose the nodes that are ready when a run starts; mark them running.

    Args:
        roots: the plan's root nodes.
        status: the run's node states (all pending).
        counters: ``counters[0]``, unfinished nodes.

    Returns:
        The ready nodes, in plan order.
    """
    ready: list[int] = []
    for node in roots:
        if status[node] == NODE_PENDING:
            status[node] = NODE_RUNNING
            ready.append(node)
    return ready


def advance(
    succ_start: array[int],
    succ: array[int],
    status: bytearray,
    waiting: array[int],
    counters: array[int],
    node: int,
    event: int,
) -> tuple[list[int], int]:
    """Apply one event to one node; return the nodes that became ready and the run outcome.

    Args:
        succ_start: the plan's CSR offsets.
        succ: the plan's successor array.
        status: the run's node states (updated).
        waiting: unfinished predecessors per node (updated).
        counters: ``counters[0]``, unfinished nodes (updated).
        node: the node the event is about.
        event: ``EV_SUCCEEDED``, ``EV_FAILED`` or ``EV_SKIPPED``.

    Returns:
        ``(ready, outcome)``: newly ready nodes (marked running) in successor order, and
        ``RUN_ACTIVE``, ``RUN_COMPLETED`` or ``RUN_FAILED``.

    Raises:
        ValueError: the event is unknown or the node already finished.
    """
    current = status[node]
    if current != NODE_RUNNING and current != NODE_PENDING:
        raise ValueError(f"node {node} already finished (state {current})")
    if event == EV_FAILED:
        status[node] = NODE_FAILED
        counters[0] -= 1
        return [], RUN_FAILED
    if event == EV_SUCCEEDED:
        status[node] = NODE_SUCCEEDED
    elif event == EV_SKIPPED:
        status[node] = NODE_SKIPPED
    else:
        raise ValueError(f"unknown event {event}")
    counters[0] -= 1
    ready: list[int] = []
    for i in range(succ_start[node], succ_start[node + 1]):
        s = succ[i]
        waiting[s] -= 1
        if waiting[s] == 0 and status[s] == NODE_PENDING:
            status[s] = NODE_RUNNING
            ready.append(s)
    return ready, (RUN_COMPLETED if counters[0] == 0 else RUN_ACTIVE)


def rebuild(
    succ_start: array[int],
    succ: array[int],
    pred_count: array[int],
    status: bytearray,
    waiting: array[int],
    counters: array[int],
) -> list[int]:
    """Recompute ``waiting`` and ``counters`` from recorded node states (after a restart).

    Pending nodes whose predecessors have all finished are marked running and returned, so a
    run interrupted between recording a result and choosing the next step still moves on.

    Returns:
        Nodes that are ready but were not yet chosen, in plan order.
    """
    n = len(status)
    unfinished = 0
    for i in range(n):
        waiting[i] = pred_count[i]
    for i in range(n):
        st = status[i]
        if st in (NODE_SUCCEEDED, NODE_SKIPPED):
            for j in range(succ_start[i], succ_start[i + 1]):
                waiting[succ[j]] -= 1
        elif st in (NODE_PENDING, NODE_RUNNING):
            unfinished += 1
    counters[0] = unfinished
    ready: list[int] = []
    for i in range(n):
        if status[i] == NODE_PENDING and waiting[i] == 0:
            status[i] = NODE_RUNNING
            ready.append(i)
    return ready
