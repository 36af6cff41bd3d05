"""``actorflow trigger|cancel|retry|resume`` and ``wait --url``: a running engine, over its API.

Only the engine writes its store, so these commands ask the engine that holds it, through
the JSON API that ``actorflow serve`` (or any service mounting ``engine.asgi()``) exposes,
with :class:`actorflow.Client` (the ``client`` extra, httpx): ``--url`` (default
``$ACTORFLOW_URL`` or ``http://127.0.0.1:8080``), presenting ``$ACTORFLOW_TOKEN`` (else
``$ACTORFLOW_API_TOKEN``, the variable ``actorflow serve`` reads) as a bearer token; there is
no token argument, as ``ps`` would show it. Reading commands (``runs``, ``show``, ``wait``
without ``--url``) open the store read-only and need no server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from actorflow._extras import require
from actorflow.cli._output import CommandError, Exit, Output, UsageError
from actorflow.errors import ActorflowError, EngineUnreachable, ResultTimeout, RunError

if TYPE_CHECKING:
    from actorflow.client import Client, RemoteRunHandle
    from actorflow.views import RunDetails

__all__ = ["add_parsers", "wait_remote"]


class _ApiError(CommandError):
    """The engine answered with an error, or nothing answered."""


def _url(args: argparse.Namespace) -> str:
    """The engine's base URL (--url, $ACTORFLOW_URL or the default), checked."""
    given = args.url or os.environ.get("ACTORFLOW_URL")
    url = str(given or "http://127.0.0.1:8080").rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        ok = False
    if not ok:
        where = "--url" if args.url else "ACTORFLOW_URL"
        raise UsageError(
            f"{where}: expected an http(s) URL such as http://127.0.0.1:8080, got {url!r}"
        )
    return url


def _token() -> str | None:
    """The token to present: ``$ACTORFLOW_TOKEN``, else the server's ``$ACTORFLOW_API_TOKEN``."""
    return os.environ.get("ACTORFLOW_TOKEN") or os.environ.get("ACTORFLOW_API_TOKEN") or None


def _client(args: argparse.Namespace, timeout: float | None) -> Client:
    """The client of ``--url``; MissingExtra (exit 1) without httpx."""
    url = _url(args)
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout: expected seconds > 0, got {timeout:g}")
    require("httpx", f"actorflow {args.command}")  # names the command, not af.Client
    from actorflow.client import Client

    return Client(url, token=_token(), timeout=timeout)


@contextmanager
def _asking(args: argparse.Namespace) -> Iterator[None]:
    """Turn the client's errors into the command's: the request, the status, what to do."""
    from actorflow.client._transport import answer_of

    try:
        yield
    except EngineUnreachable as exc:
        if exc.timeout is not None:
            raise _ApiError(
                f"the engine at {exc.url} did not answer within {exc.timeout:g}s (--timeout)",
                "timeout",
                Exit.TIMEOUT,
            ) from None
        raise _ApiError(
            f"no engine answers at {exc.url} ({exc.reason}): start one with `actorflow serve "
            "module:engine`, or pass --url (or set ACTORFLOW_URL)",
            "unreachable",
        ) from None
    except ActorflowError as exc:
        answer = answer_of(exc)
        if answer is None:
            raise
        detail = answer.detail
        if answer.status == 401:
            detail += (
                "; set ACTORFLOW_TOKEN to the engine's API token"
                if _token() is None
                else "; ACTORFLOW_TOKEN is not the engine's API token"
            )
        raise _ApiError(
            f"{answer.method} {answer.path}: {answer.status} {detail}",
            answer.error,
            status=answer.status,
        ) from None


def _payload(text: str | None) -> Any:
    """A JSON payload given as text, ``@file`` or ``-`` (stdin); None when not given."""
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"payload: cannot read {text[1:]!r}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"payload: expected JSON (text, @file or -), {exc}") from None


def cmd_trigger(args: argparse.Namespace, out: Output) -> int:
    payload = _payload(args.payload)
    with _client(args, args.timeout) as client, _asking(args):
        run = client.trigger(args.workflow, payload, idempotency_key=args.key)
    answer = {"run_id": run.id, "workflow": run.workflow_id}
    out.result(answer, f"run {run.id} of {run.workflow_id} started")
    return Exit.OK


def cmd_cancel(args: argparse.Namespace, out: Output) -> int:
    with _client(args, args.timeout) as client, _asking(args):
        if args.terminate:
            cancelled = client.terminate(args.run, args.reason or "")
        else:
            cancelled = client.cancel(args.run, args.reason or "")
    verb = "cancelled" if cancelled else "not cancelled (it had already ended)"
    out.result({"run_id": args.run, "cancelled": cancelled}, f"run {args.run} {verb}")
    return Exit.OK if cancelled else Exit.FAILED


