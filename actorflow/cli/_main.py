"""The ``actorflow`` commands.

Store-reading commands open the store read-only, so they work while an engine runs on it.
What they print, and how every command ends (errors, exit statuses, a closed pipe), is
``cli/_output.py``'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NoReturn

from actorflow.cli._output import EXIT_HELP, Column, Exit, Output, UsageError
from actorflow.cli._reading import default_data_dir as _default_data_dir
from actorflow.cli._reading import read_only as _read_only
from actorflow.cli._reading import resolve as _resolve
from actorflow.errors import ActorflowError
from actorflow.views import RunDetails, RunSummary, StepDetails, inspect_run, list_runs

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["build_parser", "main"]


def _time(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _secs(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1000:.1f}ms" if t < 1 else f"{t:.2f}s"


def cmd_runs(args: argparse.Namespace, out: Output) -> int:
    store = _read_only(args.data_dir)
    try:
        runs: list[RunSummary] = list_runs(store, args.workflow, args.status, args.limit)
    finally:
        store.close()
    if out.as_json:
        out.json([asdict(r) for r in runs])
        return Exit.OK
    out.table(
        ["RUN", "WORKFLOW", Column("STATUS", status=True), "CREATED", Column("DURATION", True)],
        [
            (
                r.id,
                r.workflow_id,
                r.status.value,
                _time(r.created_at),
                _secs(None if r.ended_at is None else r.ended_at - r.created_at),
            )
            for r in runs
        ],
        empty="no runs",
    )
    return Exit.OK


_ITEM_INDEX = re.compile(r"\[(\d+)\]")


def _detail(s: StepDetails) -> str:
    """What to say about a node: its error, what it chose, counted or started, or its I/O.

    Its input and output read ``input -> output`` (a failure adds its input to the error).
    """
    if s.error is not None:
        said = f"{s.error.type.rpartition('.')[2]}: {s.error.message}"
        return said if s.input is None else f"{said} (input {s.input})"
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
    if not parts and s.output is not None:
        parts.append(s.output if s.input is None else f"{s.input} -> {s.output}")
    elif not parts and s.input is not None:
        parts.append(f"input {s.input}")  # (no output: running, or cancelled)
    return "; ".join(parts)


def _step_rows(run: RunDetails, items: int) -> tuple[list[tuple[Any, ...]], int]:
    """The rows of ``show``'s step table, and how many steps of items past ``items`` it hid."""
    rows: list[tuple[Any, ...]] = []
    hidden = 0
    for s in run.steps:
        path = s.path or s.name
        if any(int(i) >= items for i in _ITEM_INDEX.findall(path)):
            hidden += 1  # an item beyond --items of some fan-out
            continue
        parts = path.split("/")
        depth = len(parts) - 1
        label = parts[-1]
        if depth:  # inside item 3 of ``lines``: "[3] price", indented under its fan-out
            label = f"{parts[-2][parts[-2].rfind('[') :]} {label}"
        indent = "  " * depth
        rows.append(
            (indent + label, s.kind, s.status.value, s.attempt or "", _secs(s.duration), _detail(s))
        )
        for a in s.attempts:
            if a.status != "succeeded":
                why = " - ".join(x for x in (a.kind if a.kind != a.status else None, a.error) if x)
                rows.append((f"{indent}  attempt {a.attempt}", "", a.status, a.attempt, "", why))
    return rows, hidden


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    if args.items < 0:
        raise UsageError(f"--items: expected a number >= 0, got {args.items}")
    store = _read_only(args.data_dir)
    try:
        run: RunDetails = inspect_run(store, _resolve(store, args.run))
    finally:
        store.close()
    if out.as_json:
        out.json(run.to_dict())
        return Exit.OK
    fields: list[tuple[str, Any]] = [
        ("run", run.id),
        ("workflow", run.workflow_id),
    ]
    if run.version not in (None, 1):
        fields.append(("version", run.version))
    fields += [
        ("status", run.status.value),
        ("created", _time(run.created_at)),
        ("duration", _secs(run.duration)),
    ]
    if run.parent_run_id:
        fields.append(("parent", run.parent_run_id))
    if run.idempotency_key:
        fields.append(("key", run.idempotency_key))
    fields.append(("payload", run.payload))
    if run.result is not None:
        fields.append(("result", run.result))
    if run.cancel_reason is not None:
        fields.append(("cancelled", run.cancel_reason or "(no reason given)"))
    if getattr(run, "held", None):
        fields.append(("waiting for", run.held))
    out.fields(fields)
    out.line()
    rows, hidden = _step_rows(run, args.items)
    out.table(
        [
            "STEP",
            "KIND",
            Column("STATUS", status=True),
            Column("ATTEMPT", right=True),
            Column("DURATION", right=True),
            Column("DETAIL", wrap=True),
        ],
        rows,
    )
    if hidden:
        out.note(f"({hidden} steps of items past the first {args.items} not shown: --items N)")
    if run.error is not None:
        # "ValueError" as Python prints it (and the steps above, and the dashboard).
        shown_type = run.error.type.removeprefix("builtins.")
        out.line(f"\nerror: {shown_type}: {run.error.message}")
        # Your code's frames, as the dashboard shows them; the engine's on request.
        shown = run.error.traceback if args.full_traceback else run.error.user_traceback
        if shown:
            out.line(shown.rstrip())
            if shown != run.error.traceback:
                out.note("(the engine's frames are left out: --full-traceback shows them)")
    return Exit.OK


