"""``actorflow replay``: check a recorded code workflow history against the current code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from actorflow.errors import ClientError

__all__ = ["replay_command"]


def _engine(target: str | None) -> Any:
    if target is None:
        return None
    from actorflow.cli._serve import load_object
    from actorflow.runtime._engine import Engine

    engine = load_object(target)
    if not isinstance(engine, Engine):
        raise ClientError(f"--app: {target!r} is not an actorflow Engine")
    return engine


def _history(args: argparse.Namespace, engine: Any) -> dict[str, Any]:
    from actorflow.cli._main import _default_data_dir, _resolve
    from actorflow.code._history import export_history, load_history
    from actorflow.store import LmdbStore

    if args.history:
        load_history(args.history)  # checks the file
        doc: dict[str, Any] = json.loads(Path(args.history).read_text())
        return doc
    if not args.run:
        raise ClientError("give a RUN id, or --history FILE")
    data_dir = args.data_dir or (engine.config.data_dir if engine else _default_data_dir())
    store = LmdbStore(data_dir, read_only=True)
    try:
        return export_history(store, _resolve(store, args.run))
    finally:
        store.close()


def replay_command(args: argparse.Namespace) -> int:
    """Run the command; 0: deterministic, 1: divergence or panic, 2: usage error."""
    from actorflow.code._definition import CodeWorkflow
    from actorflow.code._replay import replay

    try:
        engine = _engine(args.app)
        doc = _history(args, engine)
        if args.export:
            Path(args.export).write_text(json.dumps(doc, indent=2))
            if engine is None:
                print(f"history of run {doc['run_id']} written to {args.export}")
                return 0
        if engine is None:
            raise ClientError("--app is required to replay (it names the current code)")
        wf = engine._definitions.get(doc.get("workflow"))
        if not isinstance(wf, CodeWorkflow):
            raise ClientError(f"--app: its engine defines no code workflow {doc.get('workflow')!r}")
        spec = wf.build()
    except ClientError as exc:
        print(f"actorflow replay: {exc}", file=sys.stderr)
        return 2
    result = replay(doc, wf, failure_types=spec.failure_types)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        verdict = "deterministic" if result.ok else "NOT deterministic"
        print(
            f"run {result.run_id} ({result.workflow_id}): {verdict}; "
            f"{result.activations} activations, {result.commands} commands, "
            f"{result.events} events replayed in {result.seconds * 1000:.1f} ms; "
            f"the function is {result.outcome} where the history ends"
        )
        if result.error:
            print(result.error)
    return 0 if result.ok else 1
