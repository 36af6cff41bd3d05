"""A run's own plan: the structure a graph run started with, run with the code defined now.

Why: a deploy that changes a workflow's structure (a step appended, a branch added, a
for_each's concurrency) must not fail the runs in flight. A run's history is a list of
evaluator events, and it replays only onto the structure it was recorded on.

Data flow:

- At start (and when a workflow is defined late) the engine records each graph workflow's
  structure under its shape (:func:`plan_ops`; in ``definitions``, keyed ``<workflow> NUL
  plan NUL <shape>``): the same description as the definition record's ``nodes``. Runs
  record their shape in their run record (``plan``).
- A run loaded after a deploy whose workflow now has another shape is replayed on its own
  structure (:func:`plan_for`): the stored description gives the nodes, their nesting and
  everything replaying depends on (names, kinds, arms, fan-out concurrency and size); the
  code (step functions, predicates, item lists, timeouts, retry policies) comes from the
  workflow as defined now, found by node name (names are unique at any depth). A for_each
  or batch body of one step takes the current body's one step whatever its name, so
  renaming the body function changes nothing for runs in flight.
- A step of the old structure that the current code no longer defines becomes a
  placeholder (:func:`missing_step`): a run that has passed it goes on; one that reaches
  it is held there, not failed (``Supervisor.hold_missing``), until code that defines it
  is deployed again. A composite node whose code is gone (a branch arm's predicate, a
  for_each's items) is a :class:`PlanUnavailable` naming it: the run is held before it
  is loaded.

Compiled plans are cached per (workflow, version, shape) on the core (``Core.plans``).
With several versions defined (``engine.define(id, version=N)``), a run takes its code from
the version it started on (``rec["version"]``); a version no longer defined holds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus
from actorflow.definition._options import NO_RETRY
from actorflow.definition._spec import (
    ArmSpec,
    BranchSpec,
    CancelSpec,
    ForEachSpec,
    FunctionRef,
    NodeSpec,
    ParallelSpec,
    SleepSpec,
    StepSpec,
    SubflowSpec,
    WaitSpec,
    WhileSpec,
    WorkflowSpec,
    describe_block,
    shape_of,
    walk,
)
from actorflow.store import _keys as K
from actorflow.store._records import dump_record, load_record

if TYPE_CHECKING:
    from actorflow.runtime._core import Compiled, Core
    from actorflow.store._protocol import Op, Store

__all__ = [
    "MISSING",
    "PlanUnavailable",
    "hold_ops",
    "is_missing",
    "missing_step",
    "plan_for",
    "plan_ops",
    "plan_record",
    "previous_plan_ops",
    "rebuild",
    "unavailable",
]


class PlanUnavailable(Exception):
    """A run's plan cannot be run with the code defined now; ``reason`` says what is missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def plan_ops(specs: list[WorkflowSpec]) -> list[Op]:
    """The records of these workflows' structures, each under its shape."""
    return [
        (
            K.DEFINITIONS,
            K.plan_key(spec.id, spec.shape),
            dump_record({"workflow": spec.id, "shape": spec.shape, "nodes": describe_block(spec)}),
        )
        for spec in specs
    ]


def previous_plan_ops(store: Store) -> list[Op]:
    """Record the structure of each stored graph definition that has no plan record yet.

    Run at start, before the new definitions replace the stored ones: runs started under
    the previous definitions (by this release or an older one, which kept no plans) then
    find their plan after a deploy that changes the structure.
    """
    ops: list[Op] = []
    for key, raw in store.scan(K.DEFINITIONS, b""):
        if b"\x00" in key:
            continue  # a plan record itself
        rec = load_record(raw, f"definition {key.decode(errors='replace')}")
        nodes = rec.get("nodes")
        if rec.get("kind") == "code" or not isinstance(nodes, list):
            continue
        workflow = key.decode()
        shape = shape_of(nodes)
        if store.get(K.DEFINITIONS, K.plan_key(workflow, shape)) is None:
            record = {"workflow": workflow, "shape": shape, "nodes": nodes}
            ops.append((K.DEFINITIONS, K.plan_key(workflow, shape), dump_record(record)))
    return ops


