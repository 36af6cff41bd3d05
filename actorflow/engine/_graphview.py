"""A workflow's graph as plain data, for the dashboard to draw.

Nodes are the plan's nodes (joins included: they are where arms meet); edges are of three
kinds: ``next`` (sequence within a scope, and an arm's end to its join), ``arm`` (a branch,
parallel or race to the first node of each arm, labelled with the arm's name) and ``body``
(a while, for_each or batch to the first node of its body). A code workflow has no plan:
its graph is drawn from the steps its runs recorded.
"""

from __future__ import annotations

from typing import Any

from actorflow.graph._codes import KIND_NAMES

__all__ = ["plan_graph"]


def plan_graph(plan: Any) -> dict[str, Any]:
    """``{"nodes": [...], "edges": [...]}`` of a compiled plan."""
    nodes = []
    for i, name in enumerate(plan.names):
        scope = plan.scope[i]
        nodes.append(
            {
                "id": i,
                "name": name,
                "kind": KIND_NAMES[plan.kind[i]],
                "scope": scope,
                "owner": plan.scope_owner[scope],  # the loop whose body holds it, or -1
            }
        )
    edges: list[dict[str, Any]] = []
    for i in range(plan.size):
        for j in plan.succ[plan.succ_start[i] : plan.succ_start[i + 1]]:
            edges.append({"from": i, "to": j, "type": "next"})
        arms = getattr(plan.specs[i], "arms", None) or ()
        for a, k in enumerate(range(plan.arm_start[i], plan.arm_start[i + 1])):
            label = getattr(arms[a], "name", str(a)) if a < len(arms) else str(a)
            edges.append({"from": i, "to": plan.arm_entry[k], "type": "arm", "label": label})
        if plan.body[i] >= 0:
            edges.append({"from": i, "to": plan.scope_entry[plan.body[i]], "type": "body"})
    return {"workflow": plan.workflow_id, "nodes": nodes, "edges": edges}
