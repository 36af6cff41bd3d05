"""What each step function costs per item, following its recent calls.

Data flow: the dispatcher core observes every finished task (:meth:`CostBook.observe`, on
its thread: the only writer), a chunk as its seconds per item times its items; the graph
supervisors read the estimate to size chunks of tiny item steps (``_graph_dispatch``), and
the process pool reads it to decide how many short tasks a worker gets queued ahead. Reads
are plain dict lookups, atomic under the GIL, from the shards' threads.

Why it decays by items and jumps up: an estimate learnt from a few fast calls must not
outlive them. Before, each task moved a per-call average by a fifth, whatever it held: after
two 0.1 ms warm-up calls a function of 20 ms items went in chunks of 5-50 (up to 1 s of work
per chunk, against a 20 ms budget) for several rounds, and across runs. Now an observation
weighs as many calls as it holds items, with a half-life of :data:`HALF_LIFE_ITEMS`, so one
returned chunk of 50 items all but replaces the estimate; and an observation at least
:data:`JUMP` times the estimate replaces it at once (a chunk that overran its budget is not
sized the same way twice). Coming down is gradual, so a few fast items cannot make chunks
large again. The first chunks of a step in each run are small as well, and a chunk holds at
most twice the items of the largest that came back whole (``supervision/_chunking.py``): a
run does not trust what another run taught until its own reports say so.
"""

from __future__ import annotations

__all__ = ["HALF_LIFE_ITEMS", "JUMP", "CostBook"]

#: After this many items observed, an older estimate counts for half.
HALF_LIFE_ITEMS = 8.0
#: An observation this many times the estimate (or more) replaces it.
JUMP = 2.0


class CostBook:
    """Seconds per item of each step function (by its key), following recent calls."""

    __slots__ = ("_seconds",)

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def observe(self, key: str, seconds: float, items: int = 1) -> None:
        """A task of ``items`` items of function ``key`` took ``seconds`` per item."""
        if seconds < 0 or items < 1:
            return  # a clock that stepped back, or nothing ran: nothing learnt
        old = self._seconds.get(key)
        if old is None or seconds >= JUMP * old:
            self._seconds[key] = seconds
            return
        weight = 1.0 - 0.5 ** (items / HALF_LIFE_ITEMS)
        self._seconds[key] = old + weight * (seconds - old)

    def get(self, key: str) -> float | None:
        """The estimate for ``key`` in seconds per item, or None before its first call."""
        return self._seconds.get(key)

    def set(self, key: str, seconds: float) -> None:
        """Take ``seconds`` per item as the estimate for ``key`` (tests, and a tuned value)."""
        self._seconds[key] = seconds

    def __len__(self) -> int:
        return len(self._seconds)
