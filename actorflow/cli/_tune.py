"""``actorflow tune``: measure the user's own workflow under a sweep of the engine's knobs.

Data flow::

    APP (an Engine, not started) --definitions--> one scratch engine per setting
        (a fresh LMDB store in a temporary directory, the app's config with one knob changed)
    each setting: start, one warm-up run, then ``--repeat`` rounds of ``--runs`` runs at once
        --> a Sample per round (runs/s, items/s, the engine process's CPU per item)
        --> step latencies (dispatch to end) of every measured step
    Points --_tune_report--> verdicts (best, within noise), the recommended settings (a last
        point measures them together), the table, [tool.actorflow], the plot

One knob moves at a time, around the app's own configuration (the *base*): the table shows
what each knob does on its own, and the recommendation keeps a knob's base value unless
another value is better by more than the noise between rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actorflow.cli import _tune_report as _report
from actorflow.cli._output import Output, UsageError
from actorflow.cli._tune_report import KNOBS, Point, Sample
from actorflow.errors import ActorflowError, ClientError

__all__ = ["Trial", "add_parser", "base_settings", "measure", "sweep_points", "tune_command"]


def _default_values(name: str) -> tuple[Any, ...]:
    """The values swept for ``name`` when ``--knob`` does not say."""
    from actorflow.config import EngineConfig

    cpus = EngineConfig(workers=0).worker_count  # what workers="auto" means
    return {
        "workers": tuple(sorted({max(1, cpus // 2), cpus, 2 * cpus})),
        "prefetch": (0, 8, 32),
        "chunk_budget": (0.005, 0.02, 0.1),
        "durability": ("sync", "fast"),
        "shm_threshold": (64 << 10, 1 << 20, 16 << 20),
        "shards": (1, 2, 4),
    }[name]


def base_settings(config: Any) -> dict[str, Any]:
    """The app's own value of every knob (``workers`` resolved: 0 means one per CPU)."""
    out = {name: getattr(config, name) for name in KNOBS}
    out["workers"] = config.worker_count
    return out


