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
from actorflow.runtime._messages import ErrorInfo
from actorflow.runtime._nodes import error_info
from actorflow.store import _keys as K
from actorflow.store._protocol import Store
from actorflow.store._records import load_record

__all__ = ["refuse_child", "run_depth"]

#: Most parent links followed (a damaged store could hold a loop of them).
_MAX_LINKS = 100_000


def _parent_record(store: Store, parent: Any) -> dict[str, Any] | None:
    if not parent:
        return None
    raw = store.get(K.RUNS, K.run_key(str(parent[0])))
    return load_record(raw, f"run {parent[0]}") if raw is not None else None


def run_depth(store: Store, rec: dict[str, Any]) -> int:
    """The depth of the run whose record is ``rec`` (0 for a top-level run)."""
    depth = rec.get("depth")
    if isinstance(depth, int):
        return depth
    # Written by a release before depths: count the parent links up to a run that knows.
    link, n = rec.get("parent"), 0
    while link and n < _MAX_LINKS:
        n += 1
        parent = _parent_record(store, link)
        if parent is None:
            break  # the parent's record is gone (deleted): count the links known
        known = parent.get("depth")
        if isinstance(known, int):
            return n + known
        link = parent.get("parent")
    return n


def _ancestry(store: Store, parent: Any, most: int) -> list[str]:
    """Workflow ids of the runs above a run, the top-level run's first."""
    chain: list[str] = []
    rec = _parent_record(store, parent)
    while rec is not None and len(chain) < most:
        chain.append(str(rec.get("workflow")))
        rec = _parent_record(store, rec.get("parent"))
    return chain[::-1]


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
    chain = [*_ancestry(sup.core.store, sup.parent, depth), sup.workflow_id, workflow]
    return error_info(RunDepthExceeded(step, limit, depth, chain, sup.run_id))
