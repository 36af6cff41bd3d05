"""Static subflow cycles: workflows that would start each other without end.

A graph workflow names its subflows' workflows in its definition, so a recursion that no
decision of the workflow can stop is visible before any run: each run of the cycle is
certain to start the next. Such cycles are refused when the engine compiles its workflows.

A subflow is *certain* when nothing in its own workflow decides whether it starts: it is at
the workflow's top level, or in a ``parallel`` arm (all arms run), and no ``cancel`` comes
before it. A subflow in an ``if_`` arm, a ``while_`` / ``for_each`` / ``batch`` body or a
``race`` arm (another arm may win first) is conditional: a cycle through one may end (a tree
walk, a countdown), so it is allowed, and ``max_run_depth`` bounds it at run time. Code
workflows start children from code: what they start is not known here, and the depth limit
is their guard too.
"""

from __future__ import annotations

from collections.abc import Mapping

from actorflow.definition._spec import (
    CancelSpec,
    NodeSpec,
    ParallelSpec,
    SubflowSpec,
    WorkflowSpec,
    walk,
)
from actorflow.errors import GraphError

__all__ = ["certain_subflows", "check_subflow_cycles", "subflow_targets"]


def subflow_targets(spec: WorkflowSpec) -> list[str]:
    """The workflows ``spec``'s subflows name, conditional or not, in definition order."""
    return [n.workflow_id for n in walk(spec.block) if isinstance(n, SubflowSpec)]


def certain_subflows(block: tuple[NodeSpec, ...]) -> list[SubflowSpec]:
    """The subflows of ``block`` that start whenever the run gets that far."""
    found: list[SubflowSpec] = []
    for node in block:
        if isinstance(node, CancelSpec):
            break  # the run ends here: nothing after it starts
        if isinstance(node, SubflowSpec):
            found.append(node)
        elif isinstance(node, ParallelSpec) and not node.race:
            for arm in node.arms:
                found.extend(certain_subflows(arm.block))
    return found


def check_subflow_cycles(specs: Mapping[str, WorkflowSpec], first: str | None = None) -> None:
    """Refuse cycles of certain subflows among ``specs`` (graph workflows by id).

    Targets outside ``specs`` (code workflows, unknown ids) end a path: a code workflow's
    children are not known statically, and unknown ids are reported by ``compile_plan``.
    Each cycle found is reported once, from its first workflow in id order (``first`` before
    the others); a cycle that shares a workflow with a reported one may show only once that
    one is fixed.

    Raises:
        GraphError: one problem per cycle, naming its workflows and the subflows that close it.
    """
    edges: dict[str, list[tuple[str, str]]] = {}  # workflow -> [(target, subflow name)]
    for wid in sorted(specs):
        edges[wid] = [
            (s.workflow_id, s.name)
            for s in certain_subflows(specs[wid].block)
            if s.workflow_id in specs
        ]
    order = sorted(edges, key=lambda wid: (wid != first, wid))
    cycles: list[list[tuple[str, str]]] = []
    done: set[str] = set()  # on no cycle, or on one already reported
    for start in order:
        if start in done:
            continue
        cycle = _cycle_from(start, edges, done)
        if cycle is not None:
            cycles.append(cycle)
            done.update(wid for wid, _ in cycle)
        done.add(start)
    if cycles:
        raise GraphError(
            [_describe(c) for c in cycles], cycles[0][0][0] if len(cycles) == 1 else None
        )


def _cycle_from(
    start: str, edges: Mapping[str, list[tuple[str, str]]], done: set[str]
) -> list[tuple[str, str]] | None:
    """A shortest cycle back to ``start`` as [(workflow, subflow it starts the next with)]."""
    # Breadth first, so the cycle reported is the shortest one (w -> w before w -> x -> w).
    came: dict[str, tuple[str, str]] = {}  # workflow -> (previous workflow, subflow name)
    frontier = [start]
    while frontier:
        following: list[str] = []
        for wid in frontier:
            for target, name in edges[wid]:
                if target == start:
                    path = [(wid, name)]
                    while wid != start:
                        wid, step = came[wid]
                        path.append((wid, step))
                    return path[::-1]
                if target in done or target in came:
                    continue
                came[target] = (wid, name)
                following.append(target)
        frontier = following
    return None


def _describe(cycle: list[tuple[str, str]]) -> str:
    names = " -> ".join([wid for wid, _ in cycle] + [cycle[0][0]])
    steps = ", ".join(f"subflow {name!r} of {wid!r}" for wid, name in cycle)
    return (
        f"subflow cycle: {names} ({steps}): each run would start the next without end; "
        "put one of these subflows under a condition (an if_ arm) or loop with a while_, "
        "or use a code workflow with continue_as_new"
    )
