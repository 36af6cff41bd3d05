"""Benchmarks of code workflows (issue: "Code workflows").

B8 a code workflow of 200 sequential ``await ctx.step(...)`` calls, ms per step, durability
   "sync"; baseline: a graph workflow of 200 sequential steps on the same engine, their runs
   interleaved (graph, code, graph, code...), so that both meet the same machine state:
   measured apart, minutes from each other, the ratio moved with the machine (2.6x once).
B9 replay of a recorded history of 10,000 events (5,000 steps: a command and a result each)
   against the workflow function: seconds, from an exported document, and from the LMDB store
   (reading the history included, as a recovery does). Baseline: decoding the same history
   without running the function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

import actorflow as af
from actorflow.code._history import load_history
from actorflow.store import LmdbStore
from bench import tasks


def _best(fn: Callable[[], float], reps: int) -> float:
    return min(fn() for _ in range(reps))


def code_sequential(
    engine_for: Callable[..., af.Engine], steps: int, reps: int
) -> dict[str, float]:
    """B8: ms per step of a code workflow awaiting ``steps`` trivial steps in a row, and of
    a graph workflow of ``steps`` steps, runs interleaved on one engine (best of ``reps``)."""
    engine = engine_for("b8", durability="sync")

    @engine.workflow("seq")
    async def seq(ctx: af.WorkflowContext, n: int) -> int:
        for i in range(n):
            await ctx.step("s", tasks.noop_args, i)
        return n

    graph = engine.define("graph_seq")
    for i in range(steps):
        graph.step(f"s{i}", tasks.noop)

    def once(workflow: str, *args: Any) -> float:
        t = time.perf_counter()
        engine.trigger(workflow, *args).result(timeout=120)
        return (time.perf_counter() - t) / steps * 1000

    with engine:
        once("seq", steps)  # warm up: imports, caches
        once("graph_seq", None)
        code: list[float] = []
        graph_ms: list[float] = []
        for _ in range(reps):
            graph_ms.append(once("graph_seq", None))
            code.append(once("seq", steps))
    return {"code_ms": min(code), "graph_ms": min(graph_ms)}


async def _long(ctx: af.WorkflowContext, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.step("s", tasks.add, i, 1)
    return total


def replay_speed(engine_for: Callable[..., af.Engine], steps: int, reps: int) -> dict[str, Any]:
    """B9: seconds to replay a history of ``2 * steps`` events."""
    engine = engine_for("b9", durability="fast")
    engine.workflow("long")(_long)
    with engine:
        run = engine.trigger("long", steps)
        run.result(timeout=600)
        doc = engine.export_history(run.id)
    data_dir = engine.config.data_dir
    events = load_history(doc).events

    def from_doc() -> float:
        t = time.perf_counter()
        result = af.testing.replay(doc, _long)
        took = time.perf_counter() - t
        assert result.ok and result.commands == steps, result
        return took

    def from_store() -> float:
        t = time.perf_counter()
        store = LmdbStore(data_dir, read_only=True)
        try:
            result = af.testing.replay(af.testing.load_history(_export(store, run.id)), _long)
        finally:
            store.close()
        took = time.perf_counter() - t
        assert result.ok, result
        return took

    raw = orjson.dumps(doc)

    def decode_only() -> float:
        t = time.perf_counter()
        history = load_history(orjson.loads(raw))
        for entry in history.entries:
            for res in entry.r:
                if res[0] == "ok":
                    orjson.loads(orjson.dumps(res[-1]))
        return time.perf_counter() - t

    return {
        "events": events,
        "replay_s": _best(from_doc, reps),
        "replay_from_store_s": _best(from_store, reps),
        "decode_only_s": _best(decode_only, reps),
    }


def _export(store: LmdbStore, run_id: str) -> dict[str, Any]:
    from actorflow.code._history import export_history

    return export_history(store, run_id)


def run_code(root: Path, engine_for: Callable[..., af.Engine], quick: bool) -> dict[str, Any]:
    """The code workflow figures (B1's graph figure is passed in by the suite)."""
    reps = 2 if quick else 5
    return {
        "B8": code_sequential(engine_for, 200, reps),
        "B9": replay_speed(engine_for, 5_000, 3 if quick else 5),
    }
