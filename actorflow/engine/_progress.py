"""``RunHandle.result(progress=True)``: a progress bar per fan-out while a run goes on."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from actorflow._extras import require
from actorflow.errors import ResultTimeout

if TYPE_CHECKING:
    from actorflow.engine._handle import RunHandle

__all__ = ["FanoutBars", "result_with_progress"]

#: Seconds between two readings of the run's fan-out counts.
_POLL = 0.25


class FanoutBars:
    """Rich progress bars, one per fan-out of a run, drawn on stderr (a context manager)."""

    def __init__(self, label: str) -> None:
        feature = "progress bars (result(progress=True), actorflow wait without --no-progress)"
        console = require("rich.console", feature)
        bars = require("rich.progress", feature)

        self._label = label
        self._tasks: dict[str, Any] = {}
        self._bar = bars.Progress(
            "[progress.description]{task.description}",
            bars.BarColumn(),
            bars.MofNCompleteColumn(),
            bars.TimeElapsedColumn(),
            console=console.Console(stderr=True),
            transient=False,
        )

    def __enter__(self) -> FanoutBars:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def update(self, fans: list[dict[str, Any]]) -> None:
        """Redraw from ``fanout_progress`` entries (new fan-outs get a new bar)."""
        for fan in fans:
            done = fan["succeeded"] + fan["failed"] + fan["cancelled"]
            task = self._tasks.get(fan["path"])
            if task is None:
                what = f"{self._label} {fan['path']} ({fan['kind']})"
                task = self._tasks[fan["path"]] = self._bar.add_task(what, total=fan["total"])
            self._bar.update(task, completed=done, total=fan["total"])


def result_with_progress(handle: RunHandle, timeout: float | None) -> Any:
    """Wait for the run like ``result()``, drawing its fan-outs' progress on stderr."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with FanoutBars(handle.workflow_id) as bars:
        current = handle.id
        while True:
            fut, finished, value, latest = handle._look(current)
            bars.update(handle.progress())
            if finished:
                return value
            if latest != current:
                current = latest
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
