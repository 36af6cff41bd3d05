"""The head's cost per durable item (issue: "One engine keeps a big machine busy").

Everything except the step itself (supervisors, dispatcher, writer, commits, pipe traffic)
runs in the engine process, so its CPU per durable item caps how many cores one engine can
keep busy: items/s <= 1 / (head CPU per item). The head's CPU is the engine process's user +
system time (``time.process_time``: every thread of this process, no worker), taken around
a measured run after a warm-up run on the same engine.

B17, the scale simulation: a durable for_each of 10 ms *sleeping* items on 16, 64, 128 and
    256 workers, with enough items for ``seconds`` of ideal wall time each. A sleeping worker
    uses little CPU, so N of them stand in for N busy cores on a small machine, and mostly
    the head falls behind. Efficiency = ideal wall / measured wall; ideal = items x 10 ms
    / workers. Little is not nothing: each item also costs its worker a wake-up for its task
    and one for the end of its sleep, and on a small virtual machine a bare 10 ms sleep
    alone costs tens of microseconds of CPU. So B17 also gives the workers' CPU per item
    (Linux: the engine's descendant processes, from ``/proc``), the machine's ceiling
    ``cores / (head + workers CPU per item)``, and, as the same-run baseline, the CPU per
    call of bare processes doing nothing but 10 ms sleeps (``sleep_floor``): once the
    ceiling is below ``workers / 10 ms``, the machine, not the head, sets the efficiency.
B18, head CPU per item for the shapes users run, on 2 workers: unchunked 10 ms items,
    chunked 1 ms items, ``ctx.map`` of 10 ms items, sequential steps, and webhook-started
    runs (the server's process, from the first request until it is idle again).
B19, the scale of one run: a for_each of 1,000,000 trivial items (``durability="fast"``)
    beside one of 100,000 in the same run: items per second, the engine's peak memory per
    item above what it held before (resident, and its anonymous part: resident memory
    without the store's file pages mapped by LMDB, which are page cache and about the
    store's size), and the store's used pages per item.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import actorflow as af
from bench import tasks

__all__ = ["head_costs", "one_run_scale", "scale_simulation"]

EngineFor = Callable[..., af.Engine]


def _descendants_cpu() -> float | None:
    """CPU seconds (user + system) used so far by this process's live descendants.

    Linux only (``/proc``; None elsewhere). Workers are the forkserver's children, so the
    whole tree under this process is walked, not only its direct children. Each process's
    time is its scheduler run time (``/proc/PID/schedstat``, nanoseconds: what
    ``time.process_time`` reads), not the tick-sampled ``utime + stime``, which charges a
    process that wakes often for ticks it did not use.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[pid] = int(fields[1])
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                cpu[pid] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {os.getpid()}, True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    tree.discard(os.getpid())
    return sum(cpu[p] for p in tree)


def _measured(engine: af.Engine, start: Callable[[], Any], items: int) -> dict[str, float]:
    """Run ``start()`` to its result; wall seconds, head CPU per item and the ceiling.

    With ``/proc``, also the workers' CPU per item (every descendant process: the workers,
    and the forkserver, which is idle once they are up).
    """
    before_tasks = engine.statistics()["pool"]["dispatched"]
    workers = _descendants_cpu()
    cpu, wall = time.process_time(), time.perf_counter()
    start()
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    after = _descendants_cpu()
    per_item = cpu / items
    out = {
        "wall_s": wall,
        "head_cpu_s": cpu,
        "head_us_per_item": per_item * 1e6,
        "ceiling_items_s": 1 / per_item if per_item else float("inf"),
        "tasks_sent": engine.statistics()["pool"]["dispatched"] - before_tasks,
    }
    if workers is not None and after is not None:
        out["workers_us_per_item"] = max(0.0, after - workers) / items * 1e6
    return out


