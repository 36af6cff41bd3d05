"""``actorflow trigger|cancel|retry|resume``: commands for a running engine, over its REST API.

Only the engine writes its store, so these commands ask the engine that holds it, through
the JSON API that ``actorflow serve`` (or any service mounting ``engine.asgi()``) exposes:
``--url`` (default ``$ACTORFLOW_URL`` or ``http://127.0.0.1:8080``), presenting
``$ACTORFLOW_TOKEN`` (else ``$ACTORFLOW_API_TOKEN``, the variable ``actorflow serve``
reads) as a bearer token; there is no token argument, as ``ps`` would show it. Reading commands
(``runs``, ``show``, ``wait``) open the store read-only and need no server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from actorflow.cli._output import CommandError, Exit, Output, UsageError

__all__ = ["add_parsers"]


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


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    extra: dict[str, str] | None = None,
) -> Any:
    url = _url(args) + path
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json", **(extra or {})}
    token = _token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
        except Exception:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        detail = str(answer.get("detail") or exc.reason)
        if exc.code == 401:
            detail += (
                "; set ACTORFLOW_TOKEN to the engine's API token"
                if token is None
                else "; ACTORFLOW_TOKEN is not the engine's API token"
            )
        code = str(answer.get("error") or "http_error")
        raise _ApiError(f"{method} {path}: {exc.code} {detail}", code, status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise _ApiError(
                f"the engine at {_url(args)} did not answer within {args.timeout:g}s (--timeout)",
                "timeout",
                Exit.TIMEOUT,
            ) from None
        raise _ApiError(
            f"no engine answers at {_url(args)} ({reason}): start one with `actorflow serve "
            "module:engine`, or pass --url (or set ACTORFLOW_URL)",
            "unreachable",
        ) from None
    return json.loads(raw) if raw else None


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


def _quoted(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def cmd_trigger(args: argparse.Namespace, out: Output) -> int:
    body = _payload(args.payload)
    path = f"/api/workflows/{_quoted(args.workflow)}/trigger"
    answer = _call(args, "POST", path, body, {"Idempotency-Key": args.key} if args.key else None)
    out.result(answer, f"run {answer['run_id']} of {answer['workflow']} started")
    return Exit.OK


def cmd_cancel(args: argparse.Namespace, out: Output) -> int:
    body = {"reason": args.reason} if args.reason else {}
    answer = _call(args, "POST", f"/api/runs/{_quoted(args.run)}/cancel", body)
    verb = "cancelled" if answer.get("cancelled") else "not cancelled (it had already ended)"
    out.result(answer, f"run {answer['run_id']} {verb}")
    return Exit.OK if answer.get("cancelled") else Exit.FAILED


def cmd_retry(args: argparse.Namespace, out: Output) -> int:
    answer = _call(args, "POST", f"/api/runs/{_quoted(args.run)}/retry")
    out.result(answer, f"run {args.run} retried as run {answer['run_id']}")
    return Exit.OK


def cmd_resume(args: argparse.Namespace, out: Output) -> int:
    """Resume an approval by its token, or the one approval a run waits at."""
    token = args.target
    waiting = _call(args, "GET", "/api/approvals?status=waiting") or []
    mine = [a for a in waiting if str(a.get("run_id", "")).startswith(args.target)]
    if mine and not any(a.get("token") == args.target for a in waiting):
        if len(mine) > 1:
            steps = ", ".join(f"{a['step']} ({a['token']})" for a in mine)
            raise UsageError(
                f"run {args.target} waits at {len(mine)} approvals: {steps}; give a token"
            )
        token = mine[0]["token"]
    answer = _call(args, "POST", f"/api/approvals/{_quoted(token)}/resume", _payload(args.payload))
    out.result({"token": token, **(answer or {})}, "resumed")
    return Exit.OK


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
