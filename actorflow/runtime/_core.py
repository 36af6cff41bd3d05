"""What the engine's actors share: config, store, clock, compiled workflows and actor refs.

The core holds no mutable run state of its own; the supervisors own that. The two concurrent
structures here (:class:`Waiters`, :class:`Admission`) are small lock-protected registries
that client threads and actors both touch, off the hot path.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pykka

from actorflow._clock import Clock
from actorflow._types import new_run_id
from actorflow.config import EngineConfig
from actorflow.definition._spec import WorkflowSpec
from actorflow.graph._codes import K_ACTION, K_BATCH, K_FOR_EACH, K_STEP, K_WHILE
from actorflow.graph._plan import Plan
from actorflow.runtime._promise import Promise
from actorflow.store import _keys as K
from actorflow.store._protocol import Store

__all__ = ["Admission", "Compiled", "Core", "Waiters"]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A workflow ready to run: its spec, its plan, and the plan in the evaluator's form."""

    spec: WorkflowSpec
    plan: Plan
    prepared: Any
    #: Per scope, its while / for_each / batch nodes (the only nodes with state of their own).
    loops_in: tuple[tuple[int, ...], ...] = ()
    #: Per node, True for a step directly in a for_each / batch body: its new attempts may
    #: travel to the pool in chunks of many items (see ``Supervisor.flush``).
    chunkable: tuple[bool, ...] = ()

    @classmethod
    def of(cls, spec: WorkflowSpec, plan: Plan, prepared: Any) -> Compiled:
        """Everything the supervisors need about a workflow, computed once."""
        loops: list[list[int]] = [[] for _ in range(plan.scopes)]
        for node, kind in enumerate(plan.kind):
            if kind in (K_WHILE, K_FOR_EACH, K_BATCH):
                loops[plan.scope[node]].append(node)
        owner = plan.scope_owner
        chunkable = tuple(
            kind in (K_STEP, K_ACTION)
            and owner[plan.scope[node]] >= 0
            and plan.kind[owner[plan.scope[node]]] in (K_FOR_EACH, K_BATCH)
            for node, kind in enumerate(plan.kind)
        )
        return cls(spec, plan, prepared, tuple(tuple(x) for x in loops), chunkable)


