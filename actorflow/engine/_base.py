"""What every part of the engine facade shares: its state, the store it reads, the core it needs.

The facade is one class, ``Engine``, built as a chain of parts, one module each, each
using only the parts below it: ``EngineBase`` (this module: the state made in
``__init__``, reading the store, the running core) <- ``Registry`` (definitions and
versions) <- ``Starting`` (start, lead, recover) <- ``Stopping`` (stop, drain, signals)
<- ``Runs`` (trigger, retry, cancel, prune) <- ``Events`` (events, approvals, signals,
queries, updates, state) <- ``Reading`` (inspect, runs, statistics, health, metrics, the
ASGI app) <- ``Scheduling`` (pause, resume and trigger schedules) <- ``Engine``. Users see
``Engine`` only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka

from actorflow._clock import Clock, SystemClock
from actorflow.code._definition import CodeWorkflow
from actorflow.config import EngineConfig
from actorflow.definition._builder import Workflow
from actorflow.errors import (
    ClientError,
    EngineNotRunning,
    StoreError,
    StoreFull,
)
from actorflow.runtime._core import CodeCompiled, Compiled, Core
from actorflow.runtime.kernel._inbox import Activity
from actorflow.runtime.kernel._lifecycle import (
    Lifecycle,
)
from actorflow.runtime.kernel._messages import (
    ActivateRun,
    Unmapped,
    Write,
)
from actorflow.runtime.kernel._promise import Countdown, Promise, then
from actorflow.runtime.supervision._external import state_call
from actorflow.store import _keys as K
from actorflow.store._lmdb import LmdbStore
from actorflow.store._memory import MemoryStore
from actorflow.store._protocol import Op, Store
from actorflow.store._sealing import sealed
from actorflow.workers._state import State

if TYPE_CHECKING:
    from actorflow.engine._background import Background
    from actorflow.engine._engine import Engine
    from actorflow.engine._follower import Follower
    from actorflow.engine._leader import LeaderServer
    from actorflow.runtime.dispatch._executors import Executor


__all__ = ["EngineBase"]


T = TypeVar("T")

log = logging.getLogger("actorflow.engine")

#: Bytes; keys longer than the store's MAX_USER_KEY are stored as their SHA-256.
_MAX_IDEMPOTENCY_KEY = 1024

#: ``retry(payload=)`` not given: the old run's payload (None is a payload of its own).
_SAME: Any = type("_Same", (), {"__repr__": lambda self: "<the old payload>"})()


class EngineBase:
    """The engine's state and the helpers every part uses (see the module docstring)."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        store: str | Store | None = None,
        clock: Clock | None = None,
        config: EngineConfig | None = None,
        executor: Executor | str | None = None,
        **settings: Any,
    ) -> None:
        # Imported here: the transports load with the first engine, not with the package.
        from actorflow.runtime.dispatch._executors import executor_from

        self._executor: Executor = executor_from(executor)
        # Set by the test harness (actorflow.testing) before start: count work in flight.
        self._activity: Activity | None = None
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
        from actorflow.workers._interceptors import resolve

        #: The interceptors, resolved from ``config.interceptors`` (ConfigError if one is not).
        self._interceptors = resolve(config.interceptors)
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

    def _state_backend(self, op: str, scope: str, args: tuple[Any, ...]) -> Any:
        follower = self._follower
        if follower is not None:
            return follower.request("state", op, scope, args).result()
        return state_call(self._require_core(), op, scope, args)

    @property
    def _facade(self) -> Engine:
        """This engine, typed as the facade.

        The parts of the facade are one object, an ``Engine``; a part passes itself to what
        takes an engine (a run handle, the HTTP app, the data_dir claims) through this.
        """
        return cast("Engine", self)

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

    def _through(self, method: str, call: Any, last: Callable[[Any], Any]) -> Any:
        """``call`` through the engine's interceptors' ``method``, then ``last``."""
        from actorflow.workers._interceptors import through

        return through(self._interceptors, method, call, last)

    def _offload(self, fn: Callable[..., Any], *args: Any) -> Promise[Any]:
        """Run ``fn(*args)`` off the event loop (see runtime/kernel/_offload.py)."""
        from actorflow.runtime.kernel._offload import shared

        return shared()(fn, *args)

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A follower's blocking call, run by the leader."""
        follower = self._follower
        assert follower is not None
        return follower.request("call", method, args, kwargs).result()

    def _on_store_full(self, exc: BaseException | None) -> None:
        self._full = exc

    def _on_store_failure(self, exc: BaseException) -> None:
        self._failure = exc
        core = self._core
        if core is not None:
            core.waiters.fail_all(StoreError(f"the engine halted after a store failure: {exc}"))


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


def _activate(core: Core, admitted: list[tuple[str, float]]) -> None:
    """Start queued runs that were just admitted (each with the time it was admitted)."""
    for run_id, at in admitted:
        try:
            core.route(run_id).tell(ActivateRun(run_id, at))
        except pykka.ActorDeadError:
            pass  # stopping: the queued run is admitted again at the next start


def _every(compiled: Iterable[Any], older: dict[str, dict[int, Any]]) -> list[Any]:
    """The compiled workflows and every older version of them, each once."""
    out = list(compiled)
    seen = {id(c) for c in out}
    out += [c for vs in older.values() for c in vs.values() if id(c) not in seen]
    return out
