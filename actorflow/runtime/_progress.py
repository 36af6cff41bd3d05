"""``RunHandle.result(progress=True)``: a progress bar per fan-out while a run goes on."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from actorflow.errors import ResultTimeout

if TYPE_CHECKING:
    from actorflow.runtime._handle import RunHandle

__all__ = ["result_with_progress"]

#: Seconds between two readings of the run's fan-out counts.
_POLL = 0.25


def result_with_progress(handle: RunHandle, timeout: float | None) -> Any:
    """Wait for the run like ``result()``, drawing its fan-outs' progress on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    bars: dict[str, Any] = {}
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:

        def update() -> None:
            for fan in handle.progress():
                done = fan["succeeded"] + fan["failed"] + fan["cancelled"]
                task = bars.get(fan["path"])
                if task is None:
                    what = f"{handle.workflow_id} {fan['path']} ({fan['kind']})"
                    task = bars[fan["path"]] = bar.add_task(what, total=fan["total"])
                bar.update(task, completed=done, total=fan["total"])

        while True:
            current = handle._latest()
            fut = handle._engine._watch(current)
            finished, value, latest = handle._outcome()
            update()
            if finished:
                return value
            if latest != current:
                continue
            wait = _POLL
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise ResultTimeout(
                        f"run {handle.id} did not finish within {timeout:g}s (it goes on)"
                    )
            try:
                fut.result(wait)
            except TimeoutError:
                pass
