"""``actorflow versions WORKFLOW``: the versions of a workflow and the runs each still has.

Why: an engine may define several versions of one workflow id; a started run goes on with
the version it started on. Before dropping an old version from the code, an operator asks
the store whether any unfinished run still needs it; this command answers without an
engine (the store is opened read-only, so it also works while one runs on it).

Data flow: the unfinished runs come from the status index and their records
(``views/_versions.py``, as ``Engine.versions``). Which versions are defined comes from
``--app`` (the engine object is loaded, not started: the code about to be deployed) or,
without it, from the stored definition record, which lists the versions the engine that
last started on this store defined.
"""

from __future__ import annotations

import argparse
from typing import Any

from actorflow.cli._output import Column, Exit, Output
from actorflow.errors import WorkflowNotFound
from actorflow.store import _keys as K
from actorflow.store._records import load_record
from actorflow.views import WorkflowVersion, count_versions, versions

__all__ = ["add_parser"]


def _defined_in_store(store: Any, workflow: str) -> set[int]:
    raw = store.get(K.DEFINITIONS, workflow.encode())
    if raw is None:
        return set()
    record = load_record(raw, f"definition {workflow}")
    return {int(v) for v in record.get("versions") or [record.get("version") or 1]}


def _defined_in_app(target: str, workflow: str) -> set[int]:
    from actorflow.cli._replay import _engine

    return set(_engine(target)._versions.get(workflow, {}))


def _note(v: WorkflowVersion) -> str:
    if v.newest:
        return "new runs start here"
    if not v.defined:
        return "not defined: its runs wait for it" if v.runs else ""
    return "no runs left: may be dropped" if not v.runs else "runs left: keep it"


def versions_command(args: argparse.Namespace, out: Output) -> int:
    """Run the command; exit 0, or 1 when the workflow has no version and no run."""
    from actorflow.cli._reading import read_only

    store = read_only(args.data_dir)
    try:
        if args.app:
            defined = _defined_in_app(args.app, args.workflow)
        else:
            defined = _defined_in_store(store, args.workflow)
        counts = count_versions(store, args.workflow)
        known = [k.decode() for k, _ in store.scan(K.DEFINITIONS, b"")]
    finally:
        store.close()
    if not defined and not counts:
        raise WorkflowNotFound(args.workflow, known)
    listed = versions(args.workflow, defined, counts)
    if out.as_json:
        out.json([v.to_dict() for v in listed])
        return Exit.OK
    out.table(
        [
            Column("VERSION", right=True),
            "DEFINED",
            Column("RUNS", right=True),
            "BY STATUS",
            "NOTE",
        ],
        [
            (
                v.version,
                "yes" if v.defined else "no",
                v.runs,
                ", ".join(f"{n} {s}" for s, n in v.statuses.items()),
                _note(v),
            )
            for v in listed
        ],
    )
    source = f"by {args.app}" if args.app else "by the engine that last started on this store"
    out.note(f"(defined: {source}; runs: unfinished runs, queued ones under the newest)")
    return Exit.OK


def add_parser(sub: Any, json_flag: Any) -> None:
    """Add ``versions`` to the ``actorflow`` parser."""
    parser = sub.add_parser(
        "versions",
        help="a workflow's versions and the unfinished runs each still has",
        description=(
            "Lists the versions of WORKFLOW that are defined or that unfinished runs in the "
            "store are on, with those runs by status. A started run goes on with its own "
            "version; an old version with no runs left may be dropped from the code. "
            "Defined versions come from --app, else from the store (what the engine that "
            "last started on it defined). Exit status: 0, 1 error (no such workflow), 2 usage."
        ),
    )
    parser.add_argument("workflow", help="the workflow id")
    parser.add_argument(
        "--app",
        help="module:attr or file.py:attr naming the Engine whose versions count as defined",
    )
    json_flag(parser, "print the versions as JSON (a list, oldest first)")
    parser.set_defaults(func=versions_command)