def cmd_wait(args: argparse.Namespace, out: Output) -> int:
    """Wait for a run (an engine runs it elsewhere), drawing its fan-outs' progress."""
    from actorflow._types import RunStatus

    if args.timeout is not None and not args.timeout >= 0:
        raise UsageError(f"--timeout: expected seconds >= 0, got {args.timeout}")
    if args.url is not None:  # through the engine's API (another machine)
        from actorflow.cli._remote import wait_remote

        run, timed_out = wait_remote(args, out)
    else:
        run, timed_out = _wait_in_store(args)
    if out.as_json:
        out.json({**run.to_dict(), "timed_out": timed_out})
    elif timed_out:
        out.note(f"actorflow wait: run {run.id} is still {run.status.value} after {args.timeout}s")
    else:
        out.line(f"run {run.id}: {run.status.value}")
        if run.error is not None:
            out.line(f"error: {run.error.type}: {run.error.message}")
        elif run.result is not None:
            out.line(f"result: {run.result}")
    if timed_out:
        return Exit.TIMEOUT
    return Exit.OK if run.status is RunStatus.COMPLETED else Exit.FAILED


def _wait_in_store(args: argparse.Namespace) -> tuple[RunDetails, bool]:
    """Follow the run in the store (read-only); the run at the end, and if time ran out."""
    import importlib.util
    import time

    from actorflow._types import RunStatus
    from actorflow.engine._progress import FanoutBars
    from actorflow.views import fanout_progress, final_run

    store = _read_only(args.data_dir)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    timed_out = False
    try:
        run_id = _resolve(store, args.run)
        # The bars are rich's; without rich installed the wait goes on without them.
        drawn = not args.no_progress and importlib.util.find_spec("rich") is not None
        bars = FanoutBars(run_id) if drawn else None
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
                if status.terminal:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.25)
        finally:
            if bars is not None:
                bars.__exit__()
        return inspect_run(store, latest), timed_out
    finally:
        store.close()


