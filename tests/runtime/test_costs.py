"""The cost estimate that sizes chunks follows recent calls and cannot be poisoned.

Before, a few fast calls taught a per-call average that moved by a fifth per task: after two
0.1 ms warm-up items, a function of 20 ms items went in chunks of 5-50 (up to 1 s of work
against a 20 ms budget) for several rounds, and in the next run too. The estimator is fed
here by a simulated worker (each item's cost is given, so nothing depends on this machine's
speed), and through a real engine whose tasks are counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import actorflow as af
from actorflow.definition import function_ref
from actorflow.runtime.kernel._costs import HALF_LIFE_ITEMS, CostBook
from actorflow.runtime.supervision._chunking import (
    CHUNK_MAX,
    FIRST_CHUNK,
    RAMP_PER_WORKER,
    WINDOW_PER_WORKER,
    Window,
    chunk_size,
)
from tests import steps

BUDGET = 0.02  # what chunk_size aims a chunk at


def simulate(
    book: CostBook, costs: Sequence[float], workers: int = 2, budget: float = BUDGET
) -> list[float]:
    """Send ``costs`` (seconds per item) as the supervisor does, on a simulated pool.

    The step's :class:`Window` decides, as in ``_graph_dispatch``: the first tasks of a run
    (one per worker) go first and the rest wait for one of them to report; then, after each
    report, as many tasks as the window has room for, sized from the estimate as it is at
    that moment. Reports come back in the order sent; each one's seconds per item go back
    into the book. Returns each task's work.
    """
    window = Window()
    out: deque[list[float]] = deque()  # tasks in flight, oldest first
    works: list[float] = []
    i = 0
    while i < len(costs) or out:
        ready = len(costs) - i + sum(len(t) for t in out if len(t) > 1)
        room, size = window.next(book.get("f"), ready, workers, budget)
        if i < len(costs) and room > 0 and (works or not out):
            for _ in range(room if works else min(room, workers)):
                task = list(costs[i : i + size])
                if not task:
                    break
                i += len(task)
                out.append(task)
                window.sent(1)
        task = out.popleft()
        work = sum(task)
        works.append(work)
        book.observe("f", work / len(task), len(task))
        window.back(len(task) if len(task) > 1 else 0)
    return works


def test_the_window_bounds_the_tasks_out_and_grows_chunks_from_what_came_back() -> None:
    window = Window()
    full, ramp = WINDOW_PER_WORKER * 2, RAMP_PER_WORKER * 2
    assert window.next(None, 10_000, 2, BUDGET) == (full, 1)  # cost unknown: alone
    assert window.next(0.01, 10_000, 2, BUDGET) == (full, 1)  # 10 ms: alone as well
    # 0.1 ms: the estimate says 200 per chunk, but none came back yet: few chunks of four.
    assert window.next(1e-4, 10_000, 2, BUDGET) == (ramp, FIRST_CHUNK)
    window.sent(ramp)
    assert window.next(1e-4, 10_000, 2, BUDGET) == (0, FIRST_CHUNK)  # full: wait
    window.back(FIRST_CHUNK)  # a chunk of four came back whole: eight now
    assert window.next(1e-4, 10_000, 2, BUDGET) == (1, 2 * FIRST_CHUNK)
    for _ in range(20):
        window.sent(1)
        window.back(window.next(1e-6, 10**6, 2, BUDGET)[1])
    assert window.next(1e-6, 10**6, 2, BUDGET) == (full - ramp + 1, CHUNK_MAX)  # grown
    # Grown, the window is whole; it refills once a quarter of it is free.
    window.sent(full - ramp + 1)
    assert window.out == full
    for _ in range(full // 4 - 1):
        window.back()  # singles (or split chunks) back: no growth
    assert window.next(1e-6, 10**6, 2, BUDGET) == (0, CHUNK_MAX)  # not one by one
    window.back()
    assert window.next(1e-6, 10**6, 2, BUDGET) == (full // 4, CHUNK_MAX)
    assert window.next(1e-6, CHUNK_MAX, 2, BUDGET)[0] == full // 4  # what is left fits
    assert window.next(0.001, 10**6, 2, BUDGET)[1] == int(BUDGET / 0.001)  # the estimate rules


def test_an_observation_weighs_as_many_calls_as_it_holds_items() -> None:
    book = CostBook()
    book.observe("f", 0.010)
    book.observe("f", 0.006, items=1)  # one call: moves the estimate a little
    one = book.get("f")
    assert one is not None and 0.009 < one < 0.010
    book.observe("f", 0.006, items=int(HALF_LIFE_ITEMS))  # a half-life of calls: half-way
    half = book.get("f")
    assert half is not None and abs(half - (one + 0.006) / 2) < 1e-9
    book.observe("f", 0.001, items=500)  # a large chunk all but replaces it
    assert abs((book.get("f") or 0) - 0.001) < 1e-6


def test_a_much_slower_call_replaces_the_estimate_at_once() -> None:
    book = CostBook()
    book.observe("f", 0.0001, items=100)
    book.observe("f", 0.020)  # a slow item after many fast ones
    assert book.get("f") == 0.020  # not 0.8 x 0.0001 + 0.2 x 0.020
    book.observe("f", 0.0001)  # one fast call does not make chunks large again
    assert (book.get("f") or 0) > 0.015
    book.observe("f", -1.0)  # a clock that stepped back teaches nothing
    book.observe("f", 0.5, items=0)
    assert (book.get("f") or 0) > 0.015


def test_fast_then_slow_items_keep_chunks_near_their_budget() -> None:
    book = CostBook()
    simulate(book, [0.0001] * 2)  # the warm-up that used to poison the estimate
    works = simulate(book, [0.020] * 200)
    # Only the first chunks of the run (at most FIRST_CHUNK items each) run on the old
    # estimate; after that every 20 ms item goes alone.
    assert max(works) <= FIRST_CHUNK * 0.020 + 1e-9
    assert sum(1 for w in works if w > 0.020 + 1e-9) <= 2
    assert len(works) >= 200 - 2 * FIRST_CHUNK + 2


def test_slow_then_fast_items_are_chunked_again() -> None:
    book = CostBook()
    simulate(book, [0.020] * 20)
    works = simulate(book, [0.0002] * 20_000)
    assert len(works) < 20_000 / 20  # chunks again, not one by one
    assert max(works) <= 2 * BUDGET


def test_mixed_items_are_chunked_to_the_budget_on_average() -> None:
    book = CostBook()
    pattern = [0.0002] * 9 + [0.010]  # one item in ten is 50 times slower
    works = simulate(book, pattern * 2_000)
    assert len(works) < len(pattern) * 2_000 / 4  # still chunked
    # The estimate is the items' mean, so a chunk holds about the budget's worth of work;
    # and chunks grow from what came back, so the first ones are not sized on the first two
    # fast items alone (before the window, that first chunk held 100 items: 118 ms).
    assert sum(works) / len(works) <= 1.5 * BUDGET
    assert max(works) <= 2 * BUDGET


def test_one_slow_outlier_does_not_send_a_fan_out_of_tiny_items_one_by_one() -> None:
    # A probe whose worker was preempted left ~5 ms per item: above the chunking bound, so
    # the next tasks go alone. Before the window every remaining item went at once, sized
    # by that estimate (a CI run sent 5,000 items of 0.1 ms as 1,047 tasks); now the reports
    # of the first tasks bring the estimate down before the rest is sent.
    book = CostBook()
    book.set("f", 0.005)
    works = simulate(book, [0.0001] * 5000)
    assert len(works) <= 150, len(works)
    assert max(works) <= 2 * BUDGET


def _napping(make_engine: Callable[..., af.Engine]) -> af.Engine:
    engine = make_engine(workers=2)
    engine.define("nap").for_each("items", lambda ctx: ctx.payload, steps.napping_item)
    return engine


def test_a_run_of_slow_items_after_fast_ones_is_not_sent_in_big_chunks(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = _napping(make_engine)
    with engine:
        # A run of instant items teaches a tiny cost (and chunks them).
        assert engine.trigger("nap", [0] * 400).result(timeout=120) == [0] * 400
        assert engine._core is not None
        learnt = engine._core.costs.get(function_ref(steps.napping_item).key)
        assert learnt is not None and learnt < 0.004
        before = engine.statistics()["pool"]["dispatched"]
        items = [20] * 60  # 20 ms each: over the chunking bound
        assert engine.trigger("nap", items).result(timeout=120) == items
        tasks = engine.statistics()["pool"]["dispatched"] - before
    # Two first chunks of at most FIRST_CHUNK items, then every item alone. (Before, the
    # fan-out went in a handful of chunks of up to 15 items: 300 ms against a 20 ms budget.)
    assert tasks >= len(items) - 2 * FIRST_CHUNK + 2, tasks


def test_the_first_items_of_each_run_go_first_and_the_rest_after_one_reports(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = _napping(make_engine)
    with engine:
        assert engine._core is not None
        engine._core.costs.set(function_ref(steps.napping_item).key, 1e-5)  # "tiny"
        before = engine.statistics()["pool"]["dispatched"]
        assert engine.trigger("nap", [0] * 2000).result(timeout=120) == [0] * 2000
        tasks = engine.statistics()["pool"]["dispatched"] - before
    # 2 small first chunks, then chunks sized for the rest: not 2,000 tasks, not 1.
    assert 3 <= tasks <= 250, tasks


def test_the_chunk_budget_sets_how_much_work_a_chunk_aims_at() -> None:
    assert chunk_size(0.001, 10_000, 2) == int(BUDGET / 0.001)  # the default: 20 ms
    assert chunk_size(0.001, 10_000, 2, budget=0.1) == 100
    # Only items up to a fifth of the budget are chunked: 10 ms items with a 100 ms budget.
    assert chunk_size(0.01, 10_000, 2) == 1
    assert chunk_size(0.01, 10_000, 2, budget=0.1) == 10


def test_chunk_budget_is_a_setting_checked_like_the_others(tmp_path: Any) -> None:
    import pytest

    assert af.EngineConfig(chunk_budget=0.1).chunk_budget == 0.1
    with pytest.raises(af.ConfigError, match="chunk_budget: expected a positive number"):
        af.EngineConfig(chunk_budget=0)
    engine = af.Engine(data_dir=tmp_path / "s", workers=2, chunk_budget=0.1)
    engine.define("fan").for_each("items", lambda ctx: [2] * 200, steps.napping_item)
    with engine:
        engine.trigger("fan", None).result(timeout=60)  # the step's cost learnt: ~2 ms
        before = engine.statistics()["pool"]["dispatched"]
        assert engine.trigger("fan", None).result(timeout=60) == [2] * 200
        tasks = engine.statistics()["pool"]["dispatched"] - before
    # 2 ms items: one by one under the default budget (above a fifth of 20 ms), in chunks
    # of ~50 under 100 ms; the first tasks of a run hold at most FIRST_CHUNK items each.
    assert tasks <= 2 * 2 + 200 // FIRST_CHUNK // 2, tasks
