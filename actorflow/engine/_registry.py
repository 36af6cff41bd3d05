"""The engine's definitions: workflows and their versions, compiled, and their records."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from actorflow.code._definition import CodeWorkflow, PanicPolicy
from actorflow.definition._builder import Workflow, check_version
from actorflow.definition._options import Retry
from actorflow.definition._queue import Queue
from actorflow.errors import (
    ClientError,
    DefinitionError,
    WorkflowNotFound,
)
from actorflow.graph import check_subflow_cycles, compile_plan, evaluator, subflow_targets
from actorflow.runtime._core import CodeCompiled, Compiled, Core, run_version
from actorflow.runtime.kernel._messages import (
    Write,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.store import _keys as K
from actorflow.store._protocol import Op
from actorflow.store._records import dump_record, load_record
from actorflow.views import (
    WorkflowVersion,
    read_run,
)

if TYPE_CHECKING:
    pass

from actorflow.engine._base import (
    EngineBase,
    _every,
)

__all__ = ["Registry"]


class Registry(EngineBase):
    """Definitions and versions (see the engine package)."""

    def define(
        self,
        workflow_id: str,
        *,
        retry: Retry | None = None,
        timeout: Any = None,
        step_timeout: Any = None,
        concurrency: int | None = None,
        description: str = "",
        on_error: Callable[[Any], Any] | None = None,
        services: Sequence[Any] = (),
        rate_limit: str | None = None,
        retention: Any = None,
        version: int = 1,
        on_cancel: Callable[[Any], Any] | None = None,
        queue: Queue | None = None,
        on_success: Callable[[Any], Any] | None = None,
        on_failure: Callable[[Any], Any] | None = None,
    ) -> Workflow:
        """Define a workflow; chain ``.step(...)`` / ``.action(...)`` on the result.

        Args:
            workflow_id: unique name of the workflow.
            retry: default retry policy of its steps (default: run once).
            timeout: the whole run's time limit (a duration such as ``"10m"``).
            step_timeout: default time limit of each step.
            concurrency: most runs active at once; later ones queue.
            description: free text.
            on_error: default ``handler(ctx)`` for steps that fail for good and have none of
                their own (it runs in a worker; ``ctx.error`` is the exception).
            on_cancel: ``handler(ctx)`` run as the step ``on_cancel`` (in a worker) when a run
                is cancelled: its running steps are stopped first, and it ends cancelled once
                the handler has ended. Recorded like a step, and taken up after a crash.
            on_success: ``hook(ctx)`` run as the step ``on_success`` once a run has
                completed (the run ends completed when it has ended, whatever it did).
            on_failure: ``hook(ctx)`` run as the step ``on_failure`` once a run has failed,
                with ``ctx.error`` the run's error (the run ends failed when it has ended).
            services: configured services (``af.define_service(...).with_config(...)``),
                reached in steps as ``ctx.services.<id>.<action>(...)``.
            rate_limit: most runs started per window, e.g. ``"100/m"``; the rest queue
                durably and start in order.
            retention: how long its finished runs are kept after they end (``"7d"``;
                0 or ``"forever"``: always); default: the engine's ``retention`` (30 days).
            version: which version of the workflow this is (an integer >= 1). Several
                versions of one id may be defined at once: new runs take the newest, and
                each run goes on with the code of the version it started on, so an old
                version is dropped once :meth:`versions` says it has no runs left. Its
                triggers, concurrency and rate limit are the newest version's.
            queue: an :class:`~actorflow.Queue` whose limits its runs share with every
                other workflow given the same queue (instead of ``concurrency`` and
                ``rate_limit`` of its own).

        Returns:
            The workflow builder.

        Raises:
            DefinitionError: this id and version is already defined, ``version`` is not an
                integer >= 1, or versions of one id mix graph and code workflows.
        """
        with self._lock:
            wf = Workflow(
                workflow_id,
                retry=retry,
                timeout=timeout,
                step_timeout=step_timeout,
                concurrency=concurrency,
                description=description,
                on_error=on_error,
                on_cancel=on_cancel,
                on_success=on_success,
                on_failure=on_failure,
                services=services,
                rate_limit=rate_limit,
                retention=retention,
                version=version,
                queue=queue,
            )
            self._register(wf)
            wf._owner = weakref.ref(self)  # its siblings come along to wf.test()
            return wf

    def workflow(
        self,
        workflow_id: str,
        *,
        retry: Retry | None = None,
        timeout: Any = None,
        concurrency: int | None = None,
        description: str = "",
        panic: PanicPolicy | None = None,
        failure_types: Sequence[type[BaseException]] = (),
        services: Sequence[Any] = (),
        rate_limit: str | None = None,
        retention: Any = None,
        version: int = 1,
        queue: Queue | None = None,
    ) -> Callable[[Callable[..., Awaitable[Any]]], CodeWorkflow]:
        """Define a code workflow: decorate an ``async def f(ctx, *args)``.

        The function runs in the engine, replayed deterministically from its history after
        a crash, a restart or an eviction; its ``ctx.step(...)`` calls run in the worker pool
        and are recorded. See :class:`~actorflow.WorkflowContext`.

        Args:
            workflow_id: unique name of the workflow.
            retry: default retry policy of its steps (default: run once).
            timeout: the whole run's time limit (a duration).
            concurrency: most runs active at once; later ones queue.
            description: free text.
            panic: what to do when the function fails unexpectedly (a bug, a
                nondeterministic change): :class:`~actorflow.PanicPolicy` (default: restart
                from the history 3 times, 5 s apart, then wait for ``engine.restart``).
            failure_types: exception types that fail the run when the function raises them
                (besides :class:`~actorflow.RunError` and its subclasses, such as a step's
                :class:`~actorflow.StepFailed`, and :class:`~actorflow.WorkflowFailed`);
                any other exception panics the run.
            services: configured services its steps reach as ``ctx.services.<id>``.
            rate_limit: most runs started per window, e.g. ``"100/m"``.
            retention: how long its finished runs are kept (see :meth:`define`).
            version: which version of the workflow this is (see :meth:`define`): a run
                replays on the function of the version it started on.
            queue: an :class:`~actorflow.Queue` whose limits its runs share (see
                :meth:`define`).

        Returns:
            A decorator; it returns a :class:`~actorflow.CodeWorkflow`, still callable as
            the function.

        Raises:
            DefinitionError: this id and version is already defined (see :meth:`define`).
        """

        def register(fn: Callable[..., Awaitable[Any]]) -> CodeWorkflow:
            wf = CodeWorkflow(
                workflow_id,
                fn,
                retry=retry,
                timeout=timeout,
                concurrency=concurrency,
                description=description,
                panic=panic,
                failure_types=failure_types,
                services=services,
                rate_limit=rate_limit,
                retention=retention,
                version=version,
                queue=queue,
            )
            with self._lock:
                self._register(wf)
            wf._owner = weakref.ref(self)
            return wf

        return register

    def _register(self, wf: Workflow | CodeWorkflow) -> None:
        """Add a definition (a new id, or another version of one); under ``self._lock``."""
        wid, version = wf._id, wf._version
        if (problem := check_version(version)) is not None:
            raise DefinitionError(problem, wid if isinstance(wid, str) else None)
        versions = self._versions.get(wid, {})
        if version in versions:
            if len(versions) == 1 and version == 1:
                raise DefinitionError(
                    "is already defined on this engine (to run another version beside it, "
                    "pass version=2 and so on)",
                    wid,
                )
            raise DefinitionError(f"version {version} is already defined on this engine", wid)
        kind = isinstance(wf, CodeWorkflow)
        for other_version, other in versions.items():
            if isinstance(other, CodeWorkflow) != kind:
                what = ("a graph", "a code")
                raise DefinitionError(
                    f"version {version} is {what[kind]} workflow and version {other_version} "
                    f"is {what[not kind]} one; the versions of one id are of one kind",
                    wid,
                )
        core = self._core
        if versions and core is not None and wid in core.workflows:
            raise DefinitionError(
                f"version {version}: this engine is running with the versions defined before "
                "it started; define every version before engine.start()",
                wid,
            )
        self._check_queue(wf)
        versions[version] = wf
        self._versions[wid] = versions
        if version == max(versions):
            self._definitions[wid] = wf

    def _check_queue(self, wf: Workflow | CodeWorkflow) -> None:
        """A queue is known by its name: every workflow naming it gives the same limits."""
        queue = wf._queue
        if not isinstance(queue, Queue):
            return  # not a queue, or none: build() says so
        for other in self._definitions.values():
            theirs = other._queue
            if (
                isinstance(theirs, Queue)
                and theirs.name == queue.name
                and theirs.limits() != queue.limits()
            ):
                raise DefinitionError(
                    f"queue {queue.name!r} is given here as {queue!r} but workflow "
                    f"{other._id!r} has it as {theirs!r}: one queue has one set of limits "
                    "(create it once and give that object to both)",
                    wf._id if isinstance(wf._id, str) else None,
                )

    @property
    def workflows(self) -> list[str]:
        """Ids of the defined workflows."""
        return sorted(self._definitions)

    def versions(self, workflow: str) -> list[WorkflowVersion]:
        """The versions of a workflow, defined here or still run, and their runs in flight.

        Each started run goes on with the version it started on; new runs take the newest.
        Drop an old version from the code once this says it has no runs (``runs == 0``).
        It reads every unfinished run's record: an operator's question, not a hot path.

        Args:
            workflow: the workflow id.

        Returns:
            One :class:`~actorflow.WorkflowVersion` per version, oldest first: those this
            engine defines, and those only unfinished runs in the store still have.

        Raises:
            WorkflowNotFound: no version is defined here and no unfinished run has one.
        """
        from actorflow import views as _versions

        if not isinstance(workflow, str):
            raise ClientError(f"workflow: expected a workflow id (str), got {workflow!r}")
        with self._lock:
            defined = set(self._versions.get(workflow, {}))
        counts = self._read(_versions.count_versions, workflow)
        if not defined and not counts:
            raise WorkflowNotFound(workflow, self.workflows)
        return _versions.versions(workflow, defined, counts)

    def _compile(
        self, wf: Workflow | CodeWorkflow, known: Collection[str] | None = None
    ) -> Compiled | CodeCompiled:
        if isinstance(wf, CodeWorkflow):
            return CodeCompiled(wf.build())
        spec = wf.build()
        plan = compile_plan(spec, known if known is not None else list(self._definitions))
        return Compiled.of(spec, plan, evaluator.prepare(plan))

    def _compiled(self, core: Core, workflow: str) -> Compiled | CodeCompiled:
        compiled = core.workflows.get(workflow)
        if compiled is not None:
            return compiled
        if not isinstance(workflow, str):
            raise ClientError(f"workflow: expected a workflow id (str), got {workflow!r}")
        with self._lock:
            compiled = core.workflows.get(workflow)
            if compiled is not None:
                return compiled
            wf = self._definitions.get(workflow)
            if wf is None:
                raise WorkflowNotFound(workflow, list(self._definitions))
            # Defined after start: compile now, with the workflows its subflows reach that are
            # not compiled yet, and record the definitions before any run.
            fresh = self._compile_late(core, workflow)
            older = self._compile_older(fresh)
            every = _every(fresh.values(), older)
            done: Promise[None] = Promise()
            assert core.writer is not None
            core.writer.tell(
                Write(
                    self._definition_ops(every, older),
                    then=(lambda: done.set_result(None),),
                    on_error=done.set_exception,
                )
            )
            done.result()
            for wid, c in fresh.items():
                core.admission.set_limit(wid, c.spec.concurrency, c.spec.rate_limit, c.spec.queue)
            core.versions = {**core.versions, **older}
            core.workflows = {**core.workflows, **fresh}
            return fresh[workflow]

    def _compile_late(self, core: Core, workflow: str) -> dict[str, Compiled | CodeCompiled]:
        """Compile ``workflow`` and the uncompiled workflows its subflows reach; check cycles."""
        fresh: dict[str, Compiled | CodeCompiled] = {}
        todo = [workflow]
        while todo:
            wid = todo.pop()
            wf = self._definitions.get(wid)
            if wid in fresh or wid in core.workflows or wf is None:
                continue  # (an unknown id: compile_plan reported it already)
            c = fresh[wid] = self._compile(wf)
            if not c.code:
                todo.extend(subflow_targets(c.spec))
        graphs = {k: c.spec for k, c in {**core.workflows, **fresh}.items() if not c.code}
        check_subflow_cycles(graphs, first=workflow)
        return fresh

    def _compile_older(
        self, compiled: dict[str, Compiled | CodeCompiled]
    ) -> dict[str, dict[int, Compiled | CodeCompiled]]:
        """Every version of the workflows defined in several, by id then version."""
        older: dict[str, dict[int, Compiled | CodeCompiled]] = {}
        for wid, versions in self._versions.items():
            newest = self._definitions.get(wid)
            if len(versions) < 2 or newest is None or wid not in compiled:
                continue
            older[wid] = {
                v: compiled[wid] if wf is newest else self._compile(wf)
                for v, wf in versions.items()
            }
        graphs = {k: c.spec for k, c in compiled.items() if not c.code}
        for wid, compiled_versions in older.items():
            for c in compiled_versions.values():
                if not c.code:  # an older version's subflows make no cycle either
                    check_subflow_cycles({**graphs, wid: c.spec}, first=wid)
        return older

    def _definition_ops(
        self, compiled: Any, older: dict[str, dict[int, Any]] | None = None
    ) -> list[Op]:
        """The definition and plan records a start writes.

        One definition record per id (the newest version's, listing the versions defined),
        and each graph workflow's structure, every version's, under its shape.
        """
        from actorflow.runtime.supervision._plans import plan_ops

        now = self.clock.now()
        compiled = list(compiled)
        older = older or {}
        ops: list[Op] = []
        for c in compiled:
            versions = older.get(c.spec.id)
            if versions is not None and c is not versions[max(versions)]:
                continue  # an older version: only its plan is recorded
            record = {**c.spec.to_dict(), "fingerprint": c.spec.fingerprint, "at": now}
            record["versions"] = sorted(versions) if versions else [c.spec.version]
            ops.append((K.DEFINITIONS, c.spec.id.encode(), dump_record(record)))
        return ops + plan_ops([c.spec for c in compiled if not c.code])

    def definition(self, workflow: str) -> dict[str, Any]:
        """The stored description of a workflow (steps, options), as JSON-compatible data.

        Raises:
            WorkflowNotFound: the store has no such definition.
        """
        raw = self._read(lambda store: store.get(K.DEFINITIONS, workflow.encode()))
        if raw is None:
            raise WorkflowNotFound(workflow, list(self._definitions))
        return load_record(raw, f"definition {workflow}")

    def graph(self, workflow: str, run_id: str | None = None) -> dict[str, Any]:
        """A workflow's graph as plain data (``nodes`` and ``edges``), as the dashboard draws it.

        A code workflow has no graph before it runs: ``{"code": True}`` with no nodes.

        Args:
            workflow: the workflow.
            run_id: draw the plan this run started on (``"plan"`` in the answer says which
                shape), which a deploy may have changed since; on a follower, or when the
                plan cannot be built with the code defined now, the current one.

        Raises:
            WorkflowNotFound: no such workflow.
            EngineNotRunning: the engine is not running.
        """
        from actorflow.engine._graphview import plan_graph

        compiled: Compiled | CodeCompiled | None
        if self._follower is not None:
            compiled = self._followed.get(workflow)
            if compiled is None:
                raise WorkflowNotFound(workflow, list(self._followed))
        else:
            core = self._require_core()
            compiled = self._compiled(core, workflow)
            if run_id is not None and isinstance(compiled, Compiled):
                compiled = self._run_plan(core, compiled, run_id)
        if isinstance(compiled, Compiled):
            return {**plan_graph(compiled.plan), "code": False, "plan": compiled.plan.shape}
        return {"workflow": workflow, "code": True, "nodes": [], "edges": []}

    def _run_plan(self, core: Core, current: Compiled, run_id: str) -> Compiled:
        """The compiled plan run ``run_id`` started on, else ``current`` (see graph())."""
        from actorflow.runtime.supervision._plans import PlanUnavailable, plan_for

        rec = read_run(core.store, run_id)
        if rec["workflow"] != current.spec.id:
            return current
        version = run_version(rec)
        own = core.compiled_for(current.spec.id, version)
        if not isinstance(own, Compiled):
            return current  # its version is not defined here
        shape = rec.get("plan")
        if not shape or shape == own.plan.shape:
            return own
        try:
            return plan_for(core, current.spec.id, str(shape), version)
        except PlanUnavailable:
            return own
