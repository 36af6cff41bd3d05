"""Counting for the metrics, without locks, where the work is.

Each shard counts the runs it starts and finishes and times the steps it hears about, and the
store writer times its commits, each in objects only its own thread writes. A scrape
(``observability/_metrics.py``) merges them: reads of ints and lists are safe under the GIL,
and a scrape racing an update may be one count behind, never corrupt.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

__all__ = ["BATCH_BUCKETS", "COMMIT_BUCKETS", "STEP_BUCKETS", "Counts", "Histogram"]

#: Step durations, in seconds (from a step's start in its worker to its end).
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Commit durations, in seconds.
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
#: Writes (messages) per commit.
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0)


class Histogram:
    """Bucket counts of one series, written by one thread only.

    Args:
        buckets: upper bounds, ascending.
    """

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one value."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Counts:
    """What one shard counted: runs started and finished, step outcomes and durations."""

    __slots__ = ("finished", "started", "steps", "timings")

    def __init__(self) -> None:
        self.started: dict[str, int] = {}  # workflow -> runs started
        self.finished: dict[tuple[str, str], int] = {}  # (workflow, status) -> runs
        self.steps: dict[tuple[str, str], int] = {}  # (workflow, outcome) -> attempts
        self.timings: dict[tuple[str, str], Histogram] = {}  # (workflow, step) -> durations

    def run_started(self, workflow: str) -> None:
        """A run began (admitted or queued)."""
        self.started[workflow] = self.started.get(workflow, 0) + 1

    def run_finished(self, workflow: str, status: str) -> None:
        """A run ended with ``status``."""
        key = (workflow, status)
        self.finished[key] = self.finished.get(key, 0) + 1

    def step_ended(
        self, workflow: str, path: str, outcome: str, started: float | None, ended: float | None
    ) -> None:
        """A step attempt ended (``succeeded``, ``error``, ``timeout``, ``crash``...).

        On the shard's hottest path (once per item of a fan-out): kept to a few dict
        operations and one bisect.
        """
        key = (workflow, outcome)
        steps = self.steps
        steps[key] = steps.get(key, 0) + 1
        if started is None or ended is None:
            return
        if "[" in path:  # an item of a fan-out: one series per node, not per item
            path = _INDEX.sub("", path)
        tkey = (workflow, path)
        hist = self.timings.get(tkey)
        if hist is None:
            hist = self.timings[tkey] = Histogram(STEP_BUCKETS)
        value = ended - started
        if value < 0.0:
            value = 0.0
        hist.counts[bisect.bisect_left(hist.buckets, value)] += 1
        hist.sum += value
        hist.count += 1


_INDEX = re.compile(r"\[\d+\]")