def hold_ops(run_id: str, rec: dict[str, Any], reason: str) -> list[Op]:
    """Record that a run waits for its definition (status ``waiting_for_definition``).

    For a run no supervisor can load (its workflow is gone, or its plan cannot be built):
    its record and its status index entry are rewritten as they are.
    """
    old = str(rec["status"])
    held = RunStatus.WAITING_FOR_DEFINITION
    record = {**rec, "status": held.value, "held": reason}
    ops: list[Op] = [(K.RUNS, K.run_key(run_id), dump_record(record))]
    if old != held.value:
        ops.append((K.INDEX, K.status_index_key(old, run_id), None))
        ops.append((K.INDEX, K.status_index_key(held, run_id), b""))
    return ops


def unavailable(core: Core, rec: dict[str, Any]) -> str | None:
    """Why a recorded unfinished run cannot be loaded with the code defined now (or None).

    A queued run has not started: it takes the newest version when it starts, so only a
    missing workflow holds it. A started run needs its own version, and its own plan.
    """
    from actorflow.runtime._core import run_version

    workflow = rec["workflow"]
    if workflow not in core.workflows:
        return core.version_problem(workflow, 1)
    if rec.get("status") == RunStatus.QUEUED.value:
        return None
    version = run_version(rec)
    problem = core.version_problem(workflow, version)
    compiled = core.compiled_for(workflow, version)
    shape = rec.get("plan")
    if problem is not None or compiled is None or compiled.code or not shape:
        return problem
    try:
        plan_for(core, workflow, str(shape), version)
    except PlanUnavailable as exc:
        return exc.reason
    return None


def plan_record(store: Store, workflow: str, shape: str) -> dict[str, Any] | None:
    """The recorded structure of ``workflow`` under ``shape``, or None."""
    raw = store.get(K.DEFINITIONS, K.plan_key(workflow, shape))
    return None if raw is None else load_record(raw, f"plan {shape} of workflow {workflow}")


def plan_for(core: Core, workflow: str, shape: str, version: int = 1) -> Compiled:
    """The compiled plan of ``workflow`` under ``shape``, with the code of its ``version``.

    The code is what is defined now for that version of the workflow.

    Raises:
        PlanUnavailable: the workflow (or that version) is not defined here, the structure
            was never recorded, or the current code lacks something it needs.
    """
    from actorflow.graph import evaluator
    from actorflow.graph._compile import compile_plan
    from actorflow.runtime._core import Compiled

    current = core.compiled_for(workflow, version)
    if current is None or current.code:
        problem = core.version_problem(workflow, version)
        raise PlanUnavailable(problem or f"workflow {workflow!r} is not a graph workflow here")
    assert isinstance(current, Compiled)
    if current.plan.shape == shape:
        return current
    key = (workflow, version, shape)
    cached = core.plans.get(key)
    if isinstance(cached, PlanUnavailable):
        raise cached
    if cached is not None:
        found_plan: Compiled = cached
        return found_plan
    try:
        found = plan_record(core.store, workflow, shape)
        if found is None:
            raise PlanUnavailable(
                f"workflow {workflow!r} changed shape since this run started (plan {shape} -> "
                f"{current.plan.shape}), and the run's plan was not recorded (it started "
                "before plans were kept)"
            )
        spec = rebuild(current.spec, found["nodes"])
        if spec.shape != shape:
            raise PlanUnavailable(
                f"workflow {workflow!r}: this run's plan {shape} cannot be rebuilt from the "
                f"code defined now (it gives {spec.shape})"
            )
        plan = compile_plan(spec, list(core.workflows))
        compiled: Compiled = Compiled.of(spec, plan, evaluator.prepare(plan))
    except PlanUnavailable as exc:
        core.plans[key] = exc
        raise
    core.plans[key] = compiled
    return compiled


def rebuild(spec: WorkflowSpec, nodes: list[dict[str, Any]]) -> WorkflowSpec:
    """``spec`` with the structure ``nodes`` describes, each node's code taken from ``spec``.

    Raises:
        PlanUnavailable: a node the structure needs has no code of its kind in ``spec``.
    """
    current = {node.name: node for node in walk(spec.block)}
    return dataclasses.replace(spec, block=_block(nodes, current, spec.id, None))


def _block(
    descs: list[dict[str, Any]],
    current: dict[str, NodeSpec],
    workflow: str,
    body_step: StepSpec | None,
) -> tuple[NodeSpec, ...]:
    # ``body_step``: the current one-step body of the for_each around a one-step body.
    lone = body_step if len(descs) == 1 else None
    return tuple(_node(d, current, workflow, lone) for d in descs)


