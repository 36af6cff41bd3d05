"""Benchmarks of large data and fan-out (issue: "Large data through shared memory").

B10 a 50 MB numpy array produced by one step and summed by the next: ms per hand-off (one run
    of ``produce -> consume``), durability "sync". Three ways: the consumer where the engine
    puts it (the producer's worker, which is free then), in the other worker process (a
    ``parallel`` of two consumers: one of them always runs in the other process, and the run
    waits for both), and the same engine with shared memory off (``shm_threshold=0``). Also
    a ``multiprocessing.Pool`` hand-off (array back to the parent, then to a worker).
B11 a durable for_each of 10,000 items x 1 ms CPU against ``Pool.map`` (default chunksize),
    each as a fraction of the ideal; the figure is the ratio.
B12 memory: the resident memory of an idle engine with 2 workers (engine, forkserver and
    workers, summed), and segments left in /dev/shm after 1,000 large hand-offs (engine
    stopped) and after a SIGKILL of an engine in the middle of hand-offs and a restart.
"""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import actorflow as af
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from actorflow.workers._shm import store_segments
from bench import tasks

MB = 1 << 20
B10_BYTES = 50_000_000


def _per_run(engine: af.Engine, workflow: str, payload: Any, runs: int) -> tuple[float, Any]:
    engine.trigger(workflow, payload).result(timeout=120)  # warm: workers, segments
    times = []
    out = None
    for _ in range(runs):
        t = time.perf_counter()
        out = engine.trigger(workflow, payload).result(timeout=120)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1000, out  # the median, in ms


