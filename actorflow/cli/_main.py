"""The ``actorflow`` commands.

Store-reading commands open the store read-only, so they work while an engine runs on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from actorflow.errors import ActorflowError
from actorflow.runtime._views import RunDetails, RunSummary, StepDetails, inspect_run, list_runs
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from actorflow.store._protocol import Store

__all__ = ["main"]


def _default_data_dir() -> str:
    return os.environ.get("ACTORFLOW_DATA_DIR") or ".actorflow"


def _read_only(data_dir: str | None) -> Any:
    """The store opened read-only, unsealed with the configured codecs (env, pyproject)."""
    from actorflow.config import EngineConfig
    from actorflow.store._sealing import sealed

    cfg = EngineConfig.from_sources()
    store = LmdbStore(data_dir or _default_data_dir(), read_only=True)
    return sealed(store, cfg.codecs, cfg.codec_keys)


def _time(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _secs(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1000:.1f}ms" if t < 1 else f"{t:.2f}s"


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def _resolve(store: Store, prefix: str) -> str:
    if store.get(K.RUNS, K.run_key(prefix)) is not None:
        return prefix
    matches = [k.decode() for k, _ in store.scan(K.RUNS, prefix.encode(), limit=2)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ActorflowError(f"no run with id or id prefix {prefix!r}")
    raise ActorflowError(f"run id prefix {prefix!r} is ambiguous; give more characters")


def cmd_runs(args: argparse.Namespace) -> int:
    store = _read_only(args.data_dir)
    try:
        runs: list[RunSummary] = list_runs(store, args.workflow, args.status, args.limit)
    finally:
        store.close()
    if args.json:
        print(_json([asdict(r) for r in runs]))
        return 0
    if not runs:
        print("no runs")
        return 0
    print(f"{'RUN':<26}{'WORKFLOW':<20}{'STATUS':<11}{'CREATED':<21}DURATION")
    for r in runs:
        took = (r.ended_at - r.created_at) if r.ended_at is not None else None
        print(
            f"{r.id:<26}{r.workflow_id[:19]:<20}{r.status.value:<11}{_time(r.created_at):<21}{_secs(took)}"
        )
    return 0


_ITEM_INDEX = re.compile(r"\[(\d+)\]")


def _detail(s: StepDetails) -> str:
    """What to say about a node: its error, or what it chose, counted or started, or its output."""
    if s.error is not None:
        return f"{s.error.type.rpartition('.')[2]}: {s.error.message}"
    parts = []
    if s.kind == "branch":
        parts.append(f"took {s.branch}" if s.branch else "no arm matched")
    if s.winner is not None:
        parts.append(f"winner {s.winner}")
    if s.items is not None:
        counts = ", ".join(f"{v} {k}" for k, v in s.items.items() if v or k == "total")
        parts.append(f"items: {counts}")
    if s.iterations is not None:
        parts.append(f"{s.iterations} iterations")
    if s.child_run_id is not None:
        parts.append(f"child run {s.child_run_id}")
    if s.recovered:
        parts.append("recovered by on_error")
    if s.output is not None and not parts:
        parts.append(s.output)
    return "; ".join(parts)


def cmd_show(args: argparse.Namespace) -> int:
    store = _read_only(args.data_dir)
    try:
        run: RunDetails = inspect_run(store, _resolve(store, args.run))
    finally:
        store.close()
    if args.json:
        print(_json(run.to_dict()))
        return 0
    print(f"run       {run.id}")
    print(f"workflow  {run.workflow_id}")
    print(f"status    {run.status.value}")
    print(f"created   {_time(run.created_at)}   duration {_secs(run.duration)}")
    if run.idempotency_key:
        print(f"key       {run.idempotency_key}")
    print(f"payload   {run.payload}")
    if run.result is not None:
        print(f"result    {run.result}")
    if run.cancel_reason is not None:
        print(f"cancelled {run.cancel_reason or '(no reason given)'}")
    print(f"\n{'STEP':<28}{'KIND':<10}{'STATUS':<11}{'ATTEMPT':<9}{'DURATION':<11}DETAIL")
    hidden = 0
    for s in run.steps:
        path = s.path or s.name
        if any(int(i) >= args.items for i in _ITEM_INDEX.findall(path)):
            hidden += 1  # an item beyond --items of some fan-out
            continue
        parts = path.split("/")
        depth = len(parts) - 1
        label = parts[-1]
        if depth:  # inside item 3 of ``lines``: "[3] price", indented under its fan-out
            label = f"{parts[-2][parts[-2].rfind('[') :]} {label}"
        label = ("  " * depth + label)[:27]
        print(
            f"{label:<28}{s.kind:<10}{s.status.value:<11}{s.attempt or '':<9}"
            f"{_secs(s.duration):<11}{_detail(s)[:80]}"
        )
        for a in s.attempts:
            if a.status != "succeeded":
                print(
                    f"{'':<28}  attempt {a.attempt}: {a.status}"
                    + (f" ({a.kind})" if a.kind and a.kind != a.status else "")
                    + (f" - {a.error}" if a.error else "")
                )
    if hidden:
        print(f"({hidden} steps of items past the first {args.items} not shown: --items N)")
    if run.error is not None:
        print(f"\nerror: {run.error.type}: {run.error.message}")
        if run.error.traceback:
            print(run.error.traceback.rstrip())
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait for a run (an engine runs it elsewhere), drawing its fan-outs' progress."""
    import time

    from actorflow._types import RunStatus
    from actorflow.runtime._progress import FanoutBars
    from actorflow.runtime._views import fanout_progress, final_run

    store = _read_only(args.data_dir)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        run_id = _resolve(store, args.run)
        bars = FanoutBars(run_id) if not args.no_progress else None
        if bars is not None:
            bars.__enter__()
        try:
            while True:
                found = final_run(store, run_id)
                assert found is not None
                latest, rec = found
                status = RunStatus(rec["status"])
                if bars is not None:
                    bars.update(fanout_progress(store, latest))
                if status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    print(f"run {latest} is still {status.value}", file=sys.stderr)
                    return 3
                time.sleep(0.25)
        finally:
            if bars is not None:
                bars.__exit__()
        run: RunDetails = inspect_run(store, latest)
    finally:
        store.close()
    if args.json:
        print(_json(asdict(run)))
    else:
        print(f"run {run.id}: {run.status.value}")
        if run.error is not None:
            print(f"error: {run.error.type}: {run.error.message}")
        elif run.result is not None:
            print(f"result: {run.result}")
    return 0 if run.status.value == "completed" else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check that this machine and data directory can run an engine."""
    from pathlib import Path

    from actorflow.cli._doctor import report, run_checks

    checks = run_checks(Path(args.data_dir or _default_data_dir()), args.host, args.port)
    text, code = report(checks, args.json)
    print(text)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from actorflow.cli._demo import run_demo

    run_demo(args.data_dir or _default_data_dir(), args.orders)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``actorflow`` command."""
    parser = argparse.ArgumentParser(prog="actorflow", description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the store directory (default: $ACTORFLOW_DATA_DIR or .actorflow)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the quick-start example on the embedded store")
    demo.add_argument("--orders", type=int, default=3, help="how many runs to trigger")
    demo.set_defaults(func=cmd_demo)

    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--workflow", help="only this workflow's runs")
    runs.add_argument("--status", help="queued, running, completed, failed or cancelled")
    runs.add_argument("--limit", type=int, default=50)
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="one run: steps, attempts, timings, errors")
    show.add_argument("run", help="run id (or a unique prefix of it)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument(
        "--items",
        type=int,
        default=10,
        metavar="N",
        help="show the steps of the first N items of each fan-out (default 10)",
    )
    show.set_defaults(func=cmd_show)

    doctor = sub.add_parser(
        "doctor",
        help="check the store, the native evaluator, workers, shared memory and the port",
        description=(
            "Runs each check and prints its verdict (ok, warn, fail). Exit status 1 if any "
            "check failed. Stored data is never changed."
        ),
    )
    doctor.add_argument("--host", default="127.0.0.1", help="the webhook address to try")
    doctor.add_argument("--port", type=int, default=8080, help="the webhook port to try")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    wait = sub.add_parser(
        "wait",
        help="wait for a run to finish, with a progress bar per fan-out",
        description=(
            "Follows a run that an engine is running (reading the store read-only) until it "
            "ends. Exit status: 0 completed, 1 failed or cancelled, 3 still running at "
            "--timeout."
        ),
    )
    wait.add_argument("run", help="run id (or a unique prefix of it)")
    wait.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    wait.add_argument("--no-progress", action="store_true", help="draw no progress bars")
    wait.add_argument("--json", action="store_true", help="print the run as JSON at the end")
    wait.set_defaults(func=cmd_wait)

    serve = sub.add_parser(
        "serve", help="serve an engine's webhooks and REST API (uvicorn on uvloop)"
    )
    serve.add_argument(
        "app", help="module:attr or file.py:attr naming an Engine (attr default: engine)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--read-only", action="store_true", help="refuse API actions (403); no dashboard buttons"
    )
    serve.add_argument("--no-dashboard", action="store_true", help="serve no dashboard at /")
    serve.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="requests per second per client address (429 past it; default: api_rate_limit)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the server answers to besides its address (and localhost on "
        "loopback): the name clients or a proxy use, '.example.com' for a domain, '*' for any; "
        "repeatable; adds to allowed_hosts",
    )
    serve.set_defaults(func=cmd_serve)

    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout) and print its table",
        description=(
            "Runs bench/ (each figure beside a baseline measured in the same run), prints a "
            "table and writes bench/results/*.json."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.set_defaults(func=cmd_bench)

    replay = sub.add_parser(
        "replay",
        help="replay a code workflow run's history against the current code",
        description=(
            "Replays a recorded history (from the store, or a file written with --export) "
            "against the workflow function of APP and reports whether the code still takes "
            "the recorded path. Exit status: 0 deterministic, 1 divergence, 2 usage error."
        ),
    )
    replay.add_argument("run", nargs="?", help="run id (or unique prefix) in the store")
    replay.add_argument("--history", help="replay this exported history file instead")
    replay.add_argument(
        "--app",
        help="module:attr or file.py:attr naming the Engine with the workflow (default: "
        "import the function the run's definition names, module:qualname)",
    )
    replay.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,  # the global option's value stands unless given here
        help="store directory (default: the app's engine's, else .actorflow)",
    )
    replay.add_argument(
        "--export",
        metavar="FILE",
        help="write the history to FILE (then replay it too with --app or --check)",
    )
    replay.add_argument(
        "--check", action="store_true", help="with --export and no --app: replay it too"
    )
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(func=cmd_replay)

    from actorflow.cli import _remote, _store

    _remote.add_parsers(sub)
    _store.add_parsers(sub)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark suite of a source checkout (``bench/``) and print its table."""
    import importlib

    sys.path.insert(0, os.getcwd())
    try:
        suite = importlib.import_module("bench.__main__")
    except ImportError:
        print(
            "actorflow bench: the benchmark suite ships with the source tree (bench/); run "
            "this from a checkout of actorflow (or `make bench` there)",
            file=sys.stderr,
        )
        return 2
    suite.main(["--quick"] if args.quick else [])
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from actorflow.cli._replay import replay_command

    return replay_command(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from actorflow.cli._serve import serve

    if not 0 < args.port < 65536:
        raise ActorflowError(f"--port: expected 1 to 65535, got {args.port}")
    serve(
        args.app,
        args.host,
        args.port,
        args.log_level,
        args.read_only,
        not args.no_dashboard,
        args.rate_limit,
        args.allowed_host,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``actorflow`` command; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ActorflowError as exc:
        print(f"actorflow: {exc}", file=sys.stderr)
        return 1
    return code