def _node(
    d: dict[str, Any], current: dict[str, NodeSpec], workflow: str, lone: StepSpec | None
) -> NodeSpec:
    name, kind = d["name"], d["kind"]
    now = current.get(name)

    def need(cls: type[Any]) -> Any:
        if isinstance(now, cls):
            return now
        what = "is no longer defined" if now is None else f"is now a {_kind(now)}"
        raise PlanUnavailable(
            f"workflow {workflow!r}: this run's plan has {kind} {name!r}, which {what}; "
            "deploy code that defines it to resume the run"
        )

    if kind in ("step", "action"):
        if not isinstance(now, StepSpec) and lone is not None:
            now = lone  # a one-step for_each body whose function was renamed
        if not isinstance(now, StepSpec):
            return missing_step(d)
        return dataclasses.replace(now, name=name, kind=kind)
    if kind == "branch":
        branch: BranchSpec = need(BranchSpec)
        preds = {arm.name: arm.pred for arm in branch.arms}
        arms = []
        for arm in d["arms"]:
            if arm.get("else"):
                pred = None
            elif preds.get(arm["name"]) is not None:
                pred = preds[arm["name"]]
            else:
                raise PlanUnavailable(
                    f"workflow {workflow!r}: this run's plan has arm {arm['name']!r} of branch "
                    f"{name!r}, which is no longer defined; deploy code that defines it"
                )
            arms.append(ArmSpec(arm["name"], _block(arm["block"], current, workflow, None), pred))
        return BranchSpec(name, tuple(arms))
    if kind in ("parallel", "race"):
        return ParallelSpec(
            name,
            tuple(
                ArmSpec(a["name"], _block(a["block"], current, workflow, None)) for a in d["arms"]
            ),
            race=kind == "race",
        )
    if kind == "while":
        loop: WhileSpec = need(WhileSpec)
        return dataclasses.replace(loop, body=_block(d["body"], current, workflow, None))
    if kind in ("for_each", "batch"):
        fan: ForEachSpec = need(ForEachSpec)
        one = fan.body[0] if len(fan.body) == 1 and isinstance(fan.body[0], StepSpec) else None
        return dataclasses.replace(
            fan,
            body=_block(d["body"], current, workflow, one),
            concurrency=int(d["concurrency"]),
            size=d.get("size"),
        )
    if kind == "subflow":
        sub: SubflowSpec = need(SubflowSpec)
        return dataclasses.replace(sub, workflow_id=d["workflow"])
    if kind == "sleep":
        return now if isinstance(now, SleepSpec) else SleepSpec(name, float(d["seconds"]))
    if kind in ("wait_for_event", "approval"):
        return need(WaitSpec)  # type: ignore[no-any-return]
    if kind == "cancel":
        return now if isinstance(now, CancelSpec) else CancelSpec(name, str(d.get("reason", "")))
    raise PlanUnavailable(
        f"workflow {workflow!r}: this run's plan has a node of unknown kind {kind!r}"
    )


#: The function key of a step the code defined now lacks (see :func:`missing_step`).
MISSING = "missing:"


def missing_step(d: dict[str, Any]) -> StepSpec:
    """A stand-in for a step of a run's plan that the code defined now lacks: never run."""
    shown = str(d.get("fn") or d["name"])
    return StepSpec(
        name=d["name"],
        kind=d["kind"],
        fn=FunctionRef(MISSING + d["name"], None, None, shown, False),
        timeout=None,
        retry=NO_RETRY,
    )


def is_missing(spec: Any) -> bool:
    """True for :func:`missing_step`'s stand-ins."""
    return isinstance(spec, StepSpec) and spec.fn.key.startswith(MISSING)


def _kind(node: NodeSpec) -> str:
    kinds: dict[type[Any], Callable[[Any], str]] = {
        StepSpec: lambda n: n.kind,
        BranchSpec: lambda n: "branch",
        ParallelSpec: lambda n: "race" if n.race else "parallel",
        WhileSpec: lambda n: "while",
        ForEachSpec: lambda n: "batch" if n.size is not None else "for_each",
        SubflowSpec: lambda n: "subflow",
        SleepSpec: lambda n: "sleep",
        WaitSpec: lambda n: "wait_for_event" if n.kind == "event" else "approval",
        CancelSpec: lambda n: "cancel",
    }
    return kinds[type(node)](node)
