"""``actorflow plan diff APP:ENGINE``: what a deploy of this code would do to the runs in flight.

Data flow: the engine object is loaded (not started) and its graph workflows compiled; the
store is opened read-only; its unfinished runs (running, queued, waiting for their
definition) are grouped by workflow, by the version they run (``rec["version"]``, 1 when
absent) and by the plan they started on (``rec["plan"]``, the shape). A started run is
compared with the code of its own version; a queued run has not started and takes the
newest version. For each plan that differs from its version's code, the recorded
structure (``runtime/supervision/_plans.py``) is compared with the code's, node by node, and rebuilt
with the code as a start would: what the run would lack is listed. Runs of a workflow or a
version that the code does not define are listed as held. Nothing is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from actorflow.cli._output import Exit, Output

__all__ = ["plan_diff_command"]

_UNFINISHED = ("running", "queued", "waiting_for_definition")


@dataclass
class PlanChange:
    """One recorded plan of a workflow whose runs are in flight, against the code."""

    workflow: str
    version: int  # the version the runs are on (queued runs: the newest, which they take)
    plan: str  # the shape the runs started on
    current: str | None  # the code's shape of that version (None: it is not defined)
    runs: list[str] = field(default_factory=list)  # started (running, or waiting)
    queued: list[str] = field(default_factory=list)  # they take the new definition
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    held: str | None = None  # why its runs would wait for their definition at load
    reach: list[str] = field(default_factory=list)  # steps a run reaching would wait at


def _nodes(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for d in nodes:
        yield d
        for arm in d.get("arms") or ():
            yield from _nodes(arm.get("block") or [])
        yield from _nodes(d.get("body") or [])


def _structural(d: dict[str, Any]) -> dict[str, Any]:
    keep = ("kind", "concurrency", "size", "workflow")
    out = {k: d.get(k) for k in keep if d.get(k) is not None}
    if d.get("arms") is not None:
        out["arms"] = [a["name"] for a in d["arms"]]
    return out


def _compare(change: PlanChange, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    before = {d["name"]: _structural(d) for d in _nodes(old)}
    after = {d["name"]: _structural(d) for d in _nodes(new)}
    change.added = [n for n in after if n not in before]
    change.removed = [n for n in before if n not in after]
    change.changed = [
        f"{n}: {before[n]} -> {after[n]}" for n in before if n in after and before[n] != after[n]
    ]


def _compiled_versions(engine: Any) -> dict[str, dict[int, Any]]:
    """Every version of every workflow the code defines, compiled, by id then version."""
    out: dict[str, dict[int, Any]] = {}
    for wid, versions in engine._versions.items():
        out[wid] = {v: engine._compile(wf) for v, wf in versions.items()}
    return out


def plan_changes(engine: Any, store: Any) -> list[PlanChange]:
    """What starting ``engine`` on ``store`` would do to the runs in flight, per plan."""
    from actorflow.definition._spec import describe_block, walk
    from actorflow.runtime._core import run_version
    from actorflow.runtime.supervision._plans import (
        PlanUnavailable,
        is_missing,
        plan_record,
        rebuild,
    )
    from actorflow.store import _keys as K
    from actorflow.views import read_run

    compiled = _compiled_versions(engine)
    groups: dict[tuple[str, int, str], PlanChange] = {}
    for status in _UNFINISHED:
        prefix = K.status_index_prefix(status)
        for key, _ in store.scan(K.INDEX, prefix):
            run_id = key[len(prefix) :].decode()
            rec = read_run(store, run_id)
            workflow, shape = rec["workflow"], str(rec.get("plan") or "")
            versions = compiled.get(workflow) or {}
            # A queued run has not started: it takes the newest version when it does.
            version = max(versions, default=1) if status == "queued" else run_version(rec)
            c = versions.get(version)
            if c is not None and (c.code or shape == c.plan.shape):
                continue  # a code workflow (see actorflow replay), or the same plan
            if c is not None and not shape:
                continue  # recorded before plans were: it takes the code as it is
            group = groups.get((workflow, version, shape))
            if group is None:
                current = None if c is None else c.plan.shape
                group = groups[(workflow, version, shape)] = PlanChange(
                    workflow, version, shape, current
                )
            (group.queued if status == "queued" else group.runs).append(run_id)
    for (workflow, version, shape), change in sorted(groups.items()):
        versions = compiled.get(workflow) or {}
        c = versions.get(version)
        if not versions:
            change.held = f"workflow {workflow!r} is not defined by this code"
            continue
        if c is None:
            defined = ", ".join(map(str, sorted(versions)))
            change.held = (
                f"version {version} of workflow {workflow!r} is not defined by this code "
                f"(it defines {defined})"
            )
            continue
        recorded = plan_record(store, workflow, shape) if shape else None
        if recorded is None:
            change.held = "its plan was not recorded (the runs started before plans were kept)"
            continue
        _compare(change, recorded["nodes"], describe_block(c.spec))
        try:
            spec = rebuild(c.spec, recorded["nodes"])
        except PlanUnavailable as exc:
            change.held = exc.reason
            continue
        change.reach = [n.name for n in walk(spec.block) if is_missing(n)]
    return list(groups.values())


def plan_diff_command(args: argparse.Namespace, out: Output) -> int:
    """Run the command; 0: no run would wait for its definition, 4: some would."""
    from actorflow.cli._reading import read_only
    from actorflow.cli._replay import _engine

    engine = _engine(args.app)
    store = read_only(args.data_dir or str(engine.config.data_dir))
    try:
        changes = plan_changes(engine, store)
    finally:
        store.close()
    held = any(c.held or c.reach for c in changes)
    if out.as_json:
        out.json([asdict(c) for c in changes])
        return Exit.FAILED if held else Exit.OK
    if not changes:
        out.line("no run in flight started on a plan other than this code's")
    for c in changes:
        target = c.current or "not defined"
        version = f" version {c.version}" if c.version != 1 or c.current is None else ""
        out.line(f"workflow {c.workflow!r}{version}: plan {c.plan or '-'} -> {target}")
        if c.runs:
            out.line(f"  {len(c.runs)} runs go on on their own plan: {' '.join(c.runs[:10])}")
        if c.queued:
            out.line(f"  {len(c.queued)} queued runs will start on the new definition")
        for what, names in (("added", c.added), ("removed", c.removed), ("changed", c.changed)):
            if names:
                out.line(f"  {what}: {', '.join(names)}")
        if c.held:
            out.line(f"  its started runs would wait for their definition: {c.held}")
        elif c.reach:
            out.line(
                f"  a run that reaches {', '.join(repr(n) for n in c.reach)} would wait for its "
                "definition there (this code no longer defines it)"
            )
    return Exit.FAILED if held else Exit.OK
