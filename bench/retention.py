"""R1 retention: the store stops growing under steady load once runs are pruned.

``python -m bench.retention`` (``make bench-retention``; several minutes, so not part of
``make bench``) writes ``bench/results/retention-latest.json``; ``python -m bench --render``
puts its figures in ``docs/benchmarks.md``.

Two engines in the same run, one after the other, each doing ``runs`` runs of a 3-step
workflow with small payloads (durability "sync", 2 workers), triggered in chunks of 1,000:

- **retention**: ``retention`` 10 s (real time), ``sweep_interval`` 1 s, so each pass prunes
  the runs that ended more than 10 s ago while new ones keep coming;
- **baseline**: ``retention=0`` (keep forever), the store as it grew before retention.

At every 10% of the runs the size of ``data.mdb`` is sampled. LMDB reuses pages freed by
deletes, so with retention the file stops growing once the first window's runs are pruned:
the figure is the final size over the size at the first sample taken after the first window
(and two passes), beside the same ratio of the baseline at the same sample (which grows
with every run). Each engine also reports how long a chunk of 1,000 runs took, from trigger
to last result (p50, p99, max): pruning must not stall the hot path.

Then the baseline store, with every run still in it, is pruned by hand (the code of
``actorflow store prune --older-than 0``, synced writes): runs per second and the time each
batch's write took (p50, p99, max).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import actorflow as af
from bench import tasks

RESULTS = Path(__file__).parent / "results"
CHUNK = 1000


def _fill(data_dir: Path, runs: int, retention: float) -> dict[str, Any]:
    engine = af.Engine(
        data_dir=data_dir, workers=2, retention=retention, sweep_interval=1.0, durability="sync"
    )
    (
        engine.define("order")
        .step("total", tasks.order_total)
        .step("tax", tasks.order_tax)
        .step("done", tasks.order_done)
    )
    samples: list[dict[str, Any]] = []
    chunks: list[float] = []  # seconds from triggering 1,000 runs to their last result
    began = time.monotonic()
    with engine:
        done = 0
        while done < runs:
            n = min(CHUNK, runs - done)
            payloads = [{"order": done + i, "qty": 2, "price": 9.5} for i in range(n)]
            sent = time.monotonic()
            for handle in engine.trigger_many("order", payloads):
                handle.result(timeout=300)
            chunks.append(time.monotonic() - sent)
            done += n
            if done % (runs // 10) == 0 or done == runs:
                samples.append(
                    {
                        "runs": done,
                        "seconds": round(time.monotonic() - began, 1),
                        "data_mdb": (data_dir / "data.mdb").stat().st_size,
                        "stored_runs": len(engine.runs(limit=None, workflow="order"))
                        if retention
                        else done,
                    }
                )
                print(f"  {'retention' if retention else 'baseline'}: {samples[-1]}", flush=True)
        elapsed = time.monotonic() - began
        stats = engine.statistics()["retention"]
    return {
        "runs": runs,
        "retention_s": retention,
        "seconds": round(elapsed, 1),
        "runs_s": round(runs / elapsed, 1),
        "samples": samples,
        "chunk_ms": _spread(chunks),
        "pruning": stats,
    }


def _spread(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def _growth(fill: dict[str, Any], at: int) -> None:
    """Add the size after the first window (sample ``at``) and the final size over it."""
    first = fill["samples"][at]
    fill["after_first_window"] = {"runs": first["runs"], "data_mdb": first["data_mdb"]}
    fill["final_over_first"] = round(fill["samples"][-1]["data_mdb"] / first["data_mdb"], 3)


def run(runs: int, retention: float) -> dict[str, Any]:
    """Both engines, then a prune by hand of the baseline's store; the figures."""
    from actorflow.store import LmdbStore
    from actorflow.store._prune import prune, written

    root = Path(tempfile.mkdtemp(prefix="actorflow-retention-"))
    try:
        kept = _fill(root / "retention", runs, retention)
        grown = _fill(root / "baseline", runs, 0.0)
        # The first sample taken once the first window's runs had been pruned (a window
        # and two passes after the start); the baseline is read at the same sample.
        at = next(
            (i for i, x in enumerate(kept["samples"]) if x["seconds"] >= retention + 2.0),
            len(kept["samples"]) - 1,
        )
        _growth(kept, at)
        _growth(grown, at)
        grown["bytes_per_stored_run"] = round(grown["samples"][-1]["data_mdb"] / runs, 1)
        # By hand, as `actorflow store prune --older-than 0` does it (synced writes).
        store = LmdbStore(root / "baseline")
        writes: list[float] = []

        def submit(ops: list[Any]) -> Callable[[], None]:
            sent = time.monotonic()
            store.write(ops)
            writes.append(time.monotonic() - sent)
            return written

        began = time.monotonic()
        report = prune(store, [("order", time.time())], submit, lambda ids: None)
        seconds = time.monotonic() - began
        store.close()
        return {
            "what": f"{runs:,} runs of 3 steps (small payloads, sync), data.mdb sampled at "
            f"each 10%: retention {retention:g} s against keep-forever in the same run",
            "retention": kept,
            "baseline": grown,
            "ratio": round(kept["final_over_first"] / grown["final_over_first"], 3),
            "prune_by_hand": {
                "runs": report.runs,
                "seconds": round(seconds, 1),
                "runs_s": round(report.runs / seconds, 1),
                "batches": report.batches,
                "write_ms": _spread(writes),
                "data_mdb_after": (root / "baseline" / "data.mdb").stat().st_size,
            },
            "target": "final size <= 1.2 x the size after the first window",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.retention")
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--retention", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", default=str(RESULTS / "retention-latest.json"))
    args = parser.parse_args(argv)
    started = time.time()
    result = run(args.runs, args.retention)
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.time() - started, 1),
        "results": {"R1": result},
    }
    Path(args.json).write_text(json.dumps(record, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