def sleep_floor(ms: float = 10.0, procs: int = 16, calls: int = 200) -> dict[str, float]:
    """B17's baseline: CPU per call of bare processes that only sleep ``ms`` at a time.

    ``procs`` Python processes each call ``time.sleep`` ``calls`` times, concurrently, as the
    workers do, and report their own CPU (``time.process_time``) around that loop alone:
    what the kernel charges for one sleep (its timer and its two context switches) here.
    """
    code = (
        "import sys, time\n"
        "n, s = int(sys.argv[1]), float(sys.argv[2])\n"
        "c = time.process_time()\n"
        "for _ in range(n): time.sleep(s)\n"
        "print(time.process_time() - c)\n"
    )
    argv = [sys.executable, "-c", code, str(calls), str(ms / 1000.0)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    used = sum(float(child.communicate(timeout=600)[0]) for child in children)
    return {"ms": ms, "procs": procs, "calls": calls, "us_per_call": used / (procs * calls) * 1e6}


def _for_each(engine_for: EngineFor, name: str, workers: int, items: int, ms: float,
              warmup: int) -> dict[str, float]:  # fmt: skip
    engine = engine_for(name, workers=workers, durability="sync")
    engine.define(name).for_each("items", lambda c: [ms] * c.payload, tasks.sleep_item)

    def run(n: int) -> None:
        out = engine.trigger(name, n).result(timeout=3600)
        assert len(out) == n

    with engine:
        run(warmup)  # workers up, imports done, the step's cost learnt
        figures = _measured(engine, lambda: run(items), items)
    ideal = items * ms / 1000 / workers
    out = {**figures, "items": items, "workers": workers, "efficiency": ideal / figures["wall_s"]}
    if "workers_us_per_item" in figures:
        # What the machine's cores allow, whoever spends them: above workers / item time,
        # the head is what stops the run; below it, the machine is.
        total = (figures["head_us_per_item"] + figures["workers_us_per_item"]) / 1e6
        cores = os.cpu_count() or 1
        out["machine_ceiling_items_s"] = cores / total if total else float("inf")
        out["machine_bound_efficiency"] = min(
            1.0, out["machine_ceiling_items_s"] * ms / 1000 / workers
        )
    return out


def scale_simulation(
    engine_for: EngineFor, workers: tuple[int, ...] = (16, 64, 128, 256), seconds: float = 10.0
) -> dict[str, Any]:
    """B17: efficiency and head CPU per item of 10 ms sleeping items on many workers."""
    out: dict[str, Any] = {"sleep_floor": sleep_floor(10.0)}
    for n in workers:
        items = int(n * seconds / 0.010)
        out[str(n)] = _for_each(engine_for, f"b17-{n}", n, items, 10.0, warmup=4 * n)
    return out


def _code_map(engine_for: EngineFor, items: int) -> dict[str, float]:
    engine = engine_for("b18-map", workers=2, durability="sync")

    @engine.workflow("fan")
    async def fan(ctx: af.WorkflowContext, n: int) -> int:
        return len(await ctx.map("m", tasks.sleep_ms, [10.0] * n))

    with engine:
        engine.trigger("fan", 20).result(timeout=600)
        return {
            **_measured(engine, lambda: engine.trigger("fan", items).result(timeout=600), items),
            "items": items,
        }


def _sequential(engine_for: EngineFor, steps: int) -> dict[str, float]:
    engine = engine_for("b18-seq", workers=2, durability="sync")
    flow = engine.define("seq")
    for i in range(steps):
        flow.step(f"s{i}", tasks.noop)
    with engine:
        engine.trigger("seq", {}).result(timeout=600)
        return {
            **_measured(engine, lambda: engine.trigger("seq", {}).result(timeout=600), steps),
            "items": steps,
        }


def _trim_heap() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``; elsewhere a no-op)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _one_run(engine_for: EngineFor, name: str, items: int) -> dict[str, float]:
    """One for_each of ``items`` trivial items (``durability="fast"``), measured."""
    import threading

    import lmdb
    import psutil

    engine = engine_for(name, workers=2, durability="fast", map_size=1 << 30)
    engine.define(name).for_each("items", lambda c: list(range(c.payload)), tasks.identity_item)
    me = psutil.Process()
    with engine:
        engine.trigger(name, 1000).result(timeout=600)  # workers up, the step's cost learnt
        _trim_heap()  # memory an earlier run freed would be reused unseen: give it back first
        # Resident memory, and its anonymous part: what the engine holds (heap, stacks,
        # LMDB's dirty pages), without the store's pages mapped from its file (page cache
        # the kernel can drop, ~the store's size: counted below as the store's bytes).
        info = me.memory_info()
        base = peak = info.rss
        base_anon = peak_anon = info.rss - info.shared
        done = threading.Event()

        def watch() -> None:
            nonlocal peak, peak_anon
            while not done.wait(0.05):
                info = me.memory_info()
                peak = max(peak, info.rss)
                peak_anon = max(peak_anon, info.rss - info.shared)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wall = time.perf_counter()
        out = engine.trigger(name, items).result(timeout=3600)
        wall = time.perf_counter() - wall
        done.set()
        watcher.join()
        assert len(out) == items
        data_dir = engine.config.data_dir
    env = lmdb.open(str(data_dir), readonly=True, lock=False, max_dbs=64)
    try:
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    finally:
        env.close()
    return {
        "items": items,
        "wall_s": wall,
        "items_s": items / wall,
        "rss_bytes_per_item": max(0, peak - base) / items,
        "anon_bytes_per_item": max(0, peak_anon - base_anon) / items,
        "store_bytes_per_item": used / items,
    }


def one_run_scale(engine_for: EngineFor, quick: bool = False) -> dict[str, Any]:
    """B19: one run of 1,000,000 trivial items, beside one of 100,000 in the same run.

    Items per second (the small run is the baseline: a run 10x as large should go as fast),
    the engine process's peak resident memory above what it held before the run, per item,
    and the store's used pages per item (every item is recorded on its own).
    """
    large = 200_000 if quick else 1_000_000
    small = _one_run(engine_for, "b19-small", large // 10)
    big = _one_run(engine_for, "b19-large", large)
    return {"small": small, "large": big, "linearity": big["items_s"] / small["items_s"]}


def head_costs(engine_for: EngineFor, root: Path, quick: bool = False) -> dict[str, Any]:
    """B18: head CPU per item for each shape (see the module docstring)."""
    scale = 1 if quick else 2
    from bench.webhooks import webhook_head_cost

    return {
        "unchunked_10ms": _for_each(engine_for, "b18-10ms", 2, 500 * scale, 10.0, warmup=20),
        "chunked_1ms": _for_each(engine_for, "b18-1ms", 2, 5000 * scale, 1.0, warmup=200),
        "map_10ms": _code_map(engine_for, 500 * scale),
        "sequential": _sequential(engine_for, 200),
        "webhook": webhook_head_cost(root, 3000 * scale, 32),
    }


if __name__ == "__main__":  # python -m bench.scale [--quick]: B17 and B18 alone, as JSON
    import json
    import shutil
    import sys
    import tempfile

    quick = "--quick" in sys.argv
    root = Path(tempfile.mkdtemp(prefix="actorflow-scale-"))

    def engine_for(name: str, **settings: Any) -> af.Engine:
        return af.Engine(data_dir=root / name, **settings)

    try:
        result = {
            "B18": head_costs(engine_for, root, quick),
            "B17": scale_simulation(
                engine_for, (16, 64) if quick else (16, 64, 128, 256), 3.0 if quick else 10.0
            ),
            "B19": one_run_scale(engine_for, quick),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
