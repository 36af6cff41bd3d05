"""B20: a page of runs filtered by search attributes at 100,000 runs (issue 24.8).

100,000 runs of a one-step workflow (durability "fast"), each with search attributes
``customer`` (one of 100: 1% of the runs each), ``amount`` (0 to 99,999) and ``vip`` (one run
in 50); then, interleaved, best of ``reps`` each: the newest page of 50 runs unfiltered
(the baseline), filtered by ``customer`` (an equality: read from its index newest first),
by ``customer`` and ``amount>`` (an equality and a range checked on the records), and by
``amount>=`` alone (a range of 1,000 matches: its index entries read in value order, then
sorted). Target: the equality's page within 2x of the unfiltered one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import actorflow as af
from bench import tasks


def filtered_pages(
    engine_for: Callable[..., af.Engine], runs: int, reps: int, page: int = 50
) -> dict[str, Any]:
    """ms per page, unfiltered and filtered, at ``runs`` runs with search attributes."""
    engine = engine_for("b20", durability="fast")
    engine.define("billed").step("bill", tasks.noop)
    with engine:
        t = time.perf_counter()
        batch = 5_000
        for start in range(0, runs, batch):
            n = min(batch, runs - start)
            attrs = [
                {"customer": f"c-{i % 100}", "amount": i, "vip": i % 50 == 0}
                for i in range(start, start + n)
            ]
            handles = engine.trigger_many("billed", [None] * n, search_attributes=attrs)
        handles[-1].result(timeout=600)
        while engine.runs(status="running", limit=1) or engine.runs(status="queued", limit=1):
            time.sleep(0.2)  # every run has ended: the pages read settled records
        loaded = time.perf_counter() - t
        queries: dict[str, dict[str, Any]] = {
            "unfiltered": {},
            "equality": {"customer": "c-42"},
            "equality_and_range": {"customer": "c-42", "amount>": runs // 2},
            "range": {"amount>=": runs - runs // 100},
        }
        best = {name: float("inf") for name in queries}
        sizes = {}
        for _ in range(reps):
            for name, where in queries.items():
                t = time.perf_counter()
                got = engine.runs(limit=page, where=where or None)
                best[name] = min(best[name], (time.perf_counter() - t) * 1000)
                sizes[name] = len(got)
    base = best["unfiltered"]
    return {
        "runs": runs,
        "page": page,
        "load_s": loaded,
        "ms": best,
        "sizes": sizes,
        "ratio": {name: ms / base for name, ms in best.items()},
    }
