"""Compile a workflow spec into a :class:`Plan`.

For now a workflow is a sequence: node i's only successor is node i + 1. The plan format is
already the general one (CSR edges, predecessor counts) that control flow will extend.
"""

from __future__ import annotations

from array import array

from actorflow.definition._spec import WorkflowSpec
from actorflow.errors import GraphError
from actorflow.graph._codes import KIND_ACTION, KIND_STEP
from actorflow.graph._plan import Plan

__all__ = ["compile_plan"]


def compile_plan(spec: WorkflowSpec) -> Plan:
    """Turn a validated spec into a plan.

    Raises:
        GraphError: listing every structural problem.
    """
    problems: list[str] = []
    names = tuple(s.name for s in spec.steps)
    if not names:
        problems.append("has no steps")
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            problems.append(f"duplicate node name {name!r}")
        index[name] = i
    if problems:
        raise GraphError(problems, spec.id)

    n = len(names)
    kinds = bytes(KIND_ACTION if s.kind == "action" else KIND_STEP for s in spec.steps)
    succ_start = array("i", [min(i, n - 1) for i in range(n + 1)])
    succ = array("i", range(1, n))
    pred_count = array("i", [0] + [1] * (n - 1))
    last_source = array("i")
    last = -1
    for i, kind in enumerate(kinds):
        last_source.append(last)
        if kind == KIND_STEP:
            last = i
    return Plan(
        workflow_id=spec.id,
        fingerprint=spec.fingerprint,
        names=names,
        kinds=kinds,
        succ_start=succ_start,
        succ=succ,
        pred_count=pred_count,
        roots=array("i", [0]),
        last_source=last_source,
        result_node=last,
        index=index,
    )