def cmd_retry(args: argparse.Namespace, out: Output) -> int:
    with _client(args, args.timeout) as client, _asking(args):
        run = client.retry(args.run)
    answer = {"run_id": run.id, "workflow": run.workflow_id}
    out.result(answer, f"run {args.run} retried as run {run.id}")
    return Exit.OK


def cmd_resume(args: argparse.Namespace, out: Output) -> int:
    """Resume an approval by its token, or the one approval a run waits at."""
    payload = _payload(args.payload)
    token = args.target
    with _client(args, args.timeout) as client, _asking(args):
        waiting = client.approvals("waiting")
        mine = [a for a in waiting if str(a.get("run_id", "")).startswith(args.target)]
        if mine and not any(a.get("token") == args.target for a in waiting):
            if len(mine) > 1:
                steps = ", ".join(f"{a['step']} ({a['token']})" for a in mine)
                raise UsageError(
                    f"run {args.target} waits at {len(mine)} approvals: {steps}; give a token"
                )
            token = mine[0]["token"]
        client.resume(token, payload)
    out.result({"token": token, "resumed": True}, "resumed")
    return Exit.OK


def wait_remote(args: argparse.Namespace, out: Output) -> tuple[RunDetails, bool]:
    """``actorflow wait RUN --url URL``: long-poll the run's result, drawing fan-out bars.

    Returns:
        The run as recorded at the end, and whether ``--timeout`` passed first.
    """
    import importlib.util

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with _client(args, 30.0) as client, _asking(args):
        run = client.run(args.run)
        drawn = not args.no_progress and importlib.util.find_spec("rich") is not None
        if drawn:
            from actorflow.engine._progress import FanoutBars

            with FanoutBars(run.id) as bars:
                timed_out = _follow(run, deadline, lambda: bars.update(run.progress()))
        else:
            timed_out = _follow(run, deadline, None)
        return run.inspect(), timed_out


def _follow(
    run: RemoteRunHandle, deadline: float | None, redraw: Callable[[], None] | None
) -> bool:
    """Wait for ``run`` until ``deadline``; True if it passed first. Bars: a poll a second."""
    while True:
        if redraw is not None:
            redraw()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        step = remaining if redraw is None else min(1.0, 1.0 if remaining is None else remaining)
        try:
            run.result(timeout=step)
            return False
        except RunError:
            return False  # failed or cancelled: the run as recorded says how
        except ResultTimeout:
            if deadline is not None and time.monotonic() >= deadline:
                return True


def add_parsers(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the commands to the ``actorflow`` parser."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            help="the engine's API (default: $ACTORFLOW_URL or http://127.0.0.1:8080); the "
            "token sent is $ACTORFLOW_TOKEN (else $ACTORFLOW_API_TOKEN)",
        )
        p.add_argument(
            "--timeout", type=float, default=30.0, help="seconds to wait for it (exit 3 past)"
        )
        json_flag(p)

    trigger = sub.add_parser(
        "trigger",
        help="start a run through a running engine's API",
        description="Starts a run of WORKFLOW with PAYLOAD (JSON text, @file or - for stdin).",
    )
    trigger.add_argument("workflow")
    trigger.add_argument("payload", nargs="?", help="JSON text, @file, or - (stdin)")
    trigger.add_argument("--key", help="idempotency key: the same key is the same run")
    common(trigger)
    trigger.set_defaults(func=cmd_trigger)

    cancel = sub.add_parser("cancel", help="cancel a run (exit 4 if it had already ended)")
    cancel.add_argument("run")
    cancel.add_argument("--reason", help="recorded with the run")
    cancel.add_argument(
        "--terminate",
        action="store_true",
        help="end it at once: neither its code nor its on_cancel hook is told",
    )
    common(cancel)
    cancel.set_defaults(func=cmd_cancel)

    retry = sub.add_parser(
        "retry", help="run a failed or cancelled run again, as a new run with its input"
    )
    retry.add_argument("run")
    common(retry)
    retry.set_defaults(func=cmd_retry)

    resume = sub.add_parser(
        "resume",
        help="resume an approval (human_in_the_loop) by its token or its run's id",
    )
    resume.add_argument("target", help="the approval's token, or the id of a run waiting at one")
    resume.add_argument("payload", nargs="?", help="the approval's output: JSON, @file or -")
    common(resume)
    resume.set_defaults(func=cmd_resume)
