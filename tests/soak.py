"""A bounded soak: a steady trigger rate for a while, with a worker SIGKILLed periodically.

Usage: python -m tests.soak [--minutes 30] [--rate 40] [--kill-every 5] [--json FILE]

It reports the engine's memory and open file descriptors over time (flat after warm-up),
run and step latencies (p50, p99), worker kills, and lost runs (must be 0: every run
triggered completes with its expected output). ``make soak`` is the 30-minute form;
tests/test_soak.py runs it for two minutes in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

import actorflow as af


def soak_step(ctx: Any) -> int:
    """A few milliseconds of work; returns the previous value plus one."""
    deadline = time.perf_counter() + 0.002
    while time.perf_counter() < deadline:
        pass
    return (ctx.last or 0) + 1


@dataclass
class SoakReport:
    """Figures of one soak."""

    seconds: float
    rate: float  # runs triggered per second (achieved)
    runs: int
    completed: int
    lost: int  # triggered runs not completed with their expected output
    worker_kills: int
    worker_deaths: int  # workers the engine replaced (each kill must be noticed)
    workers_at_end: int  # the pool's size once the last run finished (back to full)
    step_retries: int  # attempts after a failed one (a step on a killed worker)
    run_p50_ms: float
    run_p99_ms: float
    step_p99_ms: float  # a step attempt's duration in its worker
    rss_mb: list[float] = field(default_factory=list)  # the engine process, per sample
    # RSS counts the store's mapped file pages, which grow with the store until the map is
    # remapped; the process's anonymous memory (heap, stacks) is what a leak would grow.
    heap_mb: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    rss_growth_mb: float = 0.0  # last quarter's mean minus the second quarter's
    heap_growth_mb: float = 0.0  # the same for anonymous memory
    fd_growth: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The figures, with each sampled series cut to its first and last sample."""
        data = self.as_dict()
        out = {k: v for k, v in data.items() if k not in _SERIES}
        for name in _SERIES:
            series = data[name]
            out[f"{name}_first_last"] = [series[0], series[-1]] if series else []
        return out


_SERIES = ("rss_mb", "heap_mb", "fds")


def _anonymous_mb() -> float:
    """This process's anonymous resident memory (RssAnon), in MiB; its RSS off Linux."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"RssAnon:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _growth(samples: Sequence[float], q: int) -> float:
    """The last quarter's mean minus the second quarter's (the first is warm-up)."""
    return round(statistics.mean(samples[-q:]) - statistics.mean(samples[q : 2 * q]), 1)


def _percentile(histogram: Counter[int], q: float) -> float:
    """The ``q`` quantile, in ms, of a histogram of 10 us buckets."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    rank = min(total - 1, int(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return round(bucket / 100, 2)
    raise AssertionError("unreachable: the ranks add up to the total")


def _engine_workers(me: psutil.Process) -> list[psutil.Process]:
    """This engine's worker processes: the children of its forkserver, a child of this one.

    Not every grandchild: other tests of the session may keep servers (and their own
    workers) running as children of this process, and killing those is no kill of ours.
    """
    out = []
    for child in me.children():
        try:
            if "forkserver" not in " ".join(child.cmdline()):
                continue
            out.extend(w for w in child.children() if w.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            continue
    return out


def soak(
    seconds: float, rate: float, kill_every: float, data_dir: str, seed: int = 1
) -> SoakReport:
    rng = random.Random(seed)
    engine = af.Engine(data_dir=data_dir, workers=2)
    retry = af.Retry(attempts=5, backoff="fixed", delay="10ms")
    engine.define("soak").step("a", soak_step, retry=retry).step("b", soak_step, retry=retry).step(
        "c", soak_step, retry=retry
    )
    started: dict[str, float] = {}
    # Latencies go in histograms of 10 us buckets, not lists: the driver shares the
    # engine's process, and a list of every latency would grow the memory measured.
    run_us10: Counter[int] = Counter()
    step_us10: Counter[int] = Counter()
    retries = 0
    lock = threading.Lock()

    def heard(event: Any) -> None:
        nonlocal retries
        now = time.perf_counter()
        if isinstance(event, af.RunFinished):
            with lock:
                t0 = started.pop(event.run_id, None)
                if t0 is not None:
                    run_us10[round((now - t0) * 100_000)] += 1
        elif isinstance(event, af.StepAttempted):
            if event.started_at is not None and event.ended_at is not None:
                step_us10[round((event.ended_at - event.started_at) * 100_000)] += 1
            if event.attempt > 1:
                retries += 1

    engine.subscribe(heard)
    me = psutil.Process()
    rss: list[float] = []
    heap: list[float] = []
    fds: list[int] = []
    kills = 0
    triggered = 0
    # The driver keeps nothing per run once it finished (the memory measured is the engine's
    # and this loop's, in one process): the runs are counted from the store at the end.
    with engine:
        began = time.perf_counter()
        next_kill = began + kill_every
        next_sample = began
        n = 0
        while (now := time.perf_counter()) - began < seconds:
            due = began + n / rate
            if now < due:
                time.sleep(min(due - now, 0.05))
                continue
            t0 = time.perf_counter()
            handle = engine.trigger("soak", None)
            with lock:
                started[handle.id] = t0
            triggered += 1
            n += 1
            if now >= next_kill:
                workers = _engine_workers(me)
                if workers:
                    os.kill(rng.choice(workers).pid, signal.SIGKILL)
                    kills += 1
                next_kill += kill_every
            if now >= next_sample:
                rss.append(round(me.memory_info().rss / 2**20, 1))
                heap.append(_anonymous_mb())
                fds.append(me.num_fds())
                next_sample += 1.0
        elapsed = time.perf_counter() - began
        deadline = time.monotonic() + 120
        while started and time.monotonic() < deadline:
            time.sleep(0.05)
        # Replacements, not crashes: a worker killed while it starts (before the pool took
        # it) is a failed start, replaced like a crashed one.
        pool = engine.statistics()["pool"]
        while pool["workers"] < 2 and time.monotonic() < deadline:  # a replacement starting
            time.sleep(0.05)
            pool = engine.statistics()["pool"]
        deaths = int(pool["restarts"])
        workers_at_end = int(pool["workers"])
        runs = engine.runs(workflow="soak", limit=triggered + 10)
        done = [r for r in runs if r.status is af.RunStatus.COMPLETED]
        # exactly-once results: a sample of them read back in full
        sample = random.Random(seed).sample(done, min(200, len(done)))
        completed = len(done) - sum(1 for r in sample if engine.run(r.id).result(timeout=10) != 3)
    q = max(1, len(rss) // 4)
    return SoakReport(
        seconds=round(elapsed, 1),
        rate=round(triggered / elapsed, 1),
        runs=triggered,
        completed=completed,
        lost=triggered - completed,
        worker_kills=kills,
        worker_deaths=deaths,
        workers_at_end=workers_at_end,
        step_retries=retries,
        run_p50_ms=_percentile(run_us10, 0.50),
        run_p99_ms=_percentile(run_us10, 0.99),
        step_p99_ms=_percentile(step_us10, 0.99),
        rss_mb=rss,
        heap_mb=heap,
        fds=fds,
        rss_growth_mb=_growth(rss, q),
        heap_growth_mb=_growth(heap, q),
        fd_growth=_growth(fds, q),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=40.0, help="runs triggered per second")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="actorflow-soak-") as tmp:
        report = soak(args.minutes * 60, args.rate, args.kill_every, tmp)
    print(json.dumps(report.summary(), indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    return 0 if report.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
