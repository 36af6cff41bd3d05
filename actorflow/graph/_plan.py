"""The compiled plan: an integer-indexed graph that the evaluator walks.

Nodes are numbered scope by scope. A *scope* is a block that runs in its own *frame*: scope 0
is the workflow; the body of every while, for_each and batch is a scope, run in one frame per
iteration, item or chunk. Within a scope, a branch, parallel or race is laid out as the
composite node, then its arms' nodes arm after arm, then its join node; an arm's nodes are a
contiguous range, so skipping or cancelling an arm touches that range only.

All per-node and per-scope facts are plain lists of ints (the Cython twin copies them into C
arrays once per plan). A plan is immutable once compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Plan"]


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """A compiled workflow graph.

    Attributes:
        workflow_id: the workflow it was compiled from.
        shape: the structural fingerprint; histories replay only onto plans of this shape.
        names: node names (join nodes: ``<composite>#join``).
        specs: the spec of each node (None for joins).
        kind: ``K_*`` per node.
        scope: the scope of each node.
        succ_start: CSR offsets into ``succ``.
        succ: successors within the scope (sequence edges; an arm's end to its join).
        join: a composite's join node; a join's composite; else -1.
        join_mode: ``J_*`` of a join node.
        arm_start: CSR offsets (per node) into the arm arrays.
        arm_entry: first node of each arm, or its composite's join when the arm is empty.
        arm_lo: first node of each arm's range.
        arm_hi: end (exclusive) of each arm's range.
        arm_result: the node whose output is the arm's, or -1 (passes its input through).
        body: the body scope of a while / for_each / batch, else -1.
        limit: for_each concurrency, 1 for batch, max_iterations for while; else 0.
        parent_arm: the arm index of a node within its innermost enclosing composite, or -1.
        race_of: the innermost race whose arm holds the node, or -1.
        race_arm: that race's arm index, or -1.
        last_source: the node whose output is the node's ``ctx.last`` (-1: the frame's input).
        scope_first: first node of each scope.
        scope_size: node count of each scope.
        scope_entry: first node run in each scope.
        scope_exit: last top-level node of each scope (its success ends the frame).
        scope_result: the node whose output is the frame's output (-1: the frame's input).
        scope_owner: the loop node whose body the scope is (-1 for scope 0).
        index: node by name (joins excluded).
    """

    workflow_id: str
    shape: str
    names: tuple[str, ...]
    specs: tuple[Any, ...]
    kind: list[int]
    scope: list[int]
    succ_start: list[int]
    succ: list[int]
    join: list[int]
    join_mode: list[int]
    arm_start: list[int]
    arm_entry: list[int]
    arm_lo: list[int]
    arm_hi: list[int]
    arm_result: list[int]
    body: list[int]
    limit: list[int]
    parent_arm: list[int]
    race_of: list[int]
    race_arm: list[int]
    last_source: list[int]
    scope_first: list[int]
    scope_size: list[int]
    scope_entry: list[int]
    scope_exit: list[int]
    scope_result: list[int]
    scope_owner: list[int]
    index: dict[str, int]

    @property
    def size(self) -> int:
        """Number of nodes."""
        return len(self.names)

    @property
    def scopes(self) -> int:
        """Number of scopes."""
        return len(self.scope_first)

    def arms(self, node: int) -> range:
        """Indices into the arm arrays of ``node``'s arms."""
        return range(self.arm_start[node], self.arm_start[node + 1])
