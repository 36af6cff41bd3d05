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
from actorflow.config import EngineConfig
from actorflow.definition._spec import WorkflowSpec
from actorflow.graph._plan import Plan
from actorflow.runtime._promise import Promise
from actorflow.store._protocol import Store

__all__ = ["Admission", "Compiled", "Core", "Waiters"]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A workflow ready to run: its spec and its plan."""

    spec: WorkflowSpec
    plan: Plan


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
