"""Waits on the outside world: published events and human approvals.

A ``wait_for_event`` or ``human_in_the_loop`` node is a leaf that no worker runs: like a sleep,
its run is passivated while it waits and reloaded when something arrives.

**Events.** :class:`EventHub` keeps, under one lock, which steps wait for which event (and
key) and which keyed events were published before anyone waited. ``engine.publish`` records,
in one write, the event in the inbox of every step waiting for it (or, if it has a key and no
step with that key waits, in the buffer with a time-to-live); only once that write is durable
are the runs told. A step consumes an inbox entry or a buffered event in the same write that
records its output, so an acknowledged event is never lost and never taken twice by one step.
Registrations and buffer changes happen under the hub's lock and are handed to the store writer
in order, so a publish and a wait that start at the same moment cannot miss each other.

**Approvals.** Reaching the node records an approval under an unguessable token (``approvals``
db), then calls ``on_pause(token, ctx)``. ``engine.resume(token, payload)`` checks the token,
and the run's supervisor completes the node with the payload and marks the token used in the
same write; a second resume, or one after the timeout, is refused with a clear error.
"""

from __future__ import annotations

import logging
import secrets
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorflow._types import StepStatus, new_run_id
from actorflow.definition._spec import WaitSpec
from actorflow.errors import ClientError
from actorflow.graph._codes import C_SLEEP
from actorflow.runtime.kernel._messages import ErrorInfo, EventDelivered, ResumeApproval
from actorflow.runtime.supervision._nodes import call_user, error_info
from actorflow.store import _keys as K
from actorflow.store._codec import describe_value, encode_value
from actorflow.store._protocol import Op, Store
from actorflow.store._records import dump_record, load_record

if TYPE_CHECKING:
    from actorflow.runtime.supervision._graph import Supervisor
    from actorflow.runtime.supervision._graph_state import GraphState
    from actorflow.runtime.supervision._steps import Leaf

__all__ = [
    "EventHub",
    "abort_wait",
    "find_approval",
    "on_event",
    "on_resume",
    "on_wait_timer",
    "resume_wait",
    "start_wait",
]

log = logging.getLogger("actorflow.runtime")

_EXP = struct.Struct(">Q")
_WAIT_TIMEOUT_TYPES = ("actorflow.errors.WaitTimeout", "actorflow.errors.RunError")


