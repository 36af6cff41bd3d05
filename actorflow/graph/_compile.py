"""Compile a workflow spec into a :class:`Plan` (layout described in ``_plan.py``).

Structural problems are caught when the builder validates (unclosed blocks, duplicates, bad
limits); what only the engine knows is checked here: a subflow must name a workflow the engine
defines. Every problem goes into one :class:`~actorflow.errors.GraphError`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from actorflow.definition._spec import (
    BranchSpec,
    CancelSpec,
    ForEachSpec,
    NodeSpec,
    SleepSpec,
    StepSpec,
    SubflowSpec,
    WaitSpec,
    WhileSpec,
    WorkflowSpec,
    walk,
)
from actorflow.errors import GraphError
from actorflow.graph._codes import (
    J_ALL,
    J_FIRST,
    J_ONE,
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
)
from actorflow.graph._plan import Plan

__all__ = ["compile_plan"]

_PASS = -2  # "no node produced an output yet": the frame's (or arm's) input passes through


def compile_plan(spec: WorkflowSpec, known: Collection[str] | None = None) -> Plan:
    """Turn a validated spec into a plan.

    Args:
        spec: the workflow.
        known: workflow ids the engine defines; subflows must name one (None: not checked).

    Raises:
        GraphError: listing every problem.
    """
    problems: list[str] = []
    if known is not None:
        for node in walk(spec.block):
            if isinstance(node, SubflowSpec) and node.workflow_id not in known:
                hint = ", ".join(sorted(known)) or "none"
                problems.append(
                    f"subflow {node.name!r}: unknown workflow {node.workflow_id!r} "
                    f"(defined: {hint})"
                )
    if not spec.block:
        problems.append("has no steps")
    if problems:
        raise GraphError(problems, spec.id)
    return _Compiler(spec).plan()


class _Compiler:
    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.names: list[str] = []
        self.specs: list[Any] = []
        self.kind: list[int] = []
        self.scope: list[int] = []
        self.succ: list[list[int]] = []
        self.join: list[int] = []
        self.join_mode: list[int] = []
        self.arms: list[list[tuple[int, int, int, int]]] = []  # (entry, lo, hi, result)
        self.body: list[int] = []
        self.limit: list[int] = []
        self.parent_arm: list[int] = []
        self.race_of: list[int] = []
        self.race_arm: list[int] = []
        self.last_source: list[int] = []
        self.scope_first: list[int] = []
        self.scope_size: list[int] = []
        self.scope_entry: list[int] = []
        self.scope_exit: list[int] = []
        self.scope_result: list[int] = []
        self.scope_owner: list[int] = []
        self.bodies: list[tuple[tuple[NodeSpec, ...], int]] = []

    def plan(self) -> Plan:
        self._scope(self.spec.block, -1)
        while self.bodies:  # bodies get scopes after the scope that holds them is complete
            block, owner = self.bodies.pop(0)
            self._scope(block, owner)
        succ_start, succ = _csr(self.succ)
        arm_start = [0]
        arm_entry: list[int] = []
        arm_lo: list[int] = []
        arm_hi: list[int] = []
        arm_result: list[int] = []
        for arms in self.arms:
            for entry, lo, hi, result in arms:
                arm_entry.append(entry)
                arm_lo.append(lo)
                arm_hi.append(hi)
                arm_result.append(result)
            arm_start.append(len(arm_entry))
        index = {n: i for i, n in enumerate(self.names) if self.kind[i] != K_JOIN}
        return Plan(
            workflow_id=self.spec.id,
            shape=self.spec.shape,
            names=tuple(self.names),
            specs=tuple(self.specs),
            kind=self.kind,
            scope=self.scope,
            succ_start=succ_start,
            succ=succ,
            join=self.join,
            join_mode=self.join_mode,
            arm_start=arm_start,
            arm_entry=arm_entry,
            arm_lo=arm_lo,
            arm_hi=arm_hi,
            arm_result=arm_result,
            body=self.body,
            limit=self.limit,
            parent_arm=self.parent_arm,
            race_of=self.race_of,
            race_arm=self.race_arm,
            last_source=self.last_source,
            scope_first=self.scope_first,
            scope_size=self.scope_size,
            scope_entry=self.scope_entry,
            scope_exit=self.scope_exit,
            scope_result=self.scope_result,
            scope_owner=self.scope_owner,
            index=index,
        )

    def _scope(self, block: tuple[NodeSpec, ...], owner: int) -> None:
        sid = len(self.scope_first)
        first = len(self.names)
        self.scope_first.append(first)
        entry, exit_, result = self._seq(block, sid, -1, -1, -1, _PASS)
        self.scope_size.append(len(self.names) - first)
        self.scope_entry.append(entry)
        self.scope_exit.append(exit_)
        self.scope_result.append(-1 if result == _PASS else result)
        self.scope_owner.append(owner)
        if owner >= 0:
            self.body[owner] = sid

    def _seq(
        self,
        block: tuple[NodeSpec, ...],
        sid: int,
        parent_arm: int,
        race_of: int,
        race_arm: int,
        last: int,
    ) -> tuple[int, int, int]:
        """Lay out a sequence; return (first node, exit node, result source)."""
        first = prev = -1
        for spec in block:
            node, exit_ = self._node(spec, sid, parent_arm, race_of, race_arm, last)
            if prev >= 0:
                self.succ[prev].append(node)
            if first < 0:
                first = node
            prev = exit_
            if not _transparent(spec):
                last = node
        return first, prev, last

    def _new(
        self,
        name: str,
        spec: Any,
        kind: int,
        sid: int,
        parent_arm: int,
        race_of: int,
        race_arm: int,
        last: int,
    ) -> int:
        node = len(self.names)
        self.names.append(name)
        self.specs.append(spec)
        self.kind.append(kind)
        self.scope.append(sid)
        self.succ.append([])
        self.join.append(-1)
        self.join_mode.append(0)
        self.arms.append([])
        self.body.append(-1)
        self.limit.append(0)
        self.parent_arm.append(parent_arm)
        self.race_of.append(race_of)
        self.race_arm.append(race_arm)
        self.last_source.append(-1 if last == _PASS else last)
        return node

    def _node(
        self,
        spec: NodeSpec,
        sid: int,
        parent_arm: int,
        race_of: int,
        race_arm: int,
        last: int,
    ) -> tuple[int, int]:
        """Lay out one node; return (node, exit): a composite's exit is its join."""
        new = self._new
        if isinstance(spec, StepSpec):
            kind = K_ACTION if spec.kind == "action" else K_STEP
            node = new(spec.name, spec, kind, sid, parent_arm, race_of, race_arm, last)
            return node, node
        if isinstance(spec, SubflowSpec | SleepSpec | CancelSpec | WaitSpec):
            kind = {
                SubflowSpec: K_SUBFLOW,
                SleepSpec: K_SLEEP,
                CancelSpec: K_CANCEL,
                WaitSpec: K_WAIT,
            }[type(spec)]
            node = new(spec.name, spec, kind, sid, parent_arm, race_of, race_arm, last)
            return node, node
        if isinstance(spec, WhileSpec | ForEachSpec):
            if isinstance(spec, WhileSpec):
                kind, limit = K_WHILE, spec.max_iterations
            elif spec.size is not None:
                kind, limit = K_BATCH, 1
            else:
                kind, limit = K_FOR_EACH, spec.concurrency
            node = new(spec.name, spec, kind, sid, parent_arm, race_of, race_arm, last)
            self.limit[node] = limit
            self.bodies.append((spec.body, node))
            return node, node
        # branch, parallel, race: composite, arms, join
        if isinstance(spec, BranchSpec):
            kind, mode = K_BRANCH, J_ONE
        elif spec.race:
            kind, mode = K_RACE, J_FIRST
        else:
            kind, mode = K_PARALLEL, J_ALL
        comp = new(spec.name, spec, kind, sid, parent_arm, race_of, race_arm, last)
        ends: list[int] = []
        arms: list[tuple[int, int, int, int]] = []
        for i, arm in enumerate(spec.arms):
            inner_race, inner_arm = (comp, i) if kind == K_RACE else (race_of, race_arm)
            lo = len(self.names)
            # An arm sees the composite's input as ctx.last; if none of its nodes produces an
            # output, that input passes through as the arm's result.
            a_first, a_exit, a_result = self._seq(arm.block, sid, i, inner_race, inner_arm, last)
            hi = len(self.names)
            arms.append((a_first, lo, hi, -1 if a_result == last else a_result))
            ends.append(a_exit)
        join = new(f"{spec.name}#join", None, K_JOIN, sid, parent_arm, race_of, race_arm, -1)
        self.join[comp] = join
        self.join[join] = comp
        self.join_mode[join] = mode
        self.arms[comp] = [(e if e >= 0 else join, lo, hi, r) for e, lo, hi, r in arms]
        for end in ends:
            if end >= 0:
                self.succ[end].append(join)
        return comp, join


def _transparent(spec: NodeSpec) -> bool:
    """Nodes that leave ``ctx.last`` as it was: actions, sleeps, cancels."""
    if isinstance(spec, StepSpec):
        return spec.kind == "action"
    return isinstance(spec, SleepSpec | CancelSpec)


def _csr(lists: list[list[int]]) -> tuple[list[int], list[int]]:
    start = [0]
    flat: list[int] = []
    for items in lists:
        flat.extend(items)
        start.append(len(flat))
    return start, flat
