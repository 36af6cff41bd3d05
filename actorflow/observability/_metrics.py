"""Prometheus metrics: ``engine.metrics()`` and ``GET /metrics``.

The shards and the store writer count as they work (``runtime/kernel/_counts.py``); a scrape merges
their counts and adds gauges from ``engine.statistics()``. Each engine has its own registry,
so several engines in one process (tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from actorflow.runtime.kernel._counts import Counts, Histogram

__all__ = ["EngineCollector", "exposition", "registry_for"]


def _merge(hists: Iterable[Histogram]) -> Histogram | None:
    merged: Histogram | None = None
    for h in hists:
        if merged is None:
            merged = Histogram(h.buckets)
        for i, c in enumerate(list(h.counts)):
            merged.counts[i] += c
        merged.sum += h.sum
        merged.count += h.count
    return merged


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, c in zip(h.buckets, h.counts, strict=False):
        total += c
        out.append((_le(bound), total))
    out.append(("+Inf", h.count))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


class EngineCollector:
    """A ``prometheus_client`` collector reading one engine at each scrape.

    Args:
        engine: the engine (must be running while scraped).
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def describe(self) -> list[Any]:
        return []  # no fixed set: series appear with workflows and steps

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        engine = self._engine
        core = engine._core
        if core is None:
            return
        counts: list[Counts] = [s.proxy().counts.get(timeout=10) for s in core.shards]
        started = CounterMetricFamily(
            "actorflow_runs_started", "Runs started, by workflow.", labels=["workflow"]
        )
        merged_started: dict[str, int] = {}
        for c in counts:
            for wf, n in list(c.started.items()):
                merged_started[wf] = merged_started.get(wf, 0) + n
        for wf, n in sorted(merged_started.items()):
            started.add_metric([wf], n)
        yield started

        finished = CounterMetricFamily(
            "actorflow_runs_finished",
            "Runs finished, by workflow and final status (completed, failed, cancelled...).",
            labels=["workflow", "status"],
        )
        merged_finished: dict[tuple[str, str], int] = {}
        for c in counts:
            for key, n in list(c.finished.items()):
                merged_finished[key] = merged_finished.get(key, 0) + n
        for (wf, status), n in sorted(merged_finished.items()):
            finished.add_metric([wf, status], n)
        yield finished

        steps = CounterMetricFamily(
            "actorflow_step_attempts",
            "Step attempts ended, by workflow and outcome (succeeded, error, timeout, crash).",
            labels=["workflow", "outcome"],
        )
        merged_steps: dict[tuple[str, str], int] = {}
        for c in counts:
            for key, n in list(c.steps.items()):
                merged_steps[key] = merged_steps.get(key, 0) + n
        for (wf, outcome), n in sorted(merged_steps.items()):
            steps.add_metric([wf, outcome], n)
        yield steps

        durations = HistogramMetricFamily(
            "actorflow_step_duration_seconds",
            "Step attempt durations in their worker, by workflow and step.",
            labels=["workflow", "step"],
        )
        keys = sorted({k for c in counts for k in list(c.timings)})
        for key in keys:
            h = _merge(c.timings[key] for c in counts if key in c.timings)
            if h is not None:
                durations.add_metric(list(key), _buckets(h), h.sum)
        yield durations

        if core.writer is not None:
            writer_stats = core.writer.proxy().stats.get(timeout=10)
            commit_seconds = writer_stats.commit_seconds
            batch_sizes = writer_stats.batch_sizes
            commits = HistogramMetricFamily(
                "actorflow_commit_duration_seconds", "Store commit durations (one transaction)."
            )
            commits.add_metric([], _buckets(commit_seconds), commit_seconds.sum)
            yield commits
            b = HistogramMetricFamily(
                "actorflow_commit_batch_size", "Writes grouped into one store commit."
            )
            b.add_metric([], _buckets(batch_sizes), batch_sizes.sum)
            yield b

        stats = engine.statistics()
        pool = stats["pool"]
        for name, doc, value in (
            ("actorflow_queue_depth", "Step tasks waiting for a worker.", stats["queue_depth"]),
            ("actorflow_steps_running", "Step tasks running in workers.", stats["busy_workers"]),
            ("actorflow_workers", "Worker processes.", stats["workers"]),
            ("actorflow_live_runs", "Runs held in memory.", stats["live_runs"]),
            (
                "actorflow_runs_waiting_for_definition",
                "Unfinished runs whose workflow (or a step their plan reaches) is not defined.",
                stats.get("waiting_for_definition", 0),
            ),
            ("actorflow_timers_pending", "Durable timers waiting.", stats.get("timers", 0)),
            (
                "actorflow_scheduler_lag_seconds",
                "How late the most overdue timer is.",
                stats.get("scheduler_lag", 0.0),
            ),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        for name, doc, value in (
            (
                "actorflow_worker_restarts",
                "Worker processes replaced after dying.",
                pool["restarts"],
            ),
            (
                "actorflow_worker_recycled",
                "Workers retired at their task or memory limit.",
                pool["recycled"],
            ),
            ("actorflow_step_timeouts", "Steps stopped at their timeout.", pool["timeouts"]),
            ("actorflow_worker_crashes", "Steps whose worker died under them.", pool["crashes"]),
            ("actorflow_commits", "Store commits.", stats["store"]["commits"]),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter

        states = GaugeMetricFamily(
            "actorflow_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        rejected = CounterMetricFamily(
            "actorflow_circuit_breaker_rejected",
            "Attempts failed fast by an open circuit.",
            labels=["breaker"],
        )
        opened = CounterMetricFamily(
            "actorflow_circuit_breaker_opened", "Times a circuit opened.", labels=["breaker"]
        )
        level = {"closed": 0, "half_open": 1, "open": 2}
        for name, snap in sorted(stats["breakers"].items()):
            states.add_metric([name], level.get(snap["state"], 0))
            rejected.add_metric([name], snap["rejected"])
            opened.add_metric([name], snap["opened"])
        yield states
        yield rejected
        yield opened


def registry_for(engine: Any) -> Any:
    """A registry of its own with the engine's collector."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    return registry


def exposition(registry: Any) -> str:
    """The registry's metrics in the Prometheus text format."""
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()
