"""``actorflow trigger|cancel|retry|resume``: commands for a running engine, over its REST API.

Only the engine writes its store, so these commands ask the engine that holds it, through
the JSON API that ``actorflow serve`` (or any service mounting ``engine.asgi()``) exposes:
``--url`` (default ``$ACTORFLOW_URL`` or ``http://127.0.0.1:8080``). Reading commands
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
from typing import Any

from actorflow.errors import ActorflowError

__all__ = ["add_parsers"]


class _ApiError(ActorflowError):
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
        raise _ApiError(
            f"{where}: expected an http(s) URL such as http://127.0.0.1:8080, got {url!r}"
        )
    return url


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
    token = os.environ.get("ACTORFLOW_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail") or exc.reason
        except Exception:
            detail = exc.reason
        raise _ApiError(f"{method} {path}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _ApiError(
            f"no engine answers at {_url(args)} ({reason}): start one with `actorflow serve "
            "module:engine`, or pass --url (or set ACTORFLOW_URL)"
        ) from None
    return json.loads(raw) if raw else None


def _payload(text: str | None) -> Any:
    """A JSON payload given as text, ``@file`` or ``-`` (stdin); None when not given."""
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _ApiError(f"payload: expected JSON (text, @file or -), {exc}") from None


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def cmd_trigger(args: argparse.Namespace) -> int:
    body = _payload(args.payload)
    path = f"/api/workflows/{urllib.parse.quote(args.workflow, safe='')}/trigger"
    out = _call(args, "POST", path, body, {"Idempotency-Key": args.key} if args.key else None)
    _print(args, out, f"run {out['run_id']} of {out['workflow']} started")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason else {}
    out = _call(args, "POST", f"/api/runs/{urllib.parse.quote(args.run, safe='')}/cancel", body)
    verb = "cancelled" if out.get("cancelled") else "not cancelled (it had already ended)"
    _print(args, out, f"run {out['run_id']} {verb}")
    return 0 if out.get("cancelled") else 1


def cmd_retry(args: argparse.Namespace) -> int:
    out = _call(args, "POST", f"/api/runs/{urllib.parse.quote(args.run, safe='')}/retry")
    _print(args, out, f"run {args.run} retried as run {out['run_id']}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Resume an approval by its token, or the one approval a run waits at."""
    token = args.target
    waiting = _call(args, "GET", "/api/approvals?status=waiting") or []
    mine = [a for a in waiting if str(a.get("run_id", "")).startswith(args.target)]
    if mine and not any(a.get("token") == args.target for a in waiting):
        if len(mine) > 1:
            steps = ", ".join(f"{a['step']} ({a['token']})" for a in mine)
            raise _ApiError(
                f"run {args.target} waits at {len(mine)} approvals: {steps}; give a token"
            )
        token = mine[0]["token"]
    out = _call(
        args,
        "POST",
        f"/api/approvals/{urllib.parse.quote(token, safe='')}/resume",
        _payload(args.payload),
    )
    _print(args, {"token": token, **(out or {})}, "resumed")
    return 0


def add_parsers(sub: Any) -> None:
    """Add the commands to the ``actorflow`` parser."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            help="the engine's API (default: $ACTORFLOW_URL or http://127.0.0.1:8080)",
        )
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    trigger = sub.add_parser(
        "trigger",
        help="start a run through a running engine's API",
        description="Starts a run of WORKFLOW with PAYLOAD (JSON text, @file or - for stdin).",
    )
    trigger.add_argument("workflow")
    trigger.add_argument("payload", nargs="?", help="JSON text, @file, or - (stdin)")
    trigger.add_argument("--key", help="idempotency key: the same key is the same run")
    common(trigger)
    trigger.set_defaults(func=_guarded(cmd_trigger))

    cancel = sub.add_parser("cancel", help="cancel a run (exit 1 if it had already ended)")
    cancel.add_argument("run")
    cancel.add_argument("--reason", help="recorded with the run")
    common(cancel)
    cancel.set_defaults(func=_guarded(cmd_cancel))

    retry = sub.add_parser(
        "retry", help="run a failed or cancelled run again, as a new run with its input"
    )
    retry.add_argument("run")
    common(retry)
    retry.set_defaults(func=_guarded(cmd_retry))

    resume = sub.add_parser(
        "resume",
        help="resume an approval (human_in_the_loop) by its token or its run's id",
    )
    resume.add_argument("target", help="the approval's token, or the id of a run waiting at one")
    resume.add_argument("payload", nargs="?", help="the approval's output: JSON, @file or -")
    common(resume)
    resume.set_defaults(func=_guarded(cmd_resume))


def _guarded(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = fn(args)
            return code
        except _ApiError as exc:
            print(f"actorflow {args.command}: {exc}", file=sys.stderr)
            return 1

    return run
