"""The read side: runs, steps and workflow versions as users see them, from store records.

Everything here reads a store and nothing else: no actor, no worker, no user code (pickled
values are shown as placeholders, never unpickled, except where :func:`run_outcome` decodes
a result for ``RunHandle.result``). So the engine, the CLI on a store opened read-only, the
client (from JSON) and code-workflow replay all build the same views, and the package sits
below the runtime.

- ``_details``: the frozen dataclasses (``RunDetails``, ``StepDetails``, ...).
- ``_read``: building them from records, run outcomes and depths.
- ``_listing``: pages of runs (``list_runs``), each filter driving the scan it needs.
- ``_versions``: the versions of a workflow and the unfinished runs each still has.
"""

from __future__ import annotations

from actorflow.views._details import (
    AttemptDetails,
    ErrorDetails,
    RunDetails,
    RunSummary,
    StepDetails,
    parse_status,
)
from actorflow.views._listing import list_runs
from actorflow.views._read import (
    ancestry,
    blob_keep,
    chain_outcome,
    error_from_record,
    fanout_progress,
    final_run,
    inspect_run,
    read_run,
    run_depth,
    run_outcome,
)
from actorflow.views._versions import WorkflowVersion, count_versions, versions

__all__ = [
    "AttemptDetails",
    "ErrorDetails",
    "RunDetails",
    "RunSummary",
    "StepDetails",
    "WorkflowVersion",
    "ancestry",
    "blob_keep",
    "chain_outcome",
    "count_versions",
    "error_from_record",
    "fanout_progress",
    "final_run",
    "inspect_run",
    "list_runs",
    "parse_status",
    "read_run",
    "run_depth",
    "run_outcome",
    "versions",
]
