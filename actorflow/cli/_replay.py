"""``actorflow replay``: check a recorded code workflow history against the current code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from actorflow.cli._output import Exit, Output, UsageError
from actorflow.errors import ClientError

__all__ = ["replay_command"]


def _engine(target: str | None) -> Any:
    if target is None:
        return None
    from actorflow.cli._serve import load_object
    from actorflow.engine._engine import Engine

    engine = load_object(target)
    if not isinstance(engine, Engine):
        raise ClientError(f"--app: {target!r} is not an actorflow Engine")
    return engine


def _function_of(definition: dict[str, Any] | None, workflow: str) -> Any:
    """The workflow function named by its stored definition (``module:qualname``)."""
    import importlib

    ref = (definition or {}).get("function") or ""
    module_name, _, qualname = ref.partition(":")
    if not module_name or module_name == "__main__" or "<" in qualname:
        raise ClientError(
            f"workflow {workflow!r} is defined in a script ({ref or 'unknown'}), not an "
            "importable module: name its engine with --app file.py:engine"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ClientError(
            f"cannot import {ref!r} for workflow {workflow!r} ({exc}); name its engine with "
            "--app module:engine"
        ) from None
    return target


def _history(args: argparse.Namespace, engine: Any) -> dict[str, Any]:
    from actorflow.cli._reading import default_data_dir, resolve
    from actorflow.code._history import export_history, load_history
    from actorflow.store import LmdbStore

    if args.history:
        load_history(args.history)  # checks the file
        doc: dict[str, Any] = json.loads(Path(args.history).read_text())
        return doc
    if not args.run:
        raise UsageError("give a RUN id, or --history FILE")
    data_dir = args.data_dir or (engine.config.data_dir if engine else default_data_dir())
    from actorflow.config import EngineConfig
    from actorflow.store._sealing import sealed

    cfg = engine.config if engine else EngineConfig.from_sources()
    store = sealed(LmdbStore(data_dir, read_only=True), cfg.codecs, cfg.codec_keys)
    try:
        return export_history(store, resolve(store, args.run))
    finally:
        store.close()


def replay_command(args: argparse.Namespace, out: Output) -> int:
    """Run the command; 0: deterministic, 4: divergence or panic (1: error, 2: usage)."""
    from actorflow.code._definition import CodeWorkflow
    from actorflow.code._replay import replay

    engine = _engine(args.app)
    doc = _history(args, engine)
    if args.export:
        Path(args.export).write_text(json.dumps(doc, indent=2))
        if engine is None and not args.check:
            out.result(
                {"run_id": doc["run_id"], "exported": args.export},
                f"history of run {doc['run_id']} written to {args.export}",
            )
            return Exit.OK
    wf: Any
    if engine is None:  # the function its definition names, if it is importable
        wf = _function_of(doc.get("definition"), str(doc.get("workflow")))
    else:
        wf = engine._definitions.get(doc.get("workflow"))
        if not isinstance(wf, CodeWorkflow):
            raise ClientError(f"--app: its engine defines no code workflow {doc.get('workflow')!r}")
    failure_types = wf.build().failure_types if isinstance(wf, CodeWorkflow) else ()
    result = replay(doc, wf, failure_types=failure_types)
    if out.as_json:
        out.json(result.to_dict())
    else:
        verdict = "deterministic" if result.ok else "NOT deterministic"
        out.line(
            f"run {result.run_id} ({result.workflow_id}): {verdict}; "
            f"{result.activations} activations, {result.commands} commands, "
            f"{result.events} events replayed in {result.seconds * 1000:.1f} ms; "
            f"the function is {result.outcome} where the history ends"
        )
        if result.error:
            out.line(result.error)
    return Exit.OK if result.ok else Exit.FAILED