def cmd_doctor(args: argparse.Namespace, out: Output) -> int:
    """Check that this machine and data directory can run an engine."""
    from pathlib import Path

    from actorflow.cli._doctor import run_checks

    checks = run_checks(Path(args.data_dir or _default_data_dir()), args.host, args.port)
    failed = any(c.verdict == "fail" for c in checks)
    if out.as_json:
        out.json({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        out.table(
            [Column("VERDICT", status=True), "CHECK", Column("DETAIL", wrap=True)],
            [(c.verdict, c.name, c.detail) for c in checks],
        )
    return Exit.FAILED if failed else Exit.OK


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from actorflow.cli._demo import run_demo

    run_demo(args.data_dir or _default_data_dir(), args.orders, out)
    return Exit.OK


def cmd_replay(args: argparse.Namespace, out: Output) -> int:
    from actorflow.cli._replay import replay_command

    return replay_command(args, out)


def cmd_plan_diff(args: argparse.Namespace, out: Output) -> int:
    from actorflow.cli._plan import plan_diff_command

    return plan_diff_command(args, out)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from actorflow.cli._serve import serve

    if not 0 < args.port < 65536:
        raise UsageError(f"--port: expected 1 to 65535, got {args.port}")
    if args.token is not None and (not args.token or any(c.isspace() for c in args.token)):
        # An unset variable ($TOKEN) must not serve an open API by accident.
        raise UsageError("--token: expected a token without spaces, got an empty or spaced one")
    serve(
        args.app,
        args.host,
        args.port,
        args.log_level,
        args.read_only,
        not args.no_dashboard,
        args.rate_limit,
        args.allowed_hosts,
        args.token,
        out,
    )
    return Exit.OK


class _Parser(argparse.ArgumentParser):
    """Argument errors raise :class:`UsageError`, so ``main`` reports them (as JSON too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage(), self.prog)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse swallows write errors; a closed pipe must reach main (``--help | head``).
        if message:
            (file or sys.stderr).write(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``actorflow`` command."""
    parser = _Parser(
        prog="actorflow",
        description="Look at, follow and drive the runs of an actorflow engine, and look after\n"
        "its store. Every command that prints data takes --json; tables are plain\n"
        "tab-separated columns when stdout is not a terminal.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the store directory (default: $ACTORFLOW_DATA_DIR or .actorflow)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def json_flag(p: argparse.ArgumentParser, what: str = "machine-readable output") -> None:
        p.add_argument("--json", action="store_true", help=f"{what} (errors too)")

    demo = sub.add_parser("demo", help="run the quick-start example on the embedded store")
    demo.add_argument("--orders", type=int, default=3, help="how many runs to trigger")
    demo.set_defaults(func=cmd_demo)

    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--workflow", help="only this workflow's runs")
    runs.add_argument("--status", help="queued, running, completed, failed or cancelled")
    runs.add_argument("--limit", type=int, default=50)
    json_flag(runs)
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="one run: steps, attempts, timings, errors")
    show.add_argument("run", help="run id (or a unique prefix of it)")
    json_flag(show)
    show.add_argument(
        "--items",
        type=int,
        default=10,
        metavar="N",
        help="show the steps of the first N items of each fan-out (default 10)",
    )
    show.add_argument(
        "--full-traceback",
        action="store_true",
        help="print the error's whole traceback, the engine's frames too",
    )
    show.set_defaults(func=cmd_show)

    doctor = sub.add_parser(
        "doctor",
        help="check the store, the native evaluator, workers, shared memory and the port",
        description=(
            "Runs each check and prints its verdict (ok, warn, fail). Exit status 4 if any "
            "check failed. Stored data is never changed."
        ),
    )
    doctor.add_argument("--host", default="127.0.0.1", help="the webhook address to try")
    doctor.add_argument("--port", type=int, default=8080, help="the webhook port to try")
    json_flag(doctor)
    doctor.set_defaults(func=cmd_doctor)

    wait = sub.add_parser(
        "wait",
        help="wait for a run to finish, with a progress bar per fan-out",
        description=(
            "Follows a run that an engine is running (reading the store read-only, or with "
            "--url through the engine's API) until it ends. Exit status: 0 completed, 4 "
            "failed or cancelled, 3 still going at --timeout (with --json: the run as it is, "
            'with "timed_out": true).'
        ),
    )
    wait.add_argument("run", help="run id (or a unique prefix of it, in the store)")
    wait.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    wait.add_argument(
        "--url",
        help="follow the run through this engine's API instead of its store (another "
        "machine; the whole run id; the token sent is $ACTORFLOW_TOKEN, else "
        "$ACTORFLOW_API_TOKEN)",
    )
    wait.add_argument("--no-progress", action="store_true", help="draw no progress bars")
    json_flag(wait, "print the run as JSON at the end, with timed_out")
    wait.set_defaults(func=cmd_wait)

    _serve_parser(sub)
    _replay_parser(sub, json_flag)
    _plan_parser(sub, json_flag)

    from actorflow.cli import _remote, _store, _tune, _versions

    _versions.add_parser(sub, json_flag)
    _tune.add_parser(sub, json_flag)
    _remote.add_parsers(sub, json_flag)
    _store.add_parsers(sub, json_flag)
    return parser


def _serve_parser(sub: Any) -> None:
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
        "--token",
        default=None,
        help="the bearer token the API, the dashboard and /metrics require (default: the "
        "engine's api_token, from $ACTORFLOW_API_TOKEN). Prefer the variable: an argument "
        "is visible to every user of the machine in `ps`. Never printed or logged",
    )
    serve.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="requests per second per client address (429 past it; default: api_rate_limit)",
    )
    serve.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the server answers to besides its address (and localhost on "
        "loopback): the name clients or a proxy use, '.example.com' for a domain, '*' for any; "
        "repeatable; adds to allowed_hosts",
    )
    serve.set_defaults(func=cmd_serve)


