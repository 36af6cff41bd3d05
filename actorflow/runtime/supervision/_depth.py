"""Run depth: how far below a top-level run a run is, and the limit on it.

A top-level run (a trigger, a schedule, a webhook) has depth 0; a child run (a graph
subflow, a code workflow's ``ctx.child``) its parent's depth + 1. A run's depth is recorded
in its run record when it is not 0, so it holds across restarts: it comes from the store,
never from memory. Records written before depths were recorded have only the parent link;
their depth is counted along the links (once, when such a run is loaded or inspected).

Before a run starts a child, :func:`refuse_child` compares the child's depth with
``max_run_depth``: past it the child is not started and the step fails with
:class:`~actorflow.errors.RunDepthExceeded`, a deterministic error that is never retried.
"""

from __future__ import annotations

from typing import Any

from actorflow.errors import RunDepthExceeded
from actorflow.runtime.kernel._messages import ErrorInfo
from actorflow.runtime.supervision._nodes import error_info
from actorflow.views import ancestry

__all__ = ["refuse_child"]


def refuse_child(sup: Any, step: str, workflow: str) -> ErrorInfo | None:
    """Why ``sup``'s run may not start a child of ``workflow`` at ``step``, or None.

    ``sup`` is a graph or code supervisor (``core``, ``depth``, ``parent``, ``run_id``,
    ``workflow_id``).
    """
    limit = sup.core.config.max_run_depth
    depth = sup.depth + 1
    if not limit or depth <= limit:
        return None
    # Read only on refusal: the parents' records are durable (a child starts after them).
    chain = [*ancestry(sup.core.store, sup.parent, depth), sup.workflow_id, workflow]
    return error_info(RunDepthExceeded(step, limit, depth, chain, sup.run_id))
