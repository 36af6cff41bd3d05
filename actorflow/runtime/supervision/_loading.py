"""Loading a run from the store: which supervisor, which version and plan, or held.

Data flow: a shard asks for a run it does not hold in memory (recovery, a message for a
passivated run, a timer). Its run record says its workflow, status, version and plan; a
finished run or an unknown one loads as None. A queued run has not started and takes the
newest version as defined now; a started run goes on with its own version (``run_version``)
and, for a graph workflow, on the plan it started on (``plan_for``). A run whose version or
plan needs code this engine does not define is *held* (noted in ``core.held`` with the
reason, logged at WARNING) and loads as None. Otherwise the supervisor of its kind rebuilds
it from its records: ``Supervisor.load`` (graph: replay the evaluator's history) or
``CodeSupervisor.load`` (code: replay the workflow function against its history).
"""

from __future__ import annotations

import logging

from actorflow._types import RunStatus
from actorflow.runtime._core import Compiled, Core, run_version
from actorflow.runtime.supervision._code import CodeSupervisor
from actorflow.runtime.supervision._graph import Supervisor
from actorflow.runtime.supervision._plans import PlanUnavailable, plan_for
from actorflow.store import _keys as K
from actorflow.store._records import load_record

__all__ = ["load_run"]

log = logging.getLogger("actorflow.engine")


def load_run(core: Core, run_id: str) -> Supervisor | CodeSupervisor | None:
    """Rebuild a run from the store; None if it is unknown, finished, or undefined here."""
    raw = core.store.get(K.RUNS, K.run_key(run_id))
    if raw is None:
        return None
    rec = load_record(raw, f"run {run_id}")
    status = RunStatus(rec["status"])
    if status.terminal:
        return None
    # A queued run has not started: it takes the newest version as defined now. A started
    # run goes on with the version it started on, on the plan it started on.
    version = None if status == RunStatus.QUEUED else run_version(rec)
    workflow = rec["workflow"]
    compiled = core.workflows.get(workflow) if version is None else None
    if version is not None:
        compiled = core.compiled_for(workflow, version)
        if compiled is None and workflow in core.workflows:
            _held(core, run_id, str(core.version_problem(workflow, version)))
            return None
    if compiled is None:
        return None
    if compiled.code:
        return CodeSupervisor.load(core, compiled, rec)
    assert isinstance(compiled, Compiled)
    shape = rec.get("plan")
    if version is not None and shape and shape != compiled.plan.shape:
        try:
            compiled = plan_for(core, workflow, shape, version)
        except PlanUnavailable as exc:
            _held(core, run_id, exc.reason)
            return None
    core.held.pop(run_id, None)
    return Supervisor.load(core, compiled, rec)


def _held(core: Core, run_id: str, reason: str) -> None:
    """Note that a run cannot load with the code defined now.

    Its status is moved by the engine's recovery (``_recover``) or by
    ``Supervisor.hold_missing``.
    """
    if core.held.get(run_id) != reason:
        log.warning("run %s is held: %s", run_id, reason)
    core.held[run_id] = reason