class Waiters:
    """Futures of clients waiting for runs to finish, resolved after the final write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, Promise[None]] = {}

    def watch(self, run_id: str) -> Promise[None]:
        """Return the future completed when ``run_id`` finishes (shared by all waiters)."""
        with self._lock:
            fut = self._futures.get(run_id)
            if fut is None:
                fut = self._futures[run_id] = Promise()
            return fut

    def resolve(self, run_id: str) -> None:
        """The run's final state is durable: wake its waiters."""
        with self._lock:
            fut = self._futures.pop(run_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        """The engine cannot go on: wake every waiter with ``exc``."""
        with self._lock:
            futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(exc)


class Admission:
    """Per-workflow concurrency limits: which runs may be active, which wait in line."""

    def __init__(self, limits: dict[str, int | None]) -> None:
        self._lock = threading.Lock()
        self._limits = dict(limits)
        self._active: dict[str, set[str]] = {}
        self._queued: dict[str, deque[str]] = {}

    def set_limit(self, workflow: str, limit: int | None) -> None:
        """Record a workflow's limit (None: unlimited)."""
        with self._lock:
            self._limits[workflow] = limit

    def try_acquire(self, workflow: str, run_id: str) -> bool:
        """Admit a new run now (True), or queue it behind earlier ones (False)."""
        with self._lock:
            limit = self._limits.get(workflow)
            if limit is None:
                return True
            active = self._active.setdefault(workflow, set())
            queue = self._queued.setdefault(workflow, deque())
            if len(active) < limit and not queue:
                active.add(run_id)
                return True
            queue.append(run_id)
            return False

    def adopt(self, workflow: str, run_id: str) -> None:
        """Count a recovered running run against its workflow's limit."""
        with self._lock:
            if self._limits.get(workflow) is not None:
                self._active.setdefault(workflow, set()).add(run_id)

    def release(self, workflow: str, run_id: str) -> str | None:
        """A run finished: free its slot and return the queued run admitted in its place."""
        with self._lock:
            if self._limits.get(workflow) is None:
                return None
            active = self._active.setdefault(workflow, set())
            queue = self._queued.setdefault(workflow, deque())
            if run_id in active:
                active.discard(run_id)
            else:
                try:
                    queue.remove(run_id)  # a queued run was cancelled
                except ValueError:
                    pass
                return None
            if queue and len(active) < (self._limits[workflow] or 0):
                nxt = queue.popleft()
                active.add(nxt)
                return nxt
            return None


@dataclass
class Core:
    """Shared by the engine's actors; built by :class:`~actorflow.Engine` at start."""

    config: EngineConfig
    store: Store
    clock: Clock
    evaluator: ModuleType
    workflows: dict[str, Compiled]
    waiters: Waiters
    admission: Admission
    on_run_finished: Callable[[str, str], Any]
    rng: random.Random = field(default_factory=random.Random)
    #: Recent seconds per call by function key, kept by the dispatcher (its only writer) and
    #: read by supervisors to size chunks of tiny tasks. Plain dict reads are atomic.
    costs: dict[str, float] = field(default_factory=dict)
    _idem_lock: threading.Lock = field(default_factory=threading.Lock)
    _idem_pending: dict[tuple[str, str], tuple[str, Promise[None]]] = field(default_factory=dict)
    shards: list[pykka.ActorRef[Any]] = field(default_factory=list)
    writer: pykka.ActorRef[Any] | None = None
    dispatcher: pykka.ActorRef[Any] | None = None
    scheduler: pykka.ActorRef[Any] | None = None

    def route(self, run_id: str) -> pykka.ActorRef[Any]:
        """The shard that owns ``run_id`` (stable: a hash of the id's random part)."""
        shards = self.shards
        if len(shards) == 1:
            return shards[0]
        try:
            h = int(run_id[-6:], 16)
        except ValueError:  # not an id this engine made; any stable choice will do
            h = sum(run_id.encode())
        return shards[h % len(shards)]

    # -- starting runs (triggers and child runs) -------------------------------------------

    def submit(
        self,
        workflow: str,
        payload: bytes,
        idempotency_key: str | None,
        parent: tuple[str, str] | None = None,
    ) -> tuple[str, Promise[None]]:
        """Start a run (once per idempotency key); the promise completes when it is durable."""
        from actorflow.runtime._messages import StartRun

        if idempotency_key is None:
            new_id = str(new_run_id())
            fut: Promise[None] = Promise()
            self.route(new_id).tell(StartRun(new_id, workflow, payload, None, fut, parent))
            return new_id, fut
        run_id, fut, fresh = self._reserve(workflow, idempotency_key)
        if fresh:
            self.route(run_id).tell(
                StartRun(run_id, workflow, payload, idempotency_key, fut, parent)
            )
        return run_id, fut

    def child_run_id(self, workflow: str, key: str) -> str:
        """The id of the child run with this idempotency key: existing, or reserved now."""
        return self._reserve(workflow, key)[0]

    def start_child(
        self, run_id: str, workflow: str, payload: bytes, key: str, parent: tuple[str, str]
    ) -> None:
        """Start a child run reserved by :meth:`child_run_id` (a no-op if it exists)."""
        from actorflow.runtime._messages import StartRun

        with self._idem_lock:
            pending = self._idem_pending.get((workflow, key))
        fut = pending[1] if pending is not None and pending[0] == run_id else Promise()
        self.route(run_id).tell(StartRun(run_id, workflow, payload, key, fut, parent))

    def _reserve(self, workflow: str, key: str) -> tuple[str, Promise[None], bool]:
        slot = (workflow, key)
        with self._idem_lock:
            existing = self.store.get(K.IDEMPOTENCY, K.idempotency_key(workflow, key))
            if existing is not None:
                done: Promise[None] = Promise()
                done.set_result(None)
                return str(existing.decode()), done, False
            pending = self._idem_pending.get(slot)
            if pending is not None:
                return pending[0], pending[1], False
            fresh = str(new_run_id())
            fut: Promise[None] = Promise()
            self._idem_pending[slot] = (fresh, fut)

        def forget(_: Promise[None]) -> None:
            with self._idem_lock:
                self._idem_pending.pop(slot, None)

        fut.add_done_callback(forget)
        return fresh, fut, True
