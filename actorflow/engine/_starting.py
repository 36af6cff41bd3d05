"""Starting the engine: open (or follow) the store, start the actors, recover runs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

import pykka

from actorflow._types import RunStatus
from actorflow.engine._sharing import claims, fingerprints, open_or_follow, serve_followers
from actorflow.errors import (
    PoolUnavailable,
    RunNotFound,
)
from actorflow.graph import check_subflow_cycles, evaluator
from actorflow.runtime._admission import Admission
from actorflow.runtime._core import CodeCompiled, Compiled, Core, Waiters
from actorflow.runtime.kernel._inbox import counting
from actorflow.runtime.kernel._messages import (
    ActivateRun,
    Drain,
    Flush,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.supervision._external import (
    EngineHost,
)
from actorflow.runtime.supervision._waits import EventHub
from actorflow.store import _keys as K
from actorflow.store._protocol import Op, Store, blob_token, ensure_format
from actorflow.views import (
    read_run,
)

if TYPE_CHECKING:
    from actorflow.runtime.blobs._manager import BlobManager

from actorflow.engine._base import (
    _activate,
    _breakers,
    _every,
    _submit,
    _unmapped,
    log,
)
from actorflow.engine._registry import Registry

__all__ = ["Starting"]


class Starting(Registry):
    """Start-up and recovery (see the engine package)."""

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
            store = open_or_follow(self._facade, compiled)
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
        from actorflow.runtime.persistence._state import StateStore

        blobs: BlobManager | None = None
        try:
            ensure_format(store)
            blobs = self._blob_manager(store)
            from actorflow.runtime.supervision._plans import previous_plan_ops

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
                admission=_admission(compiled, self.clock),
                on_run_finished=self._on_run_finished,
            )
            core.events = EventHub(store, self.clock.now)
            core.events.load()
            core.state = StateStore(store, self.clock, functools.partial(_submit, core))
            core.host = EngineHost(core)
            core.blobs = blobs
            # Steps run through these: in the pool's workers (pickled), inline here.
            from actorflow.workers._interceptors import TracingInterceptor

            tracing = (TracingInterceptor(),) if self.config.tracing else ()
            core.interceptors = tracing + self._interceptors
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
            serve_followers(self._facade)
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
            claims.release(self._facade)
            raise
        log.info(
            "engine started%s: %d workflows, %d workers, store %s",
            " as the leader" if self._server is not None else "",
            len(compiled),
            self.config.worker_count,
            self._store_label(),
        )

    def _fingerprints(self) -> dict[str, str]:
        core = self._core
        return fingerprints(core.workflows if core is not None else self._followed)

    def _finished(self, run_id: str) -> bool:
        """The run is over (or unknown: a wait for it would never end)."""
        try:
            return RunStatus(self._read(read_run, run_id)["status"]).terminal
        except RunNotFound:
            return True

    def _blob_manager(self, store: Store) -> BlobManager:
        """The large-value manager, after saving what a killed engine left in segments."""
        from actorflow.runtime.blobs._manager import BlobManager

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
        from actorflow.runtime.dispatch._dispatcher import Dispatcher
        from actorflow.runtime.persistence._scheduler import Scheduler
        from actorflow.runtime.persistence._writer import StoreWriter
        from actorflow.runtime.supervision._shard import Shard

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
        dispatcher = Dispatcher.start(
            cfg, core.route, core.store, ready, core, self._executor.transport
        )
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
        from actorflow.runtime.supervision._plans import hold_ops, unavailable

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
                elif core.admission.try_acquire(workflow, run_id, rec.get("priority", 0)):
                    core.route(run_id).tell(ActivateRun(run_id))
                    queued += 1
        from actorflow.runtime.persistence._scheduler import stored_timers

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
        from actorflow.runtime.dispatch._dispatcher import Dispatcher
        from actorflow.runtime.persistence._scheduler import Scheduler
        from actorflow.runtime.persistence._writer import StoreWriter
        from actorflow.runtime.supervision._shard import Shard

        # Dispatcher first (no more results), writer last (it commits what the others sent).
        rank: list[tuple[type, ...]] = [
            (Dispatcher,),
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


def _admission(compiled: dict[str, Compiled | CodeCompiled], clock: Any) -> Admission:
    """The limits of every workflow: its own, or its queue's."""
    admission = Admission({}, {}, clock)
    for wid, c in compiled.items():
        admission.set_limit(wid, c.spec.concurrency, c.spec.rate_limit, c.spec.queue)
    return admission