class EventHub:
    """Who waits for which event, and keyed events nobody has taken yet.

    Args:
        store: read at :meth:`load` (the hub's registries are rebuilt from it).
        now: the clock's ``now`` (buffer expiry).
    """

    def __init__(self, store: Store, now: Callable[[], float]) -> None:
        self._store = store
        self._now = now
        self.lock = threading.Lock()
        # event -> {(run id, path): key or None}
        self._waiters: dict[str, dict[tuple[str, str], str | None]] = {}
        # (event, key) -> [(event id, expires at, payload)], oldest first
        self._buffered: dict[tuple[str, str], list[tuple[str, float, bytes]]] = {}

    def load(self) -> None:
        """Rebuild the registries from the store (at engine start)."""
        with self.lock:
            for key, raw in self._store.scan(K.EVENTS, b"w\x00"):
                _, event, run_id, path = key.split(b"\x00", 3)
                rec = load_record(raw, "event waiter")
                self._waiters.setdefault(event.decode(), {})[(run_id.decode(), path.decode())] = (
                    rec.get("key")
                )
            for key, raw in self._store.scan(K.EVENTS, b"b\x00"):
                _, event, ekey, eid = key.split(b"\x00", 3)
                (expires_ms,) = _EXP.unpack_from(raw)
                self._buffered.setdefault((event.decode(), ekey.decode()), []).append(
                    (eid.decode(), expires_ms / 1000.0, bytes(raw[_EXP.size :]))
                )

    @property
    def waiting(self) -> int:
        """Steps waiting for an event."""
        with self.lock:
            return sum(len(w) for w in self._waiters.values())

    @property
    def buffered(self) -> int:
        """Keyed events published before anyone waited, not yet taken or expired."""
        with self.lock:
            return sum(len(b) for b in self._buffered.values())

    def publish(
        self, event: str, payload: bytes, key: str | None, ttl: float, submit: Callable[..., Any]
    ) -> tuple[str, list[tuple[str, str]]]:
        """Record an event for its waiters (or buffer it); ``submit(ops)`` hands the write on.

        Returns:
            The event id and the (run id, path) of each step it was delivered to.
        """
        eid = new_run_id()
        with self.lock:
            targets = [
                target
                for target, wkey in self._waiters.get(event, {}).items()
                if wkey is None or wkey == key
            ]
            ops: list[Op] = [
                (K.EVENTS, K.inbox_prefix(run_id, path) + eid.encode(), payload)
                for run_id, path in targets
            ]
            taken_by_key = any(self._waiters[event][t] == key for t in targets)
            if key is not None and not taken_by_key:
                expires = self._now() + ttl
                self._buffered.setdefault((event, key), []).append((eid, expires, payload))
                ops.append(
                    (
                        K.EVENTS,
                        K.buffered_prefix(event, key) + eid.encode(),
                        _EXP.pack(round(expires * 1000)) + payload,
                    )
                )
            submit(ops)  # under the lock: in the writer's queue before anything that saw it
        return eid, targets

    def register(
        self,
        event: str,
        key: str | None,
        run_id: str,
        path: str,
        take: Callable[[bytes], bool],
    ) -> tuple[list[Op], bytes | None]:
        """A step starts waiting: take a buffered event it accepts, or register it.

        Returns:
            The ops to commit with the step's record, and the payload taken (None: it waits).
        """
        now = self._now()
        with self.lock:
            if key is not None:
                queue = self._buffered.get((event, key), [])
                ops: list[Op] = []
                for i, (eid, expires, payload) in enumerate(queue):
                    if expires <= now:
                        continue
                    if take(payload):
                        del queue[i]
                        ops.append((K.EVENTS, K.buffered_prefix(event, key) + eid.encode(), None))
                        return ops, payload
            self._waiters.setdefault(event, {})[(run_id, path)] = key
        return [(K.EVENTS, K.waiter_key(event, run_id, path), dump_record({"key": key}))], None

    def unregister(self, event: str, run_id: str, path: str) -> list[Op]:
        """The step no longer waits."""
        with self.lock:
            waiters = self._waiters.get(event)
            if waiters is not None:
                waiters.pop((run_id, path), None)
                if not waiters:
                    del self._waiters[event]
        return [(K.EVENTS, K.waiter_key(event, run_id, path), None)]

    def expired(self) -> list[Op]:
        """Forget buffered events past their time to live; the ops delete them from the store."""
        now = self._now()
        ops: list[Op] = []
        with self.lock:
            for (event, key), queue in list(self._buffered.items()):
                keep = []
                for entry in queue:
                    if entry[1] <= now:
                        ops.append(
                            (K.EVENTS, K.buffered_prefix(event, key) + entry[0].encode(), None)
                        )
                    else:
                        keep.append(entry)
                if keep:
                    self._buffered[(event, key)] = keep
                else:
                    del self._buffered[(event, key)]
        return ops


# -- the supervisor's side -------------------------------------------------------------------


def start_wait(sup: Supervisor, frame: int, node: int) -> None:
    """The wait node at (frame, node) is reached (or reloaded without its record)."""
    spec = sup.plan.specs[node]
    assert isinstance(spec, WaitSpec)
    leaf = sup.leaves.get((frame, node)) or sup._leaf(frame, node)
    sup.pending[(frame, node)] = C_SLEEP
    now = sup.core.clock.now()
    leaf.status = StepStatus.RUNNING
    leaf.dispatched_at = now
    leaf.started_at = now
    leaf.attempt = 1
    leaf.wake_at = now + spec.timeout if spec.timeout is not None else None
    if spec.kind == "approval":
        _pause(sup, leaf, spec, now)
        return
    key = spec.key
    if callable(key):
        value, err = call_user(key, sup._ctx(frame, node))
        if err is not None:
            leaf.attempts.append(_attempt(leaf, "failed", now, f"key(ctx) raised: {err.message}"))
            sup._leaf_failed_for_good(leaf, err)
            return
        key = None if value is None else str(value)
        problem = None if key is None else K.part_problem(key, "key(ctx)", K.MAX_USER_KEY)
        if problem is not None:
            err = error_info(ClientError(problem))
            leaf.attempts.append(_attempt(leaf, "failed", now, problem))
            sup._leaf_failed_for_good(leaf, err)
            return
    leaf.wait = {"event": spec.event, "key": key}
    if _take_inbox(sup, leaf, spec):
        return
    ops, payload = sup.core.events.register(
        spec.event or "", key, sup.run_id, leaf.path, lambda p: _matches(sup, leaf, spec, p)
    )
    sup.fx.ops.extend(ops)
    if payload is not None:
        _complete(sup, leaf, payload, "event (published before the wait)")
        return
    sup.fx.ops.append(leaf.put())
    if leaf.wake_at is not None:
        sup._timer(leaf.wake_at, "wait:" + leaf.path)