def handoff(engine_for: Callable[..., af.Engine], runs: int) -> dict[str, Any]:
    """B10."""
    engine = engine_for("b10", durability="sync")
    engine.define("b10").step("produce", tasks.produce).step("consume", tasks.consume)
    engine.define("b10x").step("produce", tasks.produce).parallel(
        "consume", {"a": tasks.consume, "b": tasks.consume}
    )
    with engine:
        shm_ms, _ = _per_run(engine, "b10", B10_BYTES, runs)
        cross_ms, out = _per_run(engine, "b10x", B10_BYTES, runs)
        assert out["a"][1] != out["b"][1]  # the two consumers ran in two processes
        stats = engine.statistics()["shm"]
    plain = engine_for("b10-off", durability="sync", shm_threshold=0)
    plain.define("b10").step("produce", tasks.produce).step("consume", tasks.consume)
    with plain:
        off_ms, _ = _per_run(plain, "b10", B10_BYTES, max(3, runs // 4))
    pool_ms = _pool_handoff(max(3, runs // 4))
    import numpy as np

    a = np.arange(B10_BYTES // 8, dtype=np.float64)
    t = time.perf_counter()
    for _ in range(10):
        a.sum()
    sum_ms = (time.perf_counter() - t) * 100
    return {
        "shm_ms": shm_ms,
        "other_process_ms": cross_ms,
        "shm_off_ms": off_ms,
        "pool_ms": pool_ms,
        "sum_alone_ms": sum_ms,
        "speedup_vs_off": off_ms / max(shm_ms, cross_ms),
        "segments_reused": stats["reused"],
        "segments": stats["segments"],
    }


def _pool_handoff(runs: int) -> float:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:

        def once() -> float:
            t = time.perf_counter()
            a = pool.apply(tasks.array, (B10_BYTES,))
            pool.apply(tasks.consume_array, (a,))
            return time.perf_counter() - t

        once()
        times = sorted(once() for _ in range(runs))
    return times[len(times) // 2] * 1000


def idle_memory() -> dict[str, float]:
    """B12, first half: resident memory of an idle engine with 2 workers, in a fresh process."""
    code = (
        "import time, psutil, actorflow as af, tempfile\n"
        "e = af.Engine(data_dir=tempfile.mkdtemp(), workers=2)\n"
        "e.start(); time.sleep(2.0)\n"
        "me = psutil.Process()\n"
        "procs = [me, *me.children(recursive=True)]\n"
        "rss = sum(p.memory_info().rss for p in procs)\n"
        "uss = sum(p.memory_full_info().uss for p in procs)\n"
        "print(rss, uss, len(procs))\n"
        "e.stop()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    return {"rss_mb": int(out[0]) / MB, "uss_mb": int(out[1]) / MB, "processes": int(out[2])}


def leftover_segments(engine_for: Callable[..., af.Engine], root: Path, n: int) -> dict[str, Any]:
    """B12, second half: segments left after n large hand-offs, and after a SIGKILL."""
    engine = engine_for("b12", durability="fast")
    engine.define("b12").step("produce", tasks.produce).step("consume", tasks.consume)
    peak = 0
    with engine:
        token = engine._core.blobs.token  # type: ignore[union-attr]
        handles = []
        for i in range(n):
            handles.append(engine.trigger("b12", 4 * MB))
            if len(handles) >= 8:
                handles.pop(0).result(timeout=120)
            if i % 50 == 0:
                peak = max(peak, len(store_segments(token)))
        for h in handles:
            h.result(timeout=120)
        peak = max(peak, len(store_segments(token)))
    after_stop = len(store_segments(token))
    # An engine killed in the middle of hand-offs, then started again on its store.
    data_dir = root / "b12-kill"
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.data", "hand-offs", str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    child.stdout.readline()  # "STARTED": hand-offs are under way
    time.sleep(1.0)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    store = LmdbStore(data_dir, read_only=True)
    kill_token = (store.get(K.META, K.BLOB_TOKEN_KEY) or b"").decode()
    store.close()
    left_by_kill = len(store_segments(kill_token))
    again = af.Engine(data_dir=data_dir, workers=2)
    again.define("b12").step("produce", tasks.produce).step("consume", tasks.consume)
    with again:
        after_restart = len(store_segments(kill_token))
        recovered = again._core.blobs.recovered  # type: ignore[union-attr]
    return {
        "handoffs": n,
        "peak_segments": peak,
        "left_after_stop": after_stop,
        "left_by_sigkill": left_by_kill,
        "left_after_restart": after_restart,
        "saved_lost_swept": list(recovered),
        "left_after_restart_stop": len(store_segments(kill_token)),
    }


def _hand_offs(data_dir: str) -> None:
    """The engine B12 kills: hand-offs in a loop until it is killed."""
    engine = af.Engine(data_dir=data_dir, workers=2, blob_write_delay=3600)
    engine.define("b12").step("produce", tasks.produce).step("consume", tasks.consume)
    with engine:
        engine.trigger("b12", 4 * MB).result(timeout=120)
        print("STARTED", flush=True)
        while True:
            engine.trigger("b12", 4 * MB)
            time.sleep(0.005)


def run_data(
    root: Path,
    engine_for: Callable[..., af.Engine],
    durable_for_each: Callable[..., dict[str, float]],
    quick: bool,
) -> dict[str, Any]:
    """B10, B11, B12."""
    b10 = handoff(engine_for, 10 if quick else 30)
    b11_items = 10_000
    b11 = durable_for_each(root, b11_items, 1.0, 1 if quick else 2)
    b12 = {**idle_memory(), **leftover_segments(engine_for, root, 1000)}
    return {
        "B10": {
            "what": "50 MB numpy array handed from one step to the next, ms per hand-off "
            "(median; lower is better), durability sync; baselines: the same engine with "
            "shared memory off, and multiprocessing.Pool",
            **b10,
            "target_ms": 25.0,
            "target_speedup": 10.0,
        },
        "B11": {
            "what": f"durable for_each of {b11_items} x 1 ms CPU items on 2 workers, "
            "efficiency vs ideal (higher is better)",
            "pool_map_efficiency": b11["pool"],
            "engine_efficiency": b11["engine"],
            "ratio": b11["engine"] / b11["pool"],
            "target_ratio": 0.9,
        },
        "B12": {
            "what": "idle engine with 2 workers: resident memory of all its processes; "
            "shared-memory segments left after 1,000 large hand-offs and after a SIGKILL "
            "and restart",
            **b12,
            "target_rss_mb": 150,
        },
    }


if __name__ == "__main__":
    if sys.argv[1] == "hand-offs":
        _hand_offs(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
