"""Runs started by published events: ``wf.on_event("order.created", key=fn)``, as cronflow's.

Data flow. ``engine.publish(event, payload, key=)`` (and ``POST /api/events/{event}``) goes to
:func:`~actorflow.runtime.supervision._external.publish`, which first asks :func:`plan` for
the runs the event starts: one per workflow (its newest version) with an ``on_event``
trigger for this name. Each run's idempotency key is ``event/<name>/<identity>``, where the
identity is the trigger's ``key(payload)``, else the publish's ``key``, else the event's own
id; so an event published again (a caller's retry after a crash, or the same order created
twice) starts nothing more. Everything that can fail (a key function that raises or
returns no string, a payload that cannot be stored) fails in :func:`plan`, before anything
is written. Then the event is recorded (delivered to waiting steps, or kept), and
:func:`start` sends the runs; the publish returns once the event and every run are durable.

Why idempotency keys and not a record of its own: a run's key is written in the run's own
commit, so "this event started this run" is as durable as the run, recovery needs nothing
more, and the key is what the rest of the engine already dedupes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from actorflow.errors import ClientError
from actorflow.runtime._core import Core
from actorflow.runtime.kernel._promise import Promise
from actorflow.store._codec import encode_value

__all__ = ["plan", "start", "subscribers"]

#: Longest idempotency key the engine accepts (``engine/_base.py``); longer ones are hashed.
_MAX_KEY = 1024


def subscribers(core: Core) -> Mapping[str, list[tuple[str, Any]]]:
    """Event name -> (workflow id, its trigger) for every ``on_event`` trigger defined.

    Built once per set of definitions: ``core.workflows`` is replaced, never changed in
    place, when a workflow is defined late, so its identity says when to build again.
    """
    workflows = core.workflows
    cached = core.event_triggers
    if cached is not None and cached[0] is workflows:
        return cached[1]
    out: dict[str, list[tuple[str, Any]]] = {}
    for wid, compiled in workflows.items():
        for trigger in getattr(compiled.spec, "events", ()):
            out.setdefault(trigger.event, []).append((wid, trigger))
    core.event_triggers = (workflows, out)
    return out


def _identity(wid: str, trigger: Any, payload: Any, key: str | None) -> str | None:
    if trigger.key is None:
        return key
    where = f"on_event({trigger.event!r}) of workflow {wid!r}: key"
    try:
        value = trigger.key(payload)
    except Exception as exc:
        raise ClientError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ClientError(f"{where}: expected a non-empty string (or an integer), got {value!r}")
    return str(value)


def plan(
    core: Core, event: str, payload: Any, key: str | None
) -> list[tuple[str, str | None, bytes]]:
    """The runs ``event`` starts: (workflow, identity or None for the event id, payload).

    Raises:
        ClientError: a trigger's key function raised or returned no string.
        InvalidPayload: the payload cannot be a run's payload.
    """
    out = []
    for wid, trigger in subscribers(core).get(event, ()):
        identity = _identity(wid, trigger, payload, key)
        code = core.workflows[wid].code
        data = encode_value([payload] if code else payload, "payload", core.sink)
        out.append((wid, identity, data))
    return out


def start(
    core: Core, event: str, planned: list[tuple[str, str | None, bytes]], event_id: str
) -> list[Promise[None]]:
    """Start the planned runs (once per identity); a promise per run, done when durable."""
    waits = []
    for wid, identity, data in planned:
        idem = f"event/{event}/{identity if identity is not None else event_id}"
        if len(idem.encode()) > _MAX_KEY:
            idem = "event/" + hashlib.sha256(idem.encode()).hexdigest()
        _, fut = core.submit(wid, data, idem)
        waits.append(fut)
    return waits