def resume_wait(sup: Supervisor, frame: int, node: int) -> None:
    """After a reload: wait again (timer, registration), or take what arrived meanwhile."""
    leaf = sup.load_leaf(frame, node)
    if leaf.status != StepStatus.RUNNING or leaf.wait is None:
        start_wait(sup, frame, node)
        return
    spec = sup.plan.specs[node]
    assert isinstance(spec, WaitSpec)
    sup.pending[(frame, node)] = C_SLEEP
    if leaf.wake_at is not None:
        sup.fx.timers.append((leaf.wake_at, sup.run_id, "wait:" + leaf.path))
    if spec.kind == "event":
        if _take_inbox(sup, leaf, spec):
            return
        ops, payload = sup.core.events.register(
            spec.event or "",
            leaf.wait.get("key"),
            sup.run_id,
            leaf.path,
            lambda p: _matches(sup, leaf, spec, p),
        )
        sup.fx.ops.extend(ops)
        if payload is not None:
            _complete(sup, leaf, payload, "event (published before the wait)")


def on_event(sup: Supervisor, msg: EventDelivered) -> None:
    """An event was put in a waiting step's inbox."""
    key = sup.by_path.get(msg.path)
    if sup.finished or key is None or sup.pending.get(key) != C_SLEEP:
        return
    leaf = sup.leaves[key]
    spec = sup.plan.specs[leaf.node]
    if not isinstance(spec, WaitSpec) or spec.kind != "event" or leaf.wait is None:
        return
    ikey = K.inbox_prefix(sup.run_id, leaf.path) + msg.event_id.encode()
    payload = sup.core.store.get(K.EVENTS, ikey)
    if payload is None:
        return  # already taken (a duplicate notice)
    sup.fx.ops.append((K.EVENTS, ikey, None))
    if _matches(sup, leaf, spec, payload):
        _complete(sup, leaf, payload, "event")


def on_resume(sup: Supervisor, msg: ResumeApproval) -> str | None:
    """``engine.resume``: complete the approval; return why not, if it cannot be resumed."""
    key = sup.by_path.get(msg.path)
    leaf = sup.leaves.get(key) if key is not None else None
    if (
        sup.finished
        or leaf is None
        or key is None
        or sup.pending.get(key) != C_SLEEP
        or (leaf.wait or {}).get("token") != msg.token
    ):
        return "resolved"
    _set_approval(sup, msg.token, "resumed", msg.payload)
    _complete(sup, leaf, msg.payload, "resumed")
    return None


def on_wait_timer(sup: Supervisor, leaf: Leaf, due: float) -> None:
    """A wait's timeout fired: fail the node, or continue with its default."""
    key = (leaf.frame, leaf.node)
    if sup.pending.get(key) != C_SLEEP or leaf.wait is None or leaf.wake_at is None:
        return
    if abs(leaf.wake_at - due) > 1e-3:
        return
    spec = sup.plan.specs[leaf.node]
    assert isinstance(spec, WaitSpec)
    sup._drop_timer(due, "wait:" + leaf.path)
    _release(sup, leaf, spec, "expired")
    what = f"event {spec.event!r}" if spec.kind == "event" else f"approval {spec.name!r}"
    message = f"no {what} within {spec.timeout:g}s"
    if spec.on_timeout == "continue":
        leaf.status = StepStatus.SUCCEEDED
        leaf.ended_at = sup.core.clock.now()
        leaf.attempts.append(_attempt(leaf, "succeeded", leaf.ended_at, f"{message}: continued"))
        leaf.wait = None
        sup._succeed(leaf, encode_value(spec.default, f"default of {spec.name!r}"))
        return
    err = ErrorInfo("error", _WAIT_TIMEOUT_TYPES[0], _WAIT_TIMEOUT_TYPES, message, "", None)
    leaf.attempts.append(_attempt(leaf, "failed", sup.core.clock.now(), message))
    leaf.wait = None
    leaf.failures += 1
    sup._leaf_failed_for_good(leaf, err)


def abort_wait(sup: GraphState, leaf: Leaf) -> None:
    """The wait was stopped (its run cancelled, a race lost): forget it everywhere."""
    spec = sup.plan.specs[leaf.node]
    if not isinstance(spec, WaitSpec) or leaf.wait is None:
        return
    if leaf.wake_at is not None:
        sup._drop_timer(leaf.wake_at, "wait:" + leaf.path)
    _release(sup, leaf, spec, "cancelled")
    leaf.wait = None


# -- helpers -----------------------------------------------------------------------------------


