"""What the engine's actors share: config, store, clock, compiled workflows and actor refs.

The core holds no mutable run state of its own; the supervisors own that. The two concurrent
structures it holds (:class:`Waiters` here, :class:`~actorflow.runtime._admission.Admission`
beside it) are small lock-protected registries that client threads and actors both touch,
off the hot path.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import pykka

from actorflow._clock import Clock
from actorflow._types import new_run_id
from actorflow.config import EngineConfig
from actorflow.definition._spec import WorkflowSpec
from actorflow.errors import ClientError
from actorflow.graph._codes import K_ACTION, K_BATCH, K_FOR_EACH, K_STEP, K_WHILE
from actorflow.graph._plan import Plan
from actorflow.runtime._admission import Admission
from actorflow.runtime.kernel._costs import CostBook
from actorflow.runtime.kernel._inbox import Activity
from actorflow.runtime.kernel._lifecycle import Lifecycle
from actorflow.runtime.kernel._promise import Promise
from actorflow.store import _keys as K
from actorflow.store._protocol import Store

if TYPE_CHECKING:  # built by the layers above (the engine sets them: see Core)
    from actorflow.runtime.blobs._manager import BlobManager
    from actorflow.runtime.persistence._state import StateStore
    from actorflow.runtime.supervision._external import EngineHost
    from actorflow.runtime.supervision._waits import EventHub

__all__ = ["CodeCompiled", "Compiled", "Core", "Waiters", "run_version"]

log = logging.getLogger("actorflow.runtime")


def run_version(rec: dict[str, Any]) -> int:
    """The version of its workflow a run record says it runs (records before versions: 1)."""
    return int(rec.get("version") or 1)


@dataclass(frozen=True, slots=True)
class CodeCompiled:
    """A code workflow ready to run (``@engine.workflow``): its spec alone."""

    spec: Any
    code: bool = True


@dataclass(frozen=True, slots=True)
class Compiled:
    """A workflow ready to run: its spec, its plan, and the plan in the evaluator's form."""

    code: ClassVar[bool] = False
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
        # Item steps may travel in chunks, but not those given a queue: a chunk would
        # take one of the queue's slots for many steps.
        chunkable = tuple(
            kind in (K_STEP, K_ACTION)
            and owner[plan.scope[node]] >= 0
            and plan.kind[owner[plan.scope[node]]] in (K_FOR_EACH, K_BATCH)
            and getattr(plan.specs[node], "queue", None) is None
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
        """The run's final state is durable (or a waiter read that it is over): wake its waiters.

        Waking too many is harmless: a woken waiter reads the run again before it returns.
        """
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


@dataclass
class Core:
    """Shared by the engine's actors; built by :class:`~actorflow.Engine` at start."""

    config: EngineConfig
    store: Store
    clock: Clock
    evaluator: ModuleType
    #: The newest version of each workflow: what new runs start on.
    workflows: dict[str, Compiled | CodeCompiled]
    waiters: Waiters
    admission: Admission
    on_run_finished: Callable[[str, str], Any]
    rng: random.Random = field(default_factory=random.Random)
    #: Recent seconds per item by function key, kept by the dispatcher core (its only
    #: writer) and read by supervisors to size chunks of tiny tasks (kernel/_costs.py).
    costs: CostBook = field(default_factory=CostBook)
    _idem_lock: threading.Lock = field(default_factory=threading.Lock)
    _idem_pending: dict[tuple[str, str], tuple[str, Promise[None]]] = field(default_factory=dict)
    shards: list[pykka.ActorRef[Any]] = field(default_factory=list)
    writer: pykka.ActorRef[Any] | None = None
    dispatcher: pykka.ActorRef[Any] | None = None
    scheduler: pykka.ActorRef[Any] | None = None
    # Set by the engine right after construction, before any actor starts (each needs the
    # core, or is built beside it): typed as what they are, never None while actors run.
    #: Waiting steps and buffered events.
    events: EventHub = field(init=False)
    #: The persistent key-value state.
    state: StateStore = field(init=False)
    #: Answers ``ctx.state`` for user code run in the engine.
    host: EngineHost = field(init=False)
    #: Runs user callbacks (``on_pause``) off the actors' threads.
    callbacks: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="actorflow-callback")
    )
    _service_blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: Large values: shared-memory segments and blobs (None: an engine without them).
    blobs: BlobManager | None = None
    #: Circuit breakers met in code workflows' steps, by id (for statistics).
    breakers: dict[int, Any] = field(default_factory=dict)
    #: Callers of code workflows' updates, by (run id, update id), answered once durable.
    replies: dict[tuple[str, str], Promise[Any]] = field(default_factory=dict)
    #: Work in flight, counted under the test harness, else None.
    activity: Activity | None = None
    #: Lifecycle event subscribers.
    lifecycle: Lifecycle = field(init=False)
    #: Runs' own plans by (workflow, version, shape), or why one cannot be built (``_plans.py``).
    plans: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    #: The engine's interceptors, resolved (``workers/_interceptors.py``).
    interceptors: tuple[Any, ...] = ()
    #: (the workflows it was built from, event -> its on_event triggers): see _event_runs.
    event_triggers: tuple[Any, dict[str, list[tuple[str, Any]]]] | None = None
    #: Runs held because their plan cannot run with the code defined now: run id -> reason.
    held: dict[str, str] = field(default_factory=dict)
    #: Every version of the workflows defined in several versions: id -> version -> compiled.
    versions: dict[str, dict[int, Compiled | CodeCompiled]] = field(default_factory=dict)

    def compiled_for(self, workflow: str, version: int) -> Compiled | CodeCompiled | None:
        """The definition a run of ``version`` of ``workflow`` goes on with, or None."""
        current = self.workflows.get(workflow)
        if current is None or current.spec.version == version:
            return current
        return self.versions.get(workflow, {}).get(version)

    def version_problem(self, workflow: str, version: int) -> str | None:
        """Why a run of ``version`` of ``workflow`` cannot go on here, or None."""
        current = self.workflows.get(workflow)
        if current is None:
            return (
                f"workflow {workflow!r} is not defined on this engine; the run goes on when an "
                "engine that defines it starts"
            )
        if self.compiled_for(workflow, version) is not None:
            return None
        defined = sorted(self.versions.get(workflow, {current.spec.version: current}))
        return (
            f"version {version} of workflow {workflow!r} is not defined on this engine (it "
            f"defines {', '.join(map(str, defined))}); the run goes on when an engine that "
            "defines that version starts"
        )

    @property
    def sink(self) -> Any:
        """Where values the engine encodes put large buffers (None: shared memory is off)."""
        blobs = self.blobs
        return blobs if blobs is not None and blobs.threshold > 0 else None

    def input_for(self, workflow: str, payload: bytes) -> bytes:
        """A payload as ``workflow`` takes it: a code workflow gets it as its one argument."""
        compiled = self.workflows.get(workflow)
        if compiled is None or not compiled.code:
            return payload
        from actorflow.store._codec import decode_value, encode_value

        return encode_value([decode_value(payload, "payload")], "payload", self.sink)

    def background(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call a user callback on a helper thread; its errors are logged, never raised."""
        activity = self.activity

        def call() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("callback %s raised", getattr(fn, "__qualname__", fn))
            finally:
                if activity is not None:
                    activity.end()

        if activity is not None:
            activity.begin()  # a callback may resume the run: the engine is not idle yet
        try:
            self.callbacks.submit(call)
        except RuntimeError:
            if activity is not None:
                activity.end()  # shutting down

    def _service(self, workflow: str, service_id: str) -> Any:
        """A workflow's configured service by id: the newest version's, else an older one's.

        Why older versions too: a run goes on with its own version's steps, and a service
        that version configured is still the one its steps call after the newest dropped it.
        A worker's request names only the workflow, so the newest version's wins a clash.
        """
        newest = self.workflows.get(workflow)
        if newest is None:
            return None
        older = sorted(self.versions.get(workflow, {}).items(), reverse=True)
        for compiled in (newest, *(c for _, c in older)):
            for s in compiled.spec.services:
                if s.id == service_id:
                    return s
        return None

    def service_blob(self, workflow: str, service_id: str) -> bytes:
        """A workflow's configured service, pickled for a worker (``ctx.services``)."""
        key = (workflow, service_id)
        blob = self._service_blobs.get(key)
        if blob is None:
            found = self._service(workflow, service_id)
            if found is None:
                compiled = self.workflows.get(workflow)
                have = [s.id for s in compiled.spec.services] if compiled else []
                raise ClientError(
                    f"workflow {workflow!r} has no service {service_id!r} (it has {have}); "
                    "pass it in engine.define(..., services=[...])"
                )
            from actorflow._tracebacks import dumps_by_value  # (file names kept: tracebacks)

            blob = self._service_blobs[key] = dumps_by_value(found.with_secrets())
        return blob

    def service_breaker(self, workflow: str, arg: Any) -> bool:
        """A worker asks about a service action's breaker: ``(service, action, verb)``.

        ``verb`` is ``"allow"`` (may the call go ahead? a yes while half-open is a trial),
        ``"succeeded"`` or ``"failed"`` (the call's outcome).
        """
        service_id, action, verb = arg
        found = self._service(workflow, service_id)
        breaker = None if found is None else found.service.breakers.get(action)
        if breaker is None:
            raise ClientError(f"service {service_id!r} action {action!r} has no breaker")
        if verb == "allow":
            return bool(breaker.allow())
        if verb == "succeeded":
            breaker.succeeded()
        elif verb == "failed":
            breaker.failed()
        else:
            raise ClientError(f"breaker: unknown verb {verb!r}")
        return True

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
        run_id: str | None = None,
        priority: int = 0,
        attrs: dict[str, Any] | None = None,
        memo: dict[str, Any] | None = None,
    ) -> tuple[str, Promise[None]]:
        """Start a run (once per idempotency key); the promise completes when it is durable.

        ``run_id``: the new run's id (a follower chooses it, so that the run can be sent
        again after a leader is lost); ignored when the key names an existing run.
        ``priority``: its place among queued runs (see :class:`~actorflow.Queue`);
        ``attrs`` and ``memo``: its search attributes (checked) and memo.
        """
        from actorflow.runtime.kernel._messages import StartRun

        if idempotency_key is None:
            new_id = run_id or str(new_run_id())
            fut: Promise[None] = Promise()
            start = StartRun(
                new_id, workflow, payload, None, fut, parent, 0, priority, None, attrs, memo
            )
            self.route(new_id).tell(start)
            return new_id, fut
        run_id, fut, fresh = self._reserve(workflow, idempotency_key)
        if fresh:
            self.route(run_id).tell(
                StartRun(
                    run_id,
                    workflow,
                    payload,
                    idempotency_key,
                    fut,
                    parent,
                    0,
                    priority,
                    None,
                    attrs,
                    memo,
                )
            )
        return run_id, fut

    def child_run_id(self, workflow: str, key: str) -> str:
        """The id of the child run with this idempotency key: existing, or reserved now."""
        return self._reserve(workflow, key)[0]

    def start_child(
        self,
        run_id: str,
        workflow: str,
        payload: bytes,
        key: str,
        parent: tuple[str, str],
        depth: int,
    ) -> None:
        """Start a child run reserved by :meth:`child_run_id` (a no-op if it exists)."""
        from actorflow.runtime.kernel._messages import StartRun

        with self._idem_lock:
            pending = self._idem_pending.get((workflow, key))
        fut = pending[1] if pending is not None and pending[0] == run_id else Promise()
        self.route(run_id).tell(StartRun(run_id, workflow, payload, key, fut, parent, depth))

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
