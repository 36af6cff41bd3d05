"""The task a Ray worker runs for the engine (``runtime/dispatch/_ray.py`` sends it).

What the step asks of the engine goes over the callback link (``workers/_link.py``).
"""

from __future__ import annotations

from typing import Any

from actorflow.workers._link import run_remote

__all__ = ["run_task"]


def _worker_name() -> str:
    """This Ray worker's node and worker ids (``node:worker``), for the record."""
    try:
        import ray

        ctx = ray.get_runtime_context()
        return f"{ctx.get_node_id()[:12]}:{ctx.get_worker_id()[:12]}"
    except Exception:
        return "ray"


def run_task(task: tuple[Any, ...]) -> tuple[bool, Any, float, float] | None:
    """Run one step on a Ray worker (see :func:`~actorflow.workers._link.run_remote`)."""
    return run_remote(task, _worker_name())
