"""B13: the dashboard's runs list stays fast with 100,000 runs in the store.

A page of 50 runs (newest first; by status; the next page through the cursor; a time
window) is timed on a store of 100,000 runs, against the same pages on a store of 1,000 runs
built the same way in the same run: the ratio should stay near 1, as a page reads about a
page of records. The runs wait for an event that never comes, so filling the store costs no
worker time; a quarter of them are cancelled, for the status filter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import actorflow as af


def _fill(engine: af.Engine, total: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, total, 5_000):
        n = min(5_000, total - start)
        ids += [r.id for r in engine.trigger_many("waits", [{}] * n)]
    for run_id in ids[::4]:
        engine.run(run_id).cancel("bench")
    return ids


def _pages(engine: af.Engine, ids: list[str], reps: int) -> dict[str, float]:
    middle = ids[len(ids) // 2]
    # The end of the middle run's millisecond: a trigger_many makes its ids in a tight loop,
    # so half of a small store's runs may share that millisecond, and a window ending at its
    # start would hold none of them. (Half a millisecond more: the float must not round
    # back down into the middle run's millisecond.)
    t_mid = (int(middle[:12], 16) + 1.5) / 1000.0

    pages: dict[str, Callable[[], Any]] = {
        "newest_ms": lambda: engine.runs(limit=50),
        "cancelled_ms": lambda: engine.runs(status="cancelled", limit=50),
        "cursor_ms": lambda: engine.runs(limit=50, before=middle),
        "window_ms": lambda: engine.runs(limit=50, until=t_mid, since=t_mid - 3600),
    }
    # The cancellations' effects (events, timers) finish in the background after _fill
    # returns; then the kinds take turns, so a burst of noise on a 2-core machine does not
    # land on every sample of one kind. Each figure is the best sample.
    time.sleep(1.0)
    times: dict[str, list[float]] = {name: [] for name in pages}
    for _ in range(reps):
        for name, fn in pages.items():
            t = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t)
            assert len(out) == 50, (name, len(out))
        time.sleep(0.005)
    return {name: min(samples) * 1000 for name, samples in times.items()}


def runs_list(make: Callable[..., af.Engine], big: int, small: int, reps: int) -> dict[str, Any]:
    """Page latencies with ``big`` runs in the store and with ``small`` (the baseline)."""
    out: dict[str, Any] = {"runs": big, "baseline_runs": small}
    for label, total in (("small", small), ("big", big)):
        engine = make(f"b13-{label}", durability="fast", workers=1)
        engine.define("waits").wait_for_event("never")
        with engine:
            t = time.perf_counter()
            ids = _fill(engine, total)
            filled = time.perf_counter() - t
            out[label] = {**_pages(engine, ids, reps), "fill_s": round(filled, 1)}
    out["ratio"] = max(out["big"][k] / out["small"][k] for k in out["small"] if k.endswith("_ms"))
    return out
