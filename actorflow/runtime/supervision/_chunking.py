"""How a fan-out's tiny item steps go out: how large each chunk, how many tasks at once.

Data flow: a graph run holds the fresh items of a chunkable step (``_graph_dispatch``);
each write it sends some of them: as many tasks, of as many items each, as its step's
:class:`Window` says (:meth:`Window.next`, from the dispatcher's cost estimate in
``kernel/_costs.py``); each task that comes back frees its place (:meth:`Window.back`),
and a chunk that came back whole lets the next ones be larger.

Why a window and a cap, and not every item at once: the estimate is a guess from a few
calls, and every item sent is sized by the guess of the moment. Before, the first sized
round sent all remaining items at once: one probe item whose worker was preempted for 15 ms
made 5,000 items of 0.1 ms go as 1,000 tasks of five, and a fast probe of a slow step made
chunks of a second or more. Now at most :data:`WINDOW_PER_WORKER` tasks per worker are out
for a step, so each report corrects the size of the next tasks; and a chunk holds at most
twice the items of the largest one that came back whole (from :data:`FIRST_CHUNK`), so a
wrong low estimate costs one small chunk's overrun before the reports correct it. While
that cap binds, only :data:`RAMP_PER_WORKER` tasks per worker are out, so it doubles in a
few round trips. (TCP's slow start, for the same reason: learn the capacity from what came
back.)
"""

from __future__ import annotations

__all__ = [
    "CHUNK_MAX",
    "FIRST_CHUNK",
    "RAMP_PER_WORKER",
    "WINDOW_PER_WORKER",
    "Window",
    "chunk_size",
]

#: Chunking of tiny item steps: a chunk aims at ``chunk_budget`` of work in its worker
#: (20 ms by default), holds at most this many items...
CHUNK_MAX = 512
#: ...and only steps that take at most this share of the budget are chunked: above it,
#: per-task overhead is already small. (1 ms items sent one by one run at ~0.75 of
#: Pool.map's efficiency on 2 cores; in chunks of ~20 ms, at ~0.93: bench B11.)
_CHUNK_COST_SHARE = 0.2
#: A step's first chunks in each run hold at most this many items, until one reports: an
#: estimate another run left (or that a few fast calls gave) costs at most this many items'
#: worth of a slow step before it is corrected (kernel/_costs.py).
FIRST_CHUNK = 4
#: A step's held items have at most this many tasks per worker out at once: enough that
#: each worker's queue stays full while the reports of the earlier ones travel back and
#: wait to share a commit (up to 50 ms), few enough that the estimate is corrected long
#: before a large fan-out is all sent. (With 8, 10 ms items cost the head ~100 us more per
#: item: the dispatcher's queue ran dry between commits, so reports could not wait to
#: share one and commits went from 105 to 173 per 1,000 items.)
WINDOW_PER_WORKER = 32
#: ...and at most this many while chunks are still growing (see ``Window.next``)...
RAMP_PER_WORKER = 2
#: ...and they go out once a quarter of the window is free (or all that is left fits), so
#: that each refill is one batch, not one task per report.
_REFILL_SHARE = 4


def chunk_size(cost: float, ready: int, workers: int, budget: float = 0.02) -> int:
    """How many items of a step that takes ``cost`` seconds go in one task (1: no chunking).

    Enough items that the per-task overhead (a record, a message, a pipe frame: tens of
    microseconds) is small next to the work (about ``budget`` seconds of it, the engine's
    ``chunk_budget``), few enough that every worker gets at least two chunks of the
    ``ready`` items (those to send and those out in chunks) and a lost chunk costs little
    to run again.
    """
    if cost > budget * _CHUNK_COST_SHARE:
        return 1
    return max(1, min(CHUNK_MAX, int(budget / max(cost, 1e-6)), -(-ready // (2 * workers))))


class Window:
    """One step's held items in one run: the tasks out, and the largest chunk allowed.

    Examples:
        >>> w = Window()
        >>> w.next(0.0001, ready=10_000, workers=2, budget=0.02)  # the estimate says 200
        (4, 4)
        >>> w.sent(1); w.back(4)  # a chunk of four came back whole: chunks of eight now
        >>> w.next(0.0001, ready=10_000, workers=2, budget=0.02)
        (4, 8)
        >>> w.next(0.01, ready=10_000, workers=2, budget=0.02)  # 10 ms items go alone
        (64, 1)
    """

    __slots__ = ("cap", "out")

    def __init__(self) -> None:
        self.cap = FIRST_CHUNK  # the most items one chunk may hold now
        self.out = 0  # tasks sent from the held items and not yet back

    def next(self, cost: float | None, ready: int, workers: int, budget: float) -> tuple[int, int]:
        """How many tasks go out now, and how many items each holds (0 tasks: wait).

        ``ready`` is the items held and those out in chunks. Each task holds what
        :func:`chunk_size` says for the estimated ``cost`` (1 while it is unknown), at most
        the cap. While the cap binds (the estimate says larger chunks than any that came
        back whole), at most ``RAMP_PER_WORKER`` tasks per worker are out, so the cap
        doubles in a few round trips instead of the window filling with small chunks; else
        the whole window. Tasks go once a quarter of that is free, or all that is left fits.
        """
        wanted = 1 if cost is None else chunk_size(cost, ready, workers, budget)
        size = min(self.cap, wanted)
        limit = (WINDOW_PER_WORKER if size == wanted else RAMP_PER_WORKER) * workers
        room = limit - self.out
        left = -(-ready // size)
        return (room if room >= min(left, limit // _REFILL_SHARE) and room > 0 else 0), size

    def sent(self, tasks: int) -> None:
        """``tasks`` more tasks went out."""
        self.out += tasks

    def back(self, whole: int = 0) -> None:
        """A task is back: reported, aborted or split.

        Args:
            whole: the items of a chunk that came back with every item reported (0 for
                anything else), which lets the next chunks grow to twice that.
        """
        self.out -= 1
        if 2 * whole > self.cap:
            self.cap = min(CHUNK_MAX, 2 * whole)