def _plan_parser(sub: Any, json_flag: Any) -> None:
    plan = sub.add_parser("plan", help="check a deploy of graph workflows against the store")
    plans = plan.add_subparsers(dest="plan_command", metavar="COMMAND", required=True)
    diff = plans.add_parser(
        "diff",
        help="what starting APP on this store would do to the runs in flight",
        description=(
            "Compares the graph workflows of APP (not started) with the plans the store's "
            "unfinished runs started on, and lists per plan the runs it affects, the nodes "
            "added, removed and changed, and the runs that would wait for their definition "
            "(a workflow or a step the code no longer defines). Writes nothing. Exit "
            "status: 0 no run would wait, 4 some would, 1 error, 2 usage."
        ),
    )
    diff.add_argument("app", help="module:attr or file.py:attr naming the Engine to deploy")
    diff.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,  # the global option's value stands unless given here
        help="store directory (default: the app's engine's)",
    )
    json_flag(diff, "print the changes as JSON (a list, one object per plan)")
    diff.set_defaults(func=cmd_plan_diff)


def _replay_parser(sub: Any, json_flag: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="replay a code workflow run's history against the current code",
        description=(
            "Replays a recorded history (from the store, or a file written with --export) "
            "against the workflow function of APP and reports whether the code still takes "
            "the recorded path. Exit status: 0 deterministic, 4 divergence, 1 error (the "
            "history or the app cannot be loaded), 2 usage."
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
    json_flag(replay, "print the report as JSON")
    replay.set_defaults(func=cmd_replay)


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` was asked for (before any ``--``), known before parsing succeeds."""
    given = list(argv)
    return "--json" in (given[: given.index("--")] if "--" in given else given)


def _run(argv: Sequence[str]) -> int:
    out = Output(None, _wants_json(argv))
    try:
        args = build_parser().parse_args(argv)
        out = Output.of(args)
        code: int = args.func(args, out)
        return int(code)
    except SystemExit as exc:  # --help and --version print and exit 0
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:
        return out.error(ActorflowError("interrupted"), Exit.INTERRUPTED)
    except (ActorflowError, OSError) as exc:  # OSError: a file or directory it cannot use
        return out.error(exc)
    except Exception as exc:  # a bug: the traceback is for its report
        traceback.print_exc()
        return out.error(exc) if out.as_json else int(Exit.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``actorflow`` command; return its exit status (listed in ``actorflow --help``).

    A closed stdout (``actorflow runs | head -1``) ends the command quietly with status 141,
    the status a shell shows for a tool that SIGPIPE ended.
    """
    try:
        code = _run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # inside the try: a closed pipe may only show here
    except BrokenPipeError:
        # The reader has gone. Point stdout at /dev/null so the interpreter's own flush at
        # exit does not fail a second time (Python's documented recipe), and stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout has no file descriptor (redirected in-process)
            pass
        return Exit.CLOSED_PIPE
    return code
