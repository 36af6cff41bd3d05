"""The task a Dask worker runs for the engine (``runtime/dispatch/_dask.py`` sends it).

What the step asks of the engine goes over the callback link (``workers/_link.py``).
"""

from __future__ import annotations

from typing import Any

from actorflow.workers._link import run_remote

__all__ = ["run_task"]


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:
        return ""


def run_task(task: tuple[Any, ...]) -> tuple[bool, Any, float, float] | None:
    """Run one step on a Dask worker (see :func:`~actorflow.workers._link.run_remote`)."""
    return run_remote(task, _worker_address())