def sweep_points(base: dict[str, Any], values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The settings to measure: the base, then each knob's other values, one at a time."""
    points = [dict(base)]
    for name, options in values.items():
        for value in options:
            if value != base[name]:
                points.append({**base, name: value})
    return points


def _leaf_latencies(handle: Any) -> tuple[int, list[float]]:
    """(steps, their dispatch-to-end seconds) of one finished run."""
    latencies = []
    steps = 0
    for step in handle.inspect().steps:
        if step.kind not in ("step", "action") or step.ended_at is None:
            continue
        steps += 1
        began = step.dispatched_at if step.dispatched_at is not None else step.started_at
        if began is not None:
            latencies.append(max(0.0, step.ended_at - began))
    return steps, latencies


def _scratch_engine(app: Any, settings: dict[str, Any], data_dir: Path) -> Any:
    """An engine with the app's definitions, its config with ``settings``, on a new store."""
    from actorflow.engine._engine import Engine

    config = dataclasses.replace(
        app.config, data_dir=data_dir, store="lmdb", schedules=False, role="leader", **settings
    )
    engine = Engine(config=config, executor=app._executor)
    with engine._lock:  # through the registry, as the test harness does
        for wf in app._definitions.values():
            engine._register(wf)
    return engine


@dataclass(frozen=True)
class Trial:
    """What every setting runs: ``runs`` runs of ``workflow`` at once, ``repeat`` times."""

    app: Any
    workflow: str
    payload: Any
    runs: int
    repeat: int
    timeout: float


def measure(
    trial: Trial, knob: str, settings: dict[str, Any], tick: Callable[[], None] = lambda: None
) -> Point:
    """Measure one setting on a scratch store (see the module docstring)."""
    wf, payload, timeout = trial.workflow, trial.payload, trial.timeout
    with tempfile.TemporaryDirectory(prefix="actorflow-tune-") as scratch:
        engine = _scratch_engine(trial.app, settings, Path(scratch) / "store")
        samples: list[Sample] = []
        latencies: list[float] = []
        items = 0
        try:
            with engine:
                engine.trigger(wf, payload).result(timeout=timeout)  # workers up, costs learnt
                tick()
                for _ in range(trial.repeat):
                    cpu, began = time.process_time(), time.perf_counter()
                    handles = [engine.trigger(wf, payload) for _ in range(trial.runs)]
                    for handle in handles:
                        handle.result(timeout=timeout)
                    wall = time.perf_counter() - began
                    cpu = time.process_time() - cpu
                    steps = 0
                    for handle in handles:
                        n, lat = _leaf_latencies(handle)
                        steps += n
                        latencies.extend(lat)
                    items = steps // trial.runs
                    per_item = 1e6 * cpu / max(1, steps)
                    samples.append(Sample(trial.runs / wall, steps / wall, per_item))
                    tick()
        except (ActorflowError, TimeoutError) as exc:
            return Point(knob, settings, error=f"{type(exc).__name__}: {exc}")
    return Point(knob, settings, tuple(samples), tuple(latencies), items)


def _knob_values(given: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``--knob NAME=V1,V2`` options, read and checked; every knob when none is given."""
    if not given:
        return {name: _default_values(name) for name in KNOBS}
    out: dict[str, tuple[Any, ...]] = {}
    for option in given:
        name, sep, values = option.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in KNOBS or not values.strip():
            raise UsageError(
                f"--knob: expected NAME=V1,V2 with NAME one of {', '.join(KNOBS)}, got {option!r}"
            )
        try:
            out[name] = tuple(KNOBS[name](v.strip()) for v in values.split(",") if v.strip())
        except ValueError:
            kind = KNOBS[name].__name__
            raise UsageError(f"--knob {name}: cannot read {values!r} as {kind}s") from None
    return out


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--payload: expected JSON, got {text!r} ({exc.msg})") from None


def tune_command(args: argparse.Namespace, out: Output) -> int:
    """Run the command (0: measured and recommended; 1: nothing could be measured)."""
    from actorflow.cli._serve import load_object
    from actorflow.engine._engine import Engine

    if args.runs < 1 or args.repeat < 1:
        raise UsageError("--runs and --repeat: expected 1 or more")
    if args.plot:
        _report.plot_kind(Path(args.plot))
    payload = _payload(args.payload)
    values = _knob_values(args.knob)
    app = load_object(args.app)
    if not isinstance(app, Engine):
        raise ClientError(f"APP: {args.app!r} is not an actorflow Engine")
    if args.workflow not in app._definitions:
        known = ", ".join(sorted(app._definitions)) or "none"
        raise ClientError(f"WORKFLOW: {args.app} defines no workflow {args.workflow!r} ({known})")
    base = base_settings(app.config)
    for name, options in values.items():  # checked now, not after minutes of measuring
        for value in options:
            try:
                dataclasses.replace(app.config, **{name: value})
            except ActorflowError as exc:
                raise UsageError(f"--knob {name}={value!r}: {exc}") from None
    settings = sweep_points(base, values)
    labels = [""] + [next(k for k in KNOBS if s[k] != base[k]) for s in settings[1:]]
    trial = Trial(app, args.workflow, payload, args.runs, args.repeat, args.timeout)
    points: list[Point] = []
    with _report.progress(out, len(settings) + 1, args.repeat + 1) as tick:
        # Not kept: the first engine of a process pays for what later ones find warm
        # (imports, the forkserver, the page cache), which would make the base look slow.
        measure(dataclasses.replace(trial, runs=1, repeat=1), "", base)
        for knob, point_settings in zip(labels, settings, strict=True):
            points.append(measure(trial, knob, point_settings, tick))
        final = measure(trial, "recommended", _report.recommend(points, base), tick)
    points.append(final)
    chosen = _report.settle(points, base)
    if all(p.error for p in points):
        raise ClientError(f"no setting could be measured: {points[0].error}")
    return _report.finish(out, args, points, base, chosen)


def add_parser(sub: Any, json_flag: Any) -> None:
    """The ``tune`` command's parser."""
    tune = sub.add_parser(
        "tune",
        help="measure your workflow under a sweep of the engine's knobs and recommend settings",
        description=(
            "Runs WORKFLOW of APP on scratch stores (temporary directories, never the app's "
            "own) under a sweep of the knobs that matter: workers, prefetch, chunk_budget, "
            "durability, shm_threshold, shards, one at a time around the app's own "
            "configuration. Prints runs/s, items/s, p50/p99 step latency and the engine "
            "process's CPU per item for each setting, marks the best and those within noise "
            "of it, measures the recommended settings together, and writes them to the "
            "[tool.actorflow] table of pyproject.toml (or prints it with --dry-run). Exit "
            "status: 0 done, 1 error (nothing could be measured), 2 usage."
        ),
    )
    tune.add_argument("app", help="module:attr or file.py:attr naming an Engine (not started)")
    tune.add_argument("workflow", help="the workflow to run")
    tune.add_argument("--payload", default=None, help="the payload of every run, as JSON")
    tune.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="sweep only these knobs, at these values (repeatable; default: every knob at "
        "values chosen for this machine)",
    )
    tune.add_argument(
        "--runs", type=int, default=4, help="runs started at once per round (default 4)"
    )
    tune.add_argument(
        "--repeat", type=int, default=3, help="rounds per setting, for the noise (default 3)"
    )
    tune.add_argument(
        "--timeout", type=float, default=300.0, help="seconds one run may take (default 300)"
    )
    tune.add_argument(
        "--pyproject",
        default="pyproject.toml",
        help="the file whose [tool.actorflow] table gets the settings (default ./pyproject.toml)",
    )
    tune.add_argument(
        "--dry-run", action="store_true", help="print the [tool.actorflow] table; write nothing"
    )
    tune.add_argument(
        "--plot", metavar="FILE", help="draw throughput against each knob (.html, .svg or .png)"
    )
    json_flag(tune, "print the points and the recommendation as JSON")
    tune.set_defaults(func=tune_command)
