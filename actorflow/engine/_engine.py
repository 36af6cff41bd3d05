"""The Engine facade: define workflows, start the actors, trigger and inspect runs."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import orjson
import pykka

from actorflow._clock import Clock, SystemClock
from actorflow._extras import require
from actorflow._types import RunStatus, new_run_id
from actorflow.code._definition import CodeWorkflow, PanicPolicy
from actorflow.config import EngineConfig
from actorflow.definition._builder import Workflow, check_version
from actorflow.definition._options import Retry
from actorflow.engine._handle import RunHandle, _value, _wait
from actorflow.engine._sharing import claims, fingerprints, open_or_follow, serve_followers
from actorflow.errors import (
    ClientError,
    ConfigError,
    DefinitionError,
    EngineNotRunning,
    PoolUnavailable,
    RunNotFound,
    StoreError,
    StoreFull,
    WorkflowNotFound,
)
from actorflow.graph import check_subflow_cycles, compile_plan, evaluator, subflow_targets
from actorflow.runtime._core import Admission, CodeCompiled, Compiled, Core, Waiters, run_version
from actorflow.runtime._external import (
    EngineHost,
    list_approvals,
    publish,
    resume,
    state_call,
)
from actorflow.runtime._inbox import Activity, counting
from actorflow.runtime._lifecycle import (
    Lifecycle,
    LifecycleEvent,
    RunFinished,
    RunStarted,
    StepAttempted,
)
from actorflow.runtime._messages import (
    ActivateRun,
    CancelRun,
    Drain,
    Flush,
    QueryRun,
    RestartRun,
    SignalRun,
    StartRun,
    Unmapped,
    UpdateRun,
    Write,
)
from actorflow.runtime._promise import Countdown, Promise, then
from actorflow.runtime._waits import EventHub
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._lmdb import LmdbStore
from actorflow.store._memory import MemoryStore
from actorflow.store._protocol import Op, Store, blob_token, ensure_format
from actorflow.store._prune import PruneReport
from actorflow.store._records import dump_record, load_record
from actorflow.store._sealing import sealed
from actorflow.views import (
    RunDetails,
    RunSummary,
    WorkflowVersion,
    inspect_run,
    list_runs,
    read_run,
)
from actorflow.workers._dask import DaskExecutor
from actorflow.workers._state import State
from actorflow.workers._task import Intercept

if TYPE_CHECKING:
    from actorflow.engine._background import Background
    from actorflow.engine._follower import Follower
    from actorflow.engine._leader import LeaderServer
    from actorflow.runtime._blobs import BlobManager

__all__ = ["Engine"]

T = TypeVar("T")

log = logging.getLogger("actorflow.engine")

#: Bytes; keys longer than the store's MAX_USER_KEY are stored as their SHA-256.
_MAX_IDEMPOTENCY_KEY = 1024


class Engine:
    """An embedded durable workflow engine.

    Define workflows with :meth:`define`, start the engine (``with engine:`` or
    :meth:`start`), then :meth:`trigger` runs. All state lives in the store: a new engine on
    the same ``data_dir`` resumes every unfinished run.

    Args:
        data_dir: directory of the embedded LMDB store (default ``.actorflow``, or
            ``ACTORFLOW_DATA_DIR``).
        store: ``"lmdb"`` (default), ``"memory"``, or a :class:`~actorflow.store.Store`.
        clock: the clock for durable timers (default: the system clock; tests pass a
            :class:`~actorflow.ManualClock`).
        config: a complete :class:`~actorflow.EngineConfig`; other settings are then ignored.
        executor: where steps run: None or ``"process"`` (default), the engine's own worker
            processes; ``"inline"``, threads of this process (for tests: no isolation, and
            a step past its timeout is abandoned, not stopped); or
            :class:`~actorflow.DaskExecutor` (a Dask cluster).
        **settings: any :class:`~actorflow.EngineConfig` field, e.g. ``durability="fast"``,
            ``workers=4``.

    Raises:
        ConfigError: a setting is invalid.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        store: str | Store | None = None,
        clock: Clock | None = None,
        config: EngineConfig | None = None,
        executor: DaskExecutor | str | None = None,
        **settings: Any,
    ) -> None:
        if executor == "process":
            executor = None
        if executor is not None and executor != "inline" and not isinstance(executor, DaskExecutor):
            raise ConfigError(
                "executor: expected 'process', 'inline', af.DaskExecutor(...) or None, "
                f"got {executor!r}"
            )
        self._executor = executor
        # Set by the test harness (actorflow.testing) before start: count work in flight,
        # and replace step functions and services of an inline executor.
        self._activity: Activity | None = None
        self._intercept: Intercept | None = None
        self._services_cache: dict[tuple[str, str], Any] | None = None
        self._registry: Any = None  # the Prometheus registry, made at the first metrics()
        self._stopping = False  # stop() has begun: no new work is taken
        self._lifecycle = Lifecycle()
        custom_store: Store | None = None
        if store is not None and not isinstance(store, str):
            custom_store = store
            store = None
        if config is None:
            config = EngineConfig.from_sources(data_dir=data_dir, store=store, **settings)
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._custom_store = custom_store
        self._memory_store: MemoryStore | None = None
        self._definitions: dict[str, Workflow | CodeWorkflow] = {}  # the newest version of each
        self._versions: dict[str, dict[int, Workflow | CodeWorkflow]] = {}  # every version of each
        self._lock = threading.RLock()
        self._core: Core | None = None
        self._store: Store | None = None
        self._actors: list[pykka.ActorRef[Any]] = []
        self._failure: BaseException | None = None
        self._full: BaseException | None = None  # the store is full: new work refused
        self._background: Background | None = None
        self._state = State(self._state_backend, "")
        self._follower: Follower | None = None  # following another process's engine
        self._followed: dict[str, Compiled | CodeCompiled] = {}  # what a follower compiled
        self._server: LeaderServer | None = None  # leading: followers connect here
        self._collector_held = False  # it uses the collector policy (engine/_collector.py)

    # -- definitions -----------------------------------------------------------------------

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
                services=services,
                rate_limit=rate_limit,
                retention=retention,
                version=version,
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
        versions = self._versions.get(wid) or (
            {self._definitions[wid]._version: self._definitions[wid]}
            if wid in self._definitions
            else {}
        )
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
        versions[version] = wf
        self._versions[wid] = versions
        if version == max(versions):
            self._definitions[wid] = wf

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
            here = self._versions.get(workflow) or {}
            defined = set(here) or (
                {self._definitions[workflow]._version} if workflow in self._definitions else set()
            )
        counts = self._read(_versions.count_versions, workflow)
        if not defined and not counts:
            raise WorkflowNotFound(workflow, self.workflows)
        return _versions.versions(workflow, defined, counts)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (as the leader or a follower)."""
        return self._core is not None or self._follower is not None

    @property
    def role(self) -> str:
        """``"leader"``, ``"follower"`` or ``"stopped"``.

        Engines in several processes may share one ``data_dir``: the first to start leads
        (runs the actors, workers, timers and schedules), the others follow (forward their
        calls to the leader, read the store themselves) and one takes over when the leader
        goes. An engine on the in-memory store, or on a store object passed in, leads alone.
        See ``docs/embedding.md``.
        """
        if self._core is not None:
            return "leader"
        return "follower" if self._follower is not None else "stopped"

    def start(self) -> Self:
        """Open the store, start the actors and worker pool, and resume unfinished runs.

        If another process's engine holds the store (``data_dir``), this engine follows it
        instead (see :attr:`role`), unless ``role="leader"``.

        Raises:
            DefinitionError: a workflow definition is invalid (every problem listed).
            StoreInUse: another engine in this process holds the store, or another process's
                does and ``role="leader"``.
            StoreError: the store cannot be opened (corrupted, newer format).
            PoolUnavailable: worker processes could not be started.
        """
        with self._lock:
            if self.running:
                return self
            compiled = {wid: self._compile(wf) for wid, wf in self._definitions.items()}
            check_subflow_cycles({k: c.spec for k, c in compiled.items() if not c.code})
            older = self._compile_older(compiled)
            store = open_or_follow(self, compiled)
            if store is not None:
                self._lead(compiled, store, older)
            self._hold_collector(True)
            return self

    def _hold_collector(self, hold: bool) -> None:
        """Use the collector policy while running (leader or follower; engine/_collector.py)."""
        if self.config.collector != "freeze" or hold == self._collector_held:
            return
        from actorflow.engine._collector import policy

        if hold:
            policy.acquire()
        else:
            policy.release()
        self._collector_held = hold

    def _collector_check(self) -> dict[str, Any]:
        """The ``collector`` entry of :meth:`health`: informational, never failing."""
        if not self._collector_held:
            return {"ok": True, "policy": self.config.collector}
        from actorflow.engine._collector import policy

        return {"ok": True, "policy": "freeze", **policy.stats()}

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

    def _lead(
        self,
        compiled: dict[str, Compiled | CodeCompiled],
        store: Store,
        older: dict[str, dict[int, Compiled | CodeCompiled]] | None = None,
    ) -> None:
        """Start the actors on ``store`` (opened for writing), recover, and serve followers."""
        # The machinery of a running engine (actors, pool, blobs, background passes) is
        # imported here, not with the module: ``import actorflow`` (workers, the CLI, code
        # that only defines workflows) does not load it.
        from actorflow.engine._background import Background
        from actorflow.runtime._state import StateStore

        blobs: BlobManager | None = None
        try:
            ensure_format(store)
            blobs = self._blob_manager(store)
            from actorflow.runtime._plans import previous_plan_ops

            # The previous definitions' structures first: runs started under them keep it.
            older = older or {}
            every = _every(compiled.values(), older)
            store.write(previous_plan_ops(store) + self._definition_ops(every, older))
            self._failure = None
            self._full = None
            core = Core(
                config=self.config,
                store=store,
                clock=self.clock,
                evaluator=evaluator,
                workflows=compiled,
                versions=older,
                waiters=Waiters(),
                admission=Admission(
                    {k: c.spec.concurrency for k, c in compiled.items()},
                    {k: c.spec.rate_limit for k, c in compiled.items()},
                    self.clock,
                ),
                on_run_finished=self._on_run_finished,
            )
            core.events = EventHub(store, self.clock.now)
            core.events.load()
            core.state = StateStore(store, self.clock, functools.partial(_submit, core))
            core.host = EngineHost(core)
            core.blobs = blobs
            core.activity = self._activity
            self._lifecycle.activity = self._activity
            core.lifecycle = self._lifecycle
            blobs.start(functools.partial(_unmapped, core))
            self._store = store
            self._core = core
            for breaker in _breakers(core):
                breaker.bind(self.clock.now)
            with counting(self._activity):
                self._start_actors(core)
            self._recover(core)
            self._background = Background(core)
            self._background.start()
            serve_followers(self)
        except BaseException:
            if self._server is not None:
                self._server.stop()
                self._server = None
            if self._background is not None:
                self._background.stop()
                self._background = None
            self._stop_actors(drain=False, timeout=5.0)
            if blobs is not None:
                blobs.stop()
            self._core = None
            self._store = None
            self._release_store(store)
            claims.release(self)
            raise
        log.info(
            "engine started%s: %d workflows, %d workers, store %s",
            " as the leader" if self._server is not None else "",
            len(compiled),
            self.config.worker_count,
            self._store_label(),
        )

    # -- sharing a data_dir with other processes (engine/_sharing.py) ------------------

    def _fingerprints(self) -> dict[str, str]:
        core = self._core
        return fingerprints(core.workflows if core is not None else self._followed)

    def _finished(self, run_id: str) -> bool:
        """The run is over (or unknown: a wait for it would never end)."""
        try:
            return RunStatus(self._read(read_run, run_id)["status"]).terminal
        except RunNotFound:
            return True

    def _offload(self, fn: Callable[..., Any], *args: Any) -> Promise[Any]:
        """Run ``fn(*args)`` off the event loop (see runtime/_offload.py)."""
        from actorflow.runtime._offload import shared

        return shared()(fn, *args)

    def _blob_manager(self, store: Store) -> BlobManager:
        """The large-value manager, after saving what a killed engine left in segments."""
        from actorflow.runtime._blobs import BlobManager

        cfg = self.config
        token = blob_token(store)
        assert token is not None
        blobs = BlobManager(
            store,
            token,
            cfg.shm_threshold,
            cfg.shm_budget,
            cfg.blob_write_delay,
            lambda ops, then: self._blob_write(ops, then),
        )
        saved, lost, swept = blobs.recover()
        if saved or lost or swept:
            log.info(
                "large values: %d saved from shared memory, %d lost, %d segments swept",
                saved,
                lost,
                swept,
            )
        return blobs

    def _blob_write(self, ops: list[Op], then: Callable[[], Any]) -> None:
        core = self._core
        if core is None or core.writer is None:
            return  # stopping: the next start's recovery finishes the clean-up
        try:
            _submit(core, ops, then, None)
        except pykka.ActorDeadError:
            pass

    def _start_actors(self, core: Core) -> None:
        from actorflow.runtime._dispatcher import Dispatcher
        from actorflow.runtime._scheduler import Scheduler
        from actorflow.runtime._shard import Shard
        from actorflow.runtime._writer import StoreWriter

        cfg = self.config
        writer = StoreWriter.start(
            core.store,
            cfg.max_batch,
            cfg.durability == "fast",
            self._on_store_failure,
            core,
            core.blobs,
            self._on_store_full,
        )
        self._actors.append(writer)
        core.writer = writer
        scheduler = Scheduler.start(core.clock, core.route, self._engine_timer)
        self._actors.append(scheduler)
        core.scheduler = scheduler
        for i in range(cfg.shards):
            shard = Shard.start(core, i)
            self._actors.append(shard)
            core.shards.append(shard)
        ready: Promise[None] = Promise()
        dispatcher: pykka.ActorRef[Any]
        if self._executor == "inline":
            from actorflow.runtime._inline import InlineDispatcher

            dispatcher = InlineDispatcher.start(
                cfg,
                core.route,
                core.store,
                ready,
                core,
                self._intercept,
                self._services_cache,
            )
        elif isinstance(self._executor, DaskExecutor):
            from actorflow.runtime._dask_dispatcher import DaskDispatcher

            dispatcher = DaskDispatcher.start(
                cfg, core.route, core.store, ready, core, self._executor
            )
        else:
            dispatcher = Dispatcher.start(cfg, core.route, core.store, ready, core.costs, core)
        self._actors.append(dispatcher)
        core.dispatcher = dispatcher
        try:
            ready.result(cfg.worker_start_timeout)
        except TimeoutError:
            raise PoolUnavailable(
                f"worker processes did not start within {cfg.worker_start_timeout:g}s "
                "(worker_start_timeout)"
            ) from None

    def _recover(self, core: Core) -> None:
        from actorflow.runtime._plans import hold_ops, unavailable

        store = core.store
        resumed = queued = 0
        statuses = (
            RunStatus.RUNNING,
            RunStatus.QUEUED,
            RunStatus.PANICKED,
            RunStatus.WAITING_FOR_DEFINITION,
        )
        for status in statuses:
            prefix = K.status_index_prefix(status)
            for key, _ in store.scan(K.INDEX, prefix):
                run_id = key[len(prefix) :].decode()
                try:
                    rec = read_run(store, run_id)
                except RunNotFound:
                    continue
                workflow = rec["workflow"]
                if run_id in core.held:
                    continue  # held a moment ago, in an earlier pass of this loop
                reason = unavailable(core, rec)
                if reason is not None:
                    # Held where everyone can see it, not failed: status, reason, a warning.
                    log.warning("run %s of workflow %r is held: %s", run_id, workflow, reason)
                    core.held[run_id] = reason
                    if status != RunStatus.WAITING_FOR_DEFINITION or rec.get("held") != reason:
                        store.write(hold_ops(run_id, rec, reason))
                    continue
                if status == RunStatus.WAITING_FOR_DEFINITION:
                    status_now = RunStatus.RUNNING  # its definition is back: load and go on
                else:
                    status_now = status
                if status_now == RunStatus.PANICKED:
                    core.admission.adopt(workflow, run_id)  # its restart timer wakes it
                elif status_now == RunStatus.RUNNING:
                    core.admission.adopt(workflow, run_id)
                    core.route(run_id).tell(ActivateRun(run_id))
                    resumed += 1
                elif core.admission.try_acquire(workflow, run_id):
                    core.route(run_id).tell(ActivateRun(run_id))
                    queued += 1
        from actorflow.runtime._scheduler import stored_timers

        assert core.scheduler is not None
        timers = stored_timers(store)
        core.scheduler.tell(timers)
        if resumed or queued or timers.timers:
            log.info(
                "recovery: %d running runs resumed, %d queued runs admitted, %d timers loaded",
                resumed,
                queued,
                len(timers.timers),
            )

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the engine. Unfinished runs stay in the store and resume at the next start.

        A step that was running when the engine stopped has an ``interrupted`` attempt and
        runs again as a new attempt at the next start. A step that was dispatched but had
        not started (it waited for a worker, or in a worker's queue) is no attempt: it runs
        at the next start under the same attempt number, and does not count towards
        ``max_interruptions``.

        Args:
            drain: first let the steps in flight finish and record their results (no new
                step starts); False kills them at once (they are retried on recovery).
            timeout: seconds to wait for the drain before stopping anyway.
        """
        self._stopping = True  # refuse new work at once, before waiting for the lock
        with self._lock:
            follower, self._follower = self._follower, None
        if follower is not None:
            # (outside the lock: the follower's lock thread may be waiting for it to lead)
            follower.stop()
            claims.release(self)
            self._hold_collector(False)
            self._stopping = False
            log.info("engine stopped (it was a follower)")
            return
        with self._lock:
            core = self._core
            if core is None:
                self._stopping = False
                return
            if self._server is not None:
                # Followers first: what they sent and got no answer for, they send again
                # to the next leader; nothing more is taken here.
                self._server.stop()
                self._server = None
            if self._background is not None:
                self._background.stop()
                self._background = None
            self._stop_actors(drain, timeout)
            if core.blobs is not None:
                core.blobs.stop()
            core.callbacks.shutdown(wait=False, cancel_futures=True)
            self._lifecycle.close()  # what was recorded is delivered before stop() returns
            self._core = None
            core.waiters.fail_all(
                EngineNotRunning(
                    "the engine stopped before the run finished; it resumes when an engine "
                    "starts on the same store"
                )
            )
            store, self._store = self._store, None
            if store is not None:
                self._release_store(store)
            claims.release(self)
            self._hold_collector(False)
            self._stopping = False
            log.info("engine stopped")

    def install_signal_handlers(
        self,
        drain_timeout: float = 30.0,
        signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
        *,
        exit: bool = True,
    ) -> None:
        """Stop gracefully on SIGTERM and SIGINT (a deploy, Ctrl-C).

        On the first signal the engine takes no new work (triggers, events, resumes raise
        :class:`~actorflow.EngineNotRunning`; webhooks answer 503), lets the steps in flight
        finish and records their results for up to ``drain_timeout`` seconds, commits and
        syncs the store, and stops; steps still running then are killed and, like every
        unfinished run, resume at the next start. Then the process exits with status 0
        (``SystemExit``), unless ``exit`` is False. A second signal while draining exits at
        once (``os._exit(1)``): every commit is atomic, so the store stays consistent and the
        unfinished steps run again at the next start. Call it from the main thread (Python
        runs signal handlers there).

        Args:
            drain_timeout: seconds to let steps in flight finish.
            signals: the signals to handle.
            exit: raise ``SystemExit(0)`` once stopped.
        """
        draining = threading.Event()

        def handle(signum: int, frame: Any) -> None:
            if draining.is_set():
                log.warning("signal %d again while draining: exiting at once", signum)
                os._exit(1)
            draining.set()
            log.info("signal %d: draining steps in flight (up to %gs)", signum, drain_timeout)
            self.stop(drain=True, timeout=drain_timeout)
            if exit:
                raise SystemExit(0)

        for signum in signals:
            signal.signal(signum, handle)

    def _stop_actors(self, drain: bool, timeout: float) -> None:
        core = self._core
        if core is not None and drain and core.dispatcher is not None and self._failure is None:
            done: Promise[None] = Promise()
            try:
                core.dispatcher.tell(Drain(done))
                done.result(timeout)
                flushed = []
                # A full store commits nothing until space returns: waiting for the shards'
                # writes to be durable would only run out the timeout.
                for shard in core.shards if self._full is None else ():
                    f: Promise[None] = Promise()
                    shard.tell(Flush(f))
                    flushed.append(f)
                for f in flushed:
                    f.result(timeout)
            except (TimeoutError, pykka.ActorDeadError):
                log.warning("drain did not finish within %gs; stopping anyway", timeout)
        from actorflow.runtime._dispatcher import Dispatcher
        from actorflow.runtime._remote import RemoteDispatcher
        from actorflow.runtime._scheduler import Scheduler
        from actorflow.runtime._shard import Shard
        from actorflow.runtime._writer import StoreWriter

        # Dispatcher first (no more results), writer last (it commits what the others sent).
        rank: list[tuple[type, ...]] = [
            (Dispatcher, RemoteDispatcher),
            (Scheduler,),
            (Shard,),
            (StoreWriter,),
        ]

        def position(ref: Any) -> int:
            for i, kinds in enumerate(rank):
                if issubclass(ref.actor_class, kinds):
                    return i
            return 2  # with the shards

        order = sorted(self._actors, key=position)
        for ref in order:
            with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                ref.stop(block=True, timeout=max(timeout, 10.0))
        self._actors.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(drain=True)

    # -- triggering ------------------------------------------------------------------------

    def trigger(self, workflow: str, *args: Any, idempotency_key: str | None = None) -> RunHandle:
        """Start a run of ``workflow``; returns once the run is durably recorded.

        Args:
            workflow: the workflow id.
            *args: a graph workflow takes one payload (``ctx.payload``; none: None); a code
                workflow's function is called as ``f(ctx, *args)``. JSON-compatible data or
                any picklable objects.
            idempotency_key: runs triggered with the same key (per workflow) are one run: the
                second call returns the first run's handle.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidPayload: the payload cannot be stored.
            ClientError: more than one payload for a graph workflow.
            EngineNotRunning: the engine is not started.
        """
        run_id: str = self._submit(workflow, args, idempotency_key).result()
        return RunHandle(self, run_id, workflow)

    async def trigger_async(
        self, workflow: str, *args: Any, idempotency_key: str | None = None
    ) -> RunHandle:
        """Awaitable twin of :meth:`trigger`; concurrent triggers share group commits.

        Nothing here runs on the event loop's thread but the await (see
        ``runtime/_offload.py``): the loop keeps serving while the trigger is recorded.
        """
        run_id = await _value(self._offload(self._submit, workflow, args, idempotency_key))
        return RunHandle(self, run_id, workflow)

    def retry(self, run_id: str) -> RunHandle:
        """Run a failed or cancelled run again: a new run of its workflow with its input.

        The new run starts from the beginning (the old one keeps its record); its input is
        the old run's stored payload (a code workflow's arguments), byte for byte.

        Returns:
            The new run's handle.

        Raises:
            RunNotFound: no such run.
            ClientError: the run has not failed or been cancelled.
        """
        new_id: str = self._retry(run_id).result()
        return RunHandle(self, new_id, self._read(read_run, new_id)["workflow"])

    async def retry_async(self, run_id: str) -> RunHandle:
        """Awaitable twin of :meth:`retry`."""
        new_id = await _value(self._offload(self._retry, run_id))
        handle: RunHandle = await _value(self._offload(self.run, new_id))
        return handle

    def _retry(self, run_id: str) -> Promise[str]:
        follower = self._follower
        if follower is not None:
            return follower.request("retry", run_id)
        core = self._require_core(new_work=True)
        rec = read_run(core.store, run_id)
        status = RunStatus(rec["status"])
        if status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ClientError(
                f"run {run_id} is {status}: only a failed or cancelled run can be retried "
                "(trigger the workflow again for another run)"
            )
        compiled = self._compiled(core, rec["workflow"])
        payload = core.store.get(K.VALUES, K.payload_key(run_id)) or b"Jnull"
        countdown = Countdown(1)
        new_id = new_run_id()
        core.route(new_id).tell(StartRun(new_id, compiled.spec.id, payload, None, countdown))
        log.info("run %s retried as %s", run_id, new_id)
        return then(countdown.promise, new_id)

    def trigger_many(
        self,
        workflow: str,
        payloads: Iterable[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[RunHandle]:
        """Start many runs of ``workflow`` at once; returns once all are durably recorded.

        Cheaper than a ``trigger`` per payload: the runs are recorded in shared group commits
        and the call waits once.

        Args:
            workflow: the workflow id.
            payloads: one run per payload.
            idempotency_keys: a key (or None) per payload, as for :meth:`trigger`.

        Raises:
            InvalidPayload: a payload cannot be stored (its index is named); nothing was
                started.
            ClientError: ``idempotency_keys`` does not match ``payloads``.
        """
        items = list(payloads)
        keys: list[str | None] = (
            list(idempotency_keys) if idempotency_keys is not None else [None] * len(items)
        )
        if len(keys) != len(items):
            raise ClientError(
                f"idempotency_keys: expected {len(items)} keys (one per payload), got {len(keys)}"
            )
        ids: list[str] = self._submit_many(workflow, items, keys).result()
        return [RunHandle(self, run_id, workflow) for run_id in ids]

    def _submit_many(
        self,
        workflow: str,
        items: list[Any],
        keys: list[str | None],
        run_ids: list[str] | None = None,
    ) -> Promise[list[str]]:
        """Start a run per item; the promise completes with their ids once all are durable."""
        ids: list[str] = (
            list(run_ids) if run_ids is not None else [str(new_run_id()) for _ in items]
        )
        follower = self._follower
        if follower is not None:
            return follower.request("submit_many", workflow, items, keys, ids, False)
        core = self._require_core(new_work=True)
        compiled = self._compiled(core, workflow)
        sink = core.sink
        encoded = [
            encode_value([p] if compiled.code else p, f"payloads[{i}]", sink)
            for i, p in enumerate(items)
        ]
        for i, key in enumerate(keys):
            if key is not None:
                _check_part(key, f"idempotency_keys[{i}]", _MAX_IDEMPOTENCY_KEY)
        plain = [i for i, k in enumerate(keys) if k is None]
        countdown = Countdown(len(plain))
        for i in plain:
            core.route(ids[i]).tell(StartRun(ids[i], compiled.spec.id, encoded[i], None, countdown))
        waits = [countdown.promise]
        for i, key in enumerate(keys):
            if key is not None:
                ids[i], fut = core.submit(compiled.spec.id, encoded[i], key)
                waits.append(fut)
        return _all(waits, ids)

    def _submit(
        self,
        workflow: str,
        args: tuple[Any, ...],
        idempotency_key: str | None,
        run_id: str | None = None,
    ) -> Promise[str]:
        """Start a run; the promise completes with its id once it is durable."""
        follower = self._follower
        if follower is not None:
            return follower.request(
                "submit", workflow, args, idempotency_key, run_id or new_run_id(), False
            )
        core = self._require_core(new_work=True)
        compiled = self._compiled(core, workflow)
        if compiled.code:
            data = encode_value(list(args), "arguments", core.sink)
        elif len(args) > 1:
            raise ClientError(
                f"trigger({workflow!r}, ...): a graph workflow takes one payload, got "
                f"{len(args)} arguments (pass one dict or list)"
            )
        else:
            data = encode_value(args[0] if args else None, "payload", core.sink)
        if idempotency_key is not None:
            _check_part(idempotency_key, "idempotency_key", _MAX_IDEMPOTENCY_KEY)
        new_id, fut = core.submit(compiled.spec.id, data, idempotency_key, run_id=run_id)
        return then(fut, new_id)

    def run(self, run_id: str) -> RunHandle:
        """A handle for an existing run.

        Raises:
            RunNotFound: no such run.
        """
        rec = self._read(read_run, run_id)
        return RunHandle(self, run_id, rec["workflow"])

    # -- events, approvals, state ----------------------------------------------------------

    def publish(
        self, event: str, payload: Any = None, *, key: str | None = None, ttl: Any = None
    ) -> int:
        """Publish an event; returns once it is durably recorded.

        Every step waiting for ``event`` (``.wait_for_event``) whose key matches gets it. An
        event with a ``key`` that no step with that key waits for yet is kept for ``ttl``
        (default: the engine's ``event_ttl``) and taken by the first such wait.

        Args:
            event: the event's name.
            payload: its data (the waiting step's output).
            key: routes the event to waits with this key (e.g. an order id).
            ttl: how long an untaken keyed event is kept (a duration).

        Returns:
            How many waiting steps it was delivered to.

        Raises:
            ClientError: a bad name, key or ttl.
            InvalidPayload: the payload cannot be stored.
        """
        delivered: int = self._publish(event, payload, key, ttl).result()
        return delivered

    async def publish_async(
        self, event: str, payload: Any = None, *, key: str | None = None, ttl: Any = None
    ) -> int:
        """Awaitable twin of :meth:`publish`."""
        delivered: int = await _value(self._offload(self._publish, event, payload, key, ttl))
        return delivered

    def _publish(self, event: str, payload: Any, key: str | None, ttl: Any) -> Promise[int]:
        follower = self._follower
        if follower is not None:
            return follower.request("publish", event, payload, key, ttl)
        _, done, delivered = publish(self._require_core(new_work=True), event, payload, key, ttl)
        return then(done, delivered)

    def resume(self, token: str, payload: Any = None) -> None:
        """Resume a run paused at ``human_in_the_loop``; ``payload`` is the node's output.

        Returns once the resume is durable.

        Raises:
            ApprovalNotFound: no approval has this token.
            ApprovalAlreadyResolved: it was resumed already (a token works once).
            ApprovalExpired: its timeout passed.
        """
        self._resume(token, payload).result()

    async def resume_async(self, token: str, payload: Any = None) -> None:
        """Awaitable twin of :meth:`resume`."""
        await _wait(self._offload(self._resume, token, payload))

    def _resume(self, token: str, payload: Any) -> Promise[Any]:
        follower = self._follower
        if follower is not None:
            return follower.request("resume", token, payload)
        return resume(self._require_core(new_work=True), token, payload)

    def restart(self, run_id: str) -> None:
        """Restart a panicked code workflow run from its history (after fixing the code).

        Its restart count starts again from zero. Returns once the restart is durable.

        Raises:
            RunNotFound: no such run.
            ClientError: the run is not a panicked code workflow run.
        """
        self._restart(run_id).result()

    async def restart_async(self, run_id: str) -> None:
        """Awaitable twin of :meth:`restart`."""
        await _wait(self._offload(self._restart, run_id))

    def _restart(self, run_id: str) -> Promise[bool]:
        follower = self._follower
        if follower is not None:
            return follower.request("restart", run_id)
        core = self._require_core(new_work=True)
        read_run(core.store, run_id)  # RunNotFound for an unknown id
        fut: Promise[bool] = Promise()
        core.route(run_id).tell(RestartRun(run_id, fut))
        return fut

    def export_history(self, run_id: str, path: str | Path | None = None) -> dict[str, Any]:
        """A code workflow run's history as one JSON document (written to ``path`` if given).

        ``actorflow replay --history FILE module:engine`` or ``af.testing.replay(doc, fn)``
        replays it against the current code without a store.

        Raises:
            RunNotFound: no such run.
            ClientError: the run is a graph workflow's.
        """
        from actorflow.code._history import export_history

        doc = self._read(export_history, run_id)
        if path is not None:
            Path(path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return doc

    def _signal(
        self, run_id: str, name: str, payload: Any, key: str | None = None
    ) -> Promise[bool]:
        follower = self._follower
        if follower is not None:
            # A key of its own makes the signal safe to send again to the next leader.
            return follower.request("signal", run_id, name, payload, key or f"af:{new_run_id()}")
        core = self._require_core(new_work=True)
        _check_part(name, "signal: name", K.MAX_NAME)
        if key is not None:
            _check_part(key, "idempotency_key", _MAX_IDEMPOTENCY_KEY)
        data = encode_value(payload, f"payload of signal {name!r}")
        fut: Promise[bool] = Promise()
        core.route(run_id).tell(SignalRun(run_id, name, data, fut, key))
        return fut

    def _query(self, run_id: str, name: str, args: tuple[Any, ...]) -> Promise[Any]:
        follower = self._follower
        if follower is not None:
            return follower.request("query", run_id, name, args)
        core = self._require_core()
        _check_part(name, "query: name", K.MAX_NAME)
        fut: Promise[Any] = Promise()
        core.route(run_id).tell(QueryRun(run_id, name, tuple(args), fut))
        return fut

    def _update(self, run_id: str, name: str, payload: Any) -> Promise[Any]:
        follower = self._follower
        if follower is not None:
            return follower.request("update", run_id, name, payload)
        core = self._require_core(new_work=True)
        _check_part(name, "update: name", K.MAX_NAME)
        data = encode_value(payload, f"payload of update {name!r}")
        fut: Promise[Any] = Promise()
        core.route(run_id).tell(UpdateRun(run_id, name, data, str(new_run_id()), fut))
        return fut

    def approvals(
        self, status: str | None = "waiting", run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Approvals (pending by default), oldest first, each a dict with its ``token``.

        Args:
            status: ``"waiting"``, ``"resumed"``, ``"expired"``, ``"cancelled"``, or None
                for all.
            run_id: only this run's.
        """
        return self._read(list_approvals, status, run_id)

    def asgi(
        self,
        *,
        read_only: bool = False,
        dashboard: bool = True,
        token: str | None = None,
        rate_limit: float | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> Any:
        """One ASGI app: webhooks, the JSON REST API, the dashboard, metrics and health.

        The dashboard is at ``/``, metrics at ``/metrics``, health at ``/healthz`` and
        ``/readyz``. Mount it in a service, or run it with ``actorflow serve module:engine``
        (uvicorn on uvloop, bound to 127.0.0.1 unless told otherwise). Its lifespan starts
        the engine if it is not running yet; mounted under a prefix (``app.mount("/flows",
        engine.asgi())``) it gets no lifespan events, so pass :meth:`lifespan` to the outer
        app. Every route, the dashboard included, works under the prefix. Until the engine
        runs, a mounted app that nothing started answers 503 saying so (``/readyz`` too).
        Routes are listed in ``actorflow/triggers/_http.py``.

        Args:
            read_only: refuse (403) the API's actions (trigger, cancel, retry, resume,
                publish, signal, update, restart); webhooks still start runs. The dashboard
                then shows no action buttons.
            dashboard: serve the dashboard at ``/``.
            token: a bearer token the REST API, the dashboard and ``/metrics`` require
                (webhooks keep their signatures; health checks stay open); default: the
                ``api_token`` setting (``ACTORFLOW_API_TOKEN``), empty for none. Open the
                dashboard once with ``/?token=...``; it keeps the token in a cookie.
            rate_limit: requests per second allowed per client address (bursts of twice
                that), answered 429 with ``Retry-After`` past it; health checks are exempt.
                Default: the ``api_rate_limit`` setting (``ACTORFLOW_API_RATE_LIMIT``); 0
                for none.
            allowed_hosts: host names served besides those of the ``allowed_hosts`` setting
                (``ACTORFLOW_ALLOWED_HOSTS``) and the address a request arrived on. Every
                request but webhooks and health checks must name one in its ``Host`` (else
                400), and one that changes state must be JSON (or carry
                ``X-Actorflow-Client``) from no other site (else 415 / 403); see
                ``docs/operations.md``.

        Raises:
            MissingExtra: Starlette is not installed (the ``serve`` extra).
            DefinitionError: a definition is invalid, or two webhooks share a path and method.
            ConfigError: ``rate_limit`` or ``allowed_hosts`` is not valid.
        """
        require("starlette", "engine.asgi()")
        from actorflow.triggers._http import build_app

        chosen = self.config.api_token if token is None else token
        rate = self.config.api_rate_limit if rate_limit is None else rate_limit
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
            raise ConfigError(f"rate_limit: expected requests per second >= 0, got {rate!r}")
        return build_app(
            self,
            read_only=read_only,
            dashboard=dashboard,
            token=chosen,
            rate_limit=rate,
            allowed_hosts=allowed_hosts,
        )

    def lifespan(
        self, app: Any = None, *, drain_timeout: float = 30.0
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Start the engine for a service's lifetime: ``FastAPI(lifespan=engine.lifespan)``.

        An async context manager for the lifespan of the app that mounts :meth:`asgi`
        (FastAPI, Starlette), or to enter in a lifespan of your own: ``async with
        engine.lifespan(app): yield``. It starts the engine in a thread (``start`` blocks)
        and, at shutdown, stops it there, letting steps in flight finish. An engine already
        running is left alone, then and at shutdown. See ``docs/embedding.md``.

        Args:
            app: the app whose lifespan this is (frameworks pass it; unused).
            drain_timeout: seconds the stop at shutdown waits for steps in flight.
        """
        from actorflow.triggers._lifespan import lifespan

        return lifespan(self, drain_timeout)

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
        from actorflow.runtime._plans import PlanUnavailable, plan_for

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

    def _webhooks(self) -> list[tuple[str, Any]]:
        """(workflow id, webhook spec) of every defined workflow, checked for clashes."""
        out: list[tuple[str, Any]] = []
        seen: dict[tuple[str, str], str] = {}
        problems = []
        for wid, wf in sorted(self._definitions.items()):
            for spec in wf.build().webhooks:
                other = seen.setdefault((spec.path, spec.method), wid)
                if other != wid or (spec.path, spec.method, wid) in [
                    (s.path, s.method, w) for w, s in out
                ]:
                    problems.append(
                        f"on_webhook({spec.path!r}, {spec.method!r}): also used by workflow "
                        f"{other!r}; each path and method starts one workflow"
                    )
                    continue
                out.append((wid, spec))
        if problems:
            raise DefinitionError(problems)
        return out

    def schedules(self) -> list[dict[str, Any]]:
        """The schedules of the running engine: spec, last and next slot, counts."""
        if self._follower is not None:
            return self._forward("schedules")  # type: ignore[no-any-return]
        self._require_core()
        background = self._background
        return background.schedules.describe() if background is not None else []

    @property
    def state(self) -> State:
        """The engine's global persistent state (``.of(workflow_id)``: a workflow's)."""
        return self._state

    def _state_backend(self, op: str, scope: str, args: tuple[Any, ...]) -> Any:
        follower = self._follower
        if follower is not None:
            return follower.request("state", op, scope, args).result()
        return state_call(self._require_core(), op, scope, args)

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A follower's blocking call, run by the leader."""
        follower = self._follower
        assert follower is not None
        return follower.request("call", method, args, kwargs).result()

    def prune(
        self,
        older_than: Any = None,
        *,
        workflow: str | None = None,
        dry_run: bool = False,
        archive: str | Path | None = None,
    ) -> PruneReport:
        """Delete finished runs now, with everything they own (what retention does by itself).

        Only finished runs (completed, failed, cancelled, continued as new) are pruned, and
        never a child whose parent run is unfinished. Their idempotency keys are freed: a
        trigger with the same key afterwards starts a new run.

        Args:
            older_than: prune runs that ended more than this long ago (a duration such as
                ``"30d"``; 0: every finished run); None: each workflow's retention.
            workflow: only this workflow's runs.
            dry_run: delete nothing; the report says what would go.
            archive: first append each run to this JSON-lines file (zstd-compressed if its
                name ends in ``.zst``), fsynced before the run is deleted.

        Returns:
            What was pruned: runs, blobs, bytes freed...

        Raises:
            ClientError: ``older_than`` is not a duration.
            MissingExtra: a ``.zst`` archive without the ``codecs`` extra (zstandard).
            EngineNotRunning: the engine is not started.
        """
        if self._follower is not None:
            return self._forward(  # type: ignore[no-any-return]
                "prune", older_than, workflow=workflow, dry_run=dry_run, archive=archive
            )
        self._require_core()
        background = self._background
        if background is None:
            raise EngineNotRunning("the engine is not running: start it to prune")
        pruner = background.pruner
        selection = pruner.selection(older_than, workflow)
        return pruner.run(selection, bool(dry_run), None if archive is None else str(archive))

    # -- inspection ------------------------------------------------------------------------

    def inspect(self, run_id: str) -> RunDetails:
        """Everything recorded about a run: status, timings, steps, attempts, errors.

        Raises:
            RunNotFound: no such run.
        """
        return self._read(inspect_run, run_id)

    def runs(
        self,
        workflow: str | None = None,
        status: str | RunStatus | None = None,
        limit: int | None = 50,
        *,
        before: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[RunSummary]:
        """Runs, newest first.

        Args:
            workflow: only this workflow's runs.
            status: only runs in this status (``"failed"``, ``RunStatus.RUNNING``...).
            limit: at most this many (None: all).
            before: a page's cursor: runs older than this run id (the previous page's last).
            since: only runs triggered at or after this time (seconds since the epoch).
            until: only runs triggered before this time.
        """
        return self._read(list_runs, workflow, status, limit, before, since, until)

    def statistics(self) -> dict[str, Any]:
        """What the engine is doing (not for hot loops).

        Returns:
            ``queue_depth`` (tasks waiting for a worker), ``busy_workers``, ``workers``,
            ``restarts`` (worker deaths replaced), ``recycled`` (workers replaced at
            ``max_tasks_per_worker`` / ``max_memory_per_worker``), ``commit_batch``
            (mean and largest writes per commit), ``dispatch_latency_ms`` (p50 and p99, from
            a task reaching the dispatcher to its send to a worker), ``live_runs`` and
            ``sticky_runs`` (waiting code workflow runs kept in memory), ``shm`` (shared
            memory: ``segments``, ``bytes``, ``in_use`` (neither free nor a cached copy),
            ``lent`` / ``reused`` / ``refused`` segment requests, blobs written),
            ``breakers`` (each circuit breaker's state and counters, by name), ``retention``
            (finished runs ``pruned`` and ``passes`` made since start, the
            ``longest_write_ms`` of a batch of deletes), and the raw counters under ``pool``
            and ``store`` (``store["rejected"]``: writes the store refused for their
            content, each failing only its sender).
        """
        if self._follower is not None:
            return self._forward("statistics")  # type: ignore[no-any-return]
        core = self._require_core()
        out: dict[str, Any] = {}
        assert core.dispatcher is not None and core.writer is not None
        pool = core.dispatcher.proxy().statistics().get(timeout=10).__dict__
        store = core.writer.proxy().stats.get(timeout=10).as_dict()
        out["queue_depth"] = pool["queued"]
        out["busy_workers"] = pool["busy"]
        out["workers"] = pool["workers"]
        out["restarts"] = pool["restarts"]
        out["recycled"] = pool["recycled"]
        out["commit_batch"] = {"mean": store["mean_batch"], "largest": store["largest_batch"]}
        out["dispatch_latency_ms"] = {"p50": pool["latency_p50_ms"], "p99": pool["latency_p99_ms"]}
        out["pool"] = pool
        out["store"] = store
        out["live_runs"] = sum(s.proxy().live_runs.get(timeout=10) for s in core.shards)
        out["sticky_runs"] = sum(s.proxy().sticky_runs.get(timeout=10) for s in core.shards)
        # Runs a deploy left without their definition (see docs/operations.md).
        waiting = K.status_index_prefix(RunStatus.WAITING_FOR_DEFINITION)
        out["waiting_for_definition"] = len(core.store.scan(K.INDEX, waiting))
        out["shm"] = core.blobs.statistics() if core.blobs is not None else {}
        out["breakers"] = {b.name: b.snapshot() for b in _breakers(core)}
        assert core.scheduler is not None
        out["timers"] = core.scheduler.proxy().pending.get(timeout=10)
        out["scheduler_lag"] = core.scheduler.proxy().lag.get(timeout=10)
        background = self._background
        out["retention"] = background.pruner.statistics() if background is not None else {}
        return out

    def subscribe(
        self, fn: Callable[[LifecycleEvent], Any], *kinds: type[LifecycleEvent]
    ) -> Callable[[], None]:
        """Call ``fn(event)`` for each lifecycle event, once it is durable.

        Events are :class:`~actorflow.RunStarted`, :class:`~actorflow.StepAttempted` and
        :class:`~actorflow.RunFinished` (frozen dataclasses), delivered in the order they
        were recorded, on a thread of their own (a subscriber's errors are logged). Works
        before and after :meth:`start`; events of a stopped engine were all delivered when
        :meth:`stop` returns.

        Args:
            fn: the subscriber.
            *kinds: only these event types (default: all).

        Returns:
            A function that unsubscribes.

        Raises:
            ClientError: ``fn`` is not callable, or a kind is not an event type.
        """
        if not callable(fn):
            raise ClientError(f"subscribe: fn: expected a callable, got {fn!r}")
        for kind in kinds:
            if kind not in (RunStarted, StepAttempted, RunFinished):
                raise ClientError(
                    "subscribe: kinds: expected af.RunStarted, af.StepAttempted or "
                    f"af.RunFinished, got {kind!r}"
                )
        unsubscribe = self._lifecycle.subscribe(fn, tuple(kinds))
        follower = self._follower
        if follower is not None:
            follower.want_events()
        return unsubscribe

    def metrics(self) -> str:
        """The engine's Prometheus metrics, in the text format (``GET /metrics`` serves it).

        Runs started and finished by workflow and status, step attempts by outcome, step
        duration histograms by workflow and step, store commit durations and batch sizes,
        queue depth, running steps, workers, worker restarts, recycles, timeouts and
        crashes, live runs, pending timers, scheduler lag, and circuit breakers. Counts start
        at zero when the engine starts.

        Raises:
            MissingExtra: prometheus-client is not installed (the ``metrics`` extra).
            EngineNotRunning: the engine is not running.
        """
        require("prometheus_client", "engine.metrics() (GET /metrics)")
        from actorflow.observability._metrics import exposition, registry_for

        if self._follower is not None:
            return self._forward("metrics")  # type: ignore[no-any-return]
        self._require_core()
        if self._registry is None:
            self._registry = registry_for(self)
        return exposition(self._registry)

    @property
    def alive(self) -> bool:
        """Liveness (``GET /healthz``): running, and not halted by a store failure.

        False once a commit failed for a fault of the store (an I/O error, corruption): the
        engine then refuses all work until it is restarted, so an orchestrator should
        restart the process. A full disk is not a halt (work resumes when space returns; see
        :meth:`health`), nor is one write the store refused for its content.
        """
        if self._follower is not None:
            return True  # it forwards, or waits for a leader (readiness says which)
        return self._core is not None and self._failure is None

    def health(self) -> dict[str, Any]:
        """Liveness and readiness (``GET /healthz``, ``GET /readyz``).

        Is the engine alive (not halted by a store failure), is the store writable, are
        workers alive, does the scheduler keep up with timers?

        Returns:
            ``{"alive": bool, "ready": bool, "checks": {"store": {...}, "workers": {...},
            "scheduler": {...}}}``, each check with ``ok`` and what it saw.
        """
        follower = self._follower
        if follower is not None:
            seen = follower.health()
            seen["checks"]["collector"] = self._collector_check()
            return seen
        core = self._core
        if core is None:
            return {
                "alive": False,
                "ready": False,
                "role": "stopped",
                "checks": {"engine": {"ok": False, "detail": "stopped"}},
            }
        checks: dict[str, dict[str, Any]] = {}
        failure = self._failure
        full = self._full
        checks["store"] = {
            "ok": failure is None and full is None,
            "detail": (
                f"halted: a commit failed ({failure}); restart the engine"
                if failure is not None
                else f"full, commits wait for space: {full}"
                if full is not None
                else "writable"
            ),
        }
        try:
            assert core.dispatcher is not None
            alive = core.dispatcher.proxy().statistics().get(timeout=_HEALTH_WAIT).workers
            checks["workers"] = {"ok": alive > 0, "alive": alive}
        except Exception as exc:
            checks["workers"] = {"ok": False, "detail": f"dispatcher not answering: {exc}"}
        try:
            assert core.scheduler is not None
            lag = core.scheduler.proxy().lag.get(timeout=_HEALTH_WAIT)
            checks["scheduler"] = {"ok": lag <= _MAX_LAG, "lag_seconds": round(lag, 3)}
        except Exception as exc:
            checks["scheduler"] = {"ok": False, "detail": f"scheduler not answering: {exc}"}
        server = self._server
        if server is not None:
            checks["followers"] = {"ok": True, "connected": server.followers}
        checks["collector"] = self._collector_check()
        return {
            "alive": failure is None,
            "ready": all(c["ok"] for c in checks.values()),
            "role": "leader",
            "checks": checks,
        }

    # -- internals used by RunHandle -------------------------------------------------------

    def _watch(self, run_id: str) -> Promise[None]:
        follower = self._follower
        if follower is not None:
            return follower.request("watch", run_id)
        core = self._core
        if core is None:
            fut: Promise[None] = Promise()
            fut.set_exception(
                EngineNotRunning(
                    f"run {run_id} is unfinished and no engine is running to finish it; "
                    "start the engine (with engine: ...) to resume it"
                )
            )
            return fut
        if self._failure is not None:
            fut = Promise()
            fut.set_exception(StoreError(f"the engine halted: {self._failure}"))
            return fut
        return core.waiters.watch(run_id)

    def _unwatch(self, run_id: str) -> None:
        """Release the watch of a run that is over: it wakes whoever shares it, who looks again.

        A watch registered after its run ended is never completed by the run; without this,
        the engine would keep one per ``result()`` of a finished run for its lifetime. (A
        follower's watch lives in its leader, which releases it the same way.)
        """
        core = self._core
        if core is not None:
            core.waiters.resolve(run_id)

    def _cancel(self, run_id: str, reason: str) -> Promise[bool]:
        follower = self._follower
        if follower is not None:
            return follower.request("cancel", run_id, reason)
        core = self._require_core()
        read_run(core.store, run_id)  # RunNotFound for an unknown id
        fut: Promise[bool] = Promise()
        core.route(run_id).tell(CancelRun(run_id, str(reason), fut))
        return fut

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(store, *args)`` on the store to read.

        While running, that is the live store. When stopped, an LMDB store is opened read-only
        for the call and closed after it: LMDB allows one environment per file per process,
        so a lingering read-only handle would keep any engine from opening the store later.
        """
        live = self._store
        if live is not None:
            return fn(live, *args)
        follower = self._follower
        if follower is not None:
            with follower.reading() as reader:
                if reader is not None:
                    return fn(reader, *args)
            live = self._store  # it took over as the leader meanwhile
            if live is not None:
                return fn(live, *args)
        if self._custom_store is not None:
            return fn(self._custom_store, *args)
        if self.config.store == "memory":
            with self._lock:
                if self._memory_store is None:
                    self._memory_store = MemoryStore()
            return fn(sealed(self._memory_store, self.config.codecs, self.config.codec_keys), *args)
        reader = sealed(
            LmdbStore(self.config.data_dir, read_only=True),
            self.config.codecs,
            self.config.codec_keys,
        )
        try:
            return fn(reader, *args)
        finally:
            reader.close()

    # -- helpers ---------------------------------------------------------------------------

    def _require_core(self, new_work: bool = False) -> Core:
        core = self._core
        if core is None:
            raise EngineNotRunning(
                "the engine is not running: use `with engine:` or call engine.start() first"
            )
        if new_work and self._stopping:
            raise EngineNotRunning(
                "the engine is stopping (its steps in flight are draining): it takes no new "
                "work; retry against an engine that runs"
            )
        if self._failure is not None:
            raise StoreError(f"the engine halted after a store failure: {self._failure}")
        full = self._full
        if new_work and full is not None:
            raise StoreFull(
                f"{full}; the engine refuses new work until space returns (what it holds is "
                "kept and committed then)"
            )
        return core

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
                core.admission.set_limit(wid, c.spec.concurrency, c.spec.rate_limit)
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

    def _definition_ops(
        self, compiled: Any, older: dict[str, dict[int, Any]] | None = None
    ) -> list[Op]:
        """The definition and plan records a start writes.

        One definition record per id (the newest version's, listing the versions defined),
        and each graph workflow's structure, every version's, under its shape.
        """
        from actorflow.runtime._plans import plan_ops

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

    def _on_run_finished(self, run_id: str, workflow: str) -> None:
        core = self._core
        if core is None:
            return
        core.waiters.resolve(run_id)
        if core.blobs is not None:
            core.blobs.run_ended(run_id)
        _activate(core, core.admission.release(workflow, run_id))
        background = self._background
        if background is not None:
            background.run_finished(run_id, workflow)

    def _engine_timer(self, name: str, due: float) -> None:
        background = self._background
        if background is not None:
            background.on_timer(name, due)

    def _on_store_full(self, exc: BaseException | None) -> None:
        self._full = exc

    def _on_store_failure(self, exc: BaseException) -> None:
        self._failure = exc
        core = self._core
        if core is not None:
            core.waiters.fail_all(StoreError(f"the engine halted after a store failure: {exc}"))

    def _open_store(self, lock_fd: int | None = None) -> Store:
        """The store, opened for writing (``lock_fd``: its lock, already held; see LmdbStore)."""
        if self._custom_store is not None:
            return self._custom_store
        cfg = self.config
        if cfg.store == "memory":
            if self._memory_store is None:
                self._memory_store = MemoryStore()
            return sealed(self._memory_store, cfg.codecs, cfg.codec_keys)
        store = LmdbStore(
            cfg.data_dir,
            durability=cfg.durability,
            map_size=cfg.map_size,
            max_map_size=cfg.max_map_size,
            recreate=cfg.recreate_store,
            lock_fd=lock_fd,
        )
        return sealed(store, cfg.codecs, cfg.codec_keys)

    def _release_store(self, store: Store) -> None:
        # The in-memory store (and a store the caller passed in) outlive a stop, so that a
        # restarted engine sees the same data; an LMDB store is closed.
        if isinstance(getattr(store, "inner", store), LmdbStore):
            store.close()

    def _store_label(self) -> str:
        if self._custom_store is not None:
            return type(self._custom_store).__name__
        if self.config.store == "memory":
            return "in memory"
        return f"{self.config.data_dir} ({self.config.durability})"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Engine {state}, store {self._store_label()}>"


#: Seconds ``health()`` waits for an actor's answer, and the timer lag it tolerates.
_HEALTH_WAIT = 2.0
_MAX_LAG = 5.0


def _all(waits: list[Promise[Any]], value: Any) -> Promise[Any]:
    """A promise that completes with ``value`` once every one of ``waits`` succeeded."""
    countdown = Countdown(len(waits))

    def done(fut: Promise[Any]) -> None:
        exc = fut.exception()
        if exc is not None:
            countdown.set_exception(exc)
        else:
            countdown.set_result(None)

    for fut in waits:
        fut.add_done_callback(done)
    return then(countdown.promise, value)


def _check_part(value: Any, what: str, limit: int) -> None:
    """Refuse a client's string that would become part of a store key (see store/_keys.py)."""
    problem = K.part_problem(value, what, limit)
    if problem is not None:
        raise ClientError(problem)


def _submit(core: Core, ops: list[Op], then: Callable[[], Any], on_error: Any) -> None:
    assert core.writer is not None
    core.writer.tell(Write(ops, then=(then,), on_error=on_error))


def _breakers(core: Core) -> list[Any]:
    """The circuit breakers of the engine's workflows' steps (each once)."""
    found: dict[int, Any] = dict(core.breakers)
    for compiled in core.workflows.values():
        for service in compiled.spec.services:
            for breaker in service.service.breakers.values():
                found[id(breaker)] = breaker
        if compiled.code:
            continue
        for step in compiled.spec.steps:
            if step.breaker is not None:
                found[id(step.breaker)] = step.breaker
    return list(found.values())


def _unmapped(core: Core) -> None:
    """Segments were unlinked: the dispatcher tells the workers to drop their mappings."""
    dispatcher = core.dispatcher
    if dispatcher is not None:
        try:
            dispatcher.tell(Unmapped())
        except pykka.ActorDeadError:
            pass


def _activate(core: Core, run_ids: list[str]) -> None:
    """Start queued runs that were just admitted."""
    for run_id in run_ids:
        try:
            core.route(run_id).tell(ActivateRun(run_id))
        except pykka.ActorDeadError:
            pass  # stopping: the queued run is admitted again at the next start


def _every(compiled: Iterable[Any], older: dict[str, dict[int, Any]]) -> list[Any]:
    """The compiled workflows and every older version of them, each once."""
    out = list(compiled)
    seen = {id(c) for c in out}
    out += [c for vs in older.values() for c in vs.values() if id(c) not in seen]
    return out
