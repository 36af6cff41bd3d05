"""Workflow versions: which are defined, and how many unfinished runs each still has.

Why: an engine may define several versions of one workflow id at once
(``engine.define(id, version=N)``, ``@engine.workflow(id, version=N)``). New runs start on
the newest; a started run goes on with the code of the version it started on
(``rec["version"]``, absent for version 1; ``Core.compiled_for``). An old version can be
dropped from the code once no unfinished run needs it, and :func:`versions` says when.

Data flow: the status index lists the unfinished runs (running, panicked, waiting for
their definition, queued); each one's run record gives its workflow and version. A queued
run has not started: it takes the newest version when it does, so it counts there.
Reading every unfinished run's record costs one lookup per run: an admin's question, not
a hot path.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from actorflow._types import RunStatus
from actorflow.store import _keys as K
from actorflow.store._protocol import Store
from actorflow.store._records import load_record

__all__ = ["WorkflowVersion", "count_versions", "versions"]

#: Statuses of runs that have not ended.
UNFINISHED = tuple(s for s in RunStatus if not s.terminal)


@dataclass(frozen=True, slots=True)
class WorkflowVersion:
    """One version of a workflow, as :meth:`~actorflow.Engine.versions` lists it.

    Attributes:
        workflow: the workflow id.
        version: the version number.
        defined: the engine defines this version.
        newest: new runs start on it (the highest version defined).
        runs: its unfinished runs; none left on an old version: it may be dropped.
        statuses: those runs by status (queued runs count for the newest version, which
            they take when they start).
    """

    workflow: str
    version: int
    defined: bool
    newest: bool
    runs: int
    statuses: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible form (the REST API's and ``--json``'s)."""
        return {
            "workflow": self.workflow,
            "version": self.version,
            "defined": self.defined,
            "newest": self.newest,
            "runs": self.runs,
            "statuses": dict(self.statuses),
        }


def count_versions(store: Store, workflow: str) -> dict[int | None, dict[str, int]]:
    """Unfinished runs of ``workflow`` by version and status; queued runs under None."""
    counts: dict[int | None, dict[str, int]] = {}
    for status in UNFINISHED:
        prefix = K.status_index_prefix(status)
        for key, _ in store.scan(K.INDEX, prefix):
            run_id = key[len(prefix) :].decode()
            raw = store.get(K.RUNS, K.run_key(run_id))
            if raw is None:
                continue
            rec = load_record(raw, f"run {run_id}")
            if rec.get("workflow") != workflow:
                continue
            version = None if status == RunStatus.QUEUED else int(rec.get("version") or 1)
            by_status = counts.setdefault(version, {})
            by_status[status.value] = by_status.get(status.value, 0) + 1
    return counts


def versions(
    workflow: str, defined: Collection[int], counts: dict[int | None, dict[str, int]]
) -> list[WorkflowVersion]:
    """Every version defined or still run, oldest first (``counts``: see count_versions)."""
    newest = max(defined) if defined else None
    queued = counts.pop(None, {})
    if queued:
        # Not started: they take the newest version defined when they start.
        seen = [v for v in counts if v is not None]
        into = counts.setdefault(newest or max(seen, default=1), {})
        for status, n in queued.items():
            into[status] = into.get(status, 0) + n
    out = []
    for version in sorted({*defined, *(v for v in counts if v is not None)}):
        statuses = counts.get(version, {})
        out.append(
            WorkflowVersion(
                workflow,
                version,
                version in defined,
                version == newest,
                sum(statuses.values()),
                dict(sorted(statuses.items())),
            )
        )
    return out