def _pause(sup: Supervisor, leaf: Leaf, spec: WaitSpec, now: float) -> None:
    token = secrets.token_urlsafe(24)
    leaf.wait = {"token": token}
    rec = {
        "token": token,
        "run_id": sup.run_id,
        "workflow": sup.workflow_id,
        "step": leaf.path,
        "status": "waiting",
        "created_at": now,
        "expires_at": leaf.wake_at,
        "description": spec.description,
        "metadata": spec.metadata,
    }
    key = K.approval_key(token)
    sup.fx.ops.append((K.APPROVALS, key, dump_record(rec)))
    # Found by run when the run is pruned (the step record forgets its token once resolved).
    sup.fx.ops.append((K.INDEX, K.approval_index_key(sup.run_id, key), b""))
    sup.fx.ops.append(leaf.put())
    if leaf.wake_at is not None:
        sup._timer(leaf.wake_at, "wait:" + leaf.path)
    if spec.on_pause is not None:
        ctx = sup._ctx(leaf.frame, leaf.node)
        sup.fx.after.append((spec.on_pause, token, ctx))


def find_approval(store: Store, token: str) -> tuple[bytes, dict[str, Any]] | None:
    """The key and record of the approval ``token`` (None: there is none).

    Approvals are keyed by a hash of their token; stores written before that keep the
    token itself as the key, which is tried second.
    """
    for key in (K.approval_key(token), K.legacy_approval_key(token)):
        raw = store.get(K.APPROVALS, key)
        if raw is not None:
            return key, load_record(raw, "approval")
    return None


def _set_approval(sup: GraphState, token: str, status: str, payload: bytes | None = None) -> None:
    found = find_approval(sup.core.store, token)
    if found is None:
        return
    key, rec = found
    rec["status"] = status
    rec["resolved_at"] = sup.core.clock.now()
    if payload is not None:
        # What it was resumed with, as the short rendering a step's output has: the inbox
        # and the history show it without reading (or unpickling) the run's values.
        rec["payload"] = describe_value(payload)
    sup.fx.ops.append((K.APPROVALS, key, dump_record(rec)))


def _release(sup: GraphState, leaf: Leaf, spec: WaitSpec, outcome: str) -> None:
    wait = leaf.wait or {}
    if spec.kind == "approval":
        if wait.get("token"):
            _set_approval(sup, wait["token"], outcome)
    else:
        sup.fx.ops.extend(sup.core.events.unregister(spec.event or "", sup.run_id, leaf.path))


def _take_inbox(sup: Supervisor, leaf: Leaf, spec: WaitSpec) -> bool:
    """Take an event already delivered to this step (before a restart); True if one matched."""
    for ikey, payload in sup.core.store.scan(K.EVENTS, K.inbox_prefix(sup.run_id, leaf.path)):
        sup.fx.ops.append((K.EVENTS, ikey, None))
        if _matches(sup, leaf, spec, payload):
            _complete(sup, leaf, payload, "event")
            return True
    return False


def _matches(sup: Supervisor, leaf: Leaf, spec: WaitSpec, payload: bytes) -> bool:
    if spec.match is None:
        return True
    from actorflow.store._codec import decode_value

    try:
        value = decode_value(payload, f"event {spec.event!r}")
    except Exception:
        return False
    ok, err = call_user(lambda ctx: spec.match(ctx, value), sup._ctx(leaf.frame, leaf.node))  # type: ignore[misc]
    if err is not None:
        log.warning(
            "run %s: match of %r raised, so the event is ignored: %s",
            sup.run_id,
            spec.name,
            err.message,
        )
        return False
    return bool(ok)


def _complete(sup: Supervisor, leaf: Leaf, payload: bytes, how: str) -> None:
    spec = sup.plan.specs[leaf.node]
    assert isinstance(spec, WaitSpec)
    if leaf.wake_at is not None:
        sup._drop_timer(leaf.wake_at, "wait:" + leaf.path)
    if spec.kind == "event":
        sup.fx.ops.extend(sup.core.events.unregister(spec.event or "", sup.run_id, leaf.path))
    now = sup.core.clock.now()
    leaf.status = StepStatus.SUCCEEDED
    leaf.ended_at = now
    leaf.attempts.append(_attempt(leaf, "succeeded", now, None, how))
    leaf.wait = None
    sup._succeed(leaf, payload)


def _attempt(
    leaf: Leaf, status: str, now: float, error: str | None, kind: str | None = None
) -> dict[str, Any]:
    return {
        "attempt": leaf.attempt or 1,
        "status": status,
        "kind": kind,
        "started_at": leaf.dispatched_at,
        "ended_at": now,
        "error": error,
        "pid": None,
    }
