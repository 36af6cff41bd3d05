"""The compiled plan: an integer-indexed graph that the evaluator walks.

Edges are stored in CSR form (``succ_start``/``succ``) as ``array('i')`` so that the Cython
evaluator reads them through typed memoryviews without copying. A plan is immutable once
compiled; by convention nothing writes to its arrays.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

__all__ = ["Plan", "RunState"]


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """A compiled workflow graph.

    Attributes:
        workflow_id: the workflow it was compiled from.
        fingerprint: the spec's fingerprint.
        names: node names, by index.
        kinds: node kind codes (``KIND_*``), by index.
        succ_start: CSR offsets into ``succ``; node i's successors are
            ``succ[succ_start[i]:succ_start[i + 1]]``.
        succ: successor indices.
        pred_count: number of predecessors of each node.
        roots: nodes ready when a run starts.
        last_source: for each node, the node whose output is its ``ctx.last`` (-1: none).
        result_node: the node whose output is the run's result (-1: none).
        index: node index by name.
    """

    workflow_id: str
    fingerprint: str
    names: tuple[str, ...]
    kinds: bytes
    succ_start: array[int]
    succ: array[int]
    pred_count: array[int]
    roots: array[int]
    last_source: array[int]
    result_node: int
    index: dict[str, int]

    @property
    def size(self) -> int:
        """Number of nodes."""
        return len(self.names)


class RunState:
    """The evaluator's view of one run: a state byte and a waiting count per node.

    Attributes:
        status: ``NODE_*`` code per node.
        waiting: unfinished predecessors per node.
        counters: ``counters[0]`` is the number of nodes not yet finished.
    """

    __slots__ = ("counters", "status", "waiting")

    def __init__(self, plan: Plan) -> None:
        self.status = bytearray(plan.size)
        self.waiting = array("i", plan.pred_count)
        self.counters = array("i", [plan.size])
