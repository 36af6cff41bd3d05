"""A run's outcome on the wire: the long-poll ``GET /api/runs/{run_id}/result?wait=SECONDS``.

Both halves of the REST API use this module: the route (``_http.py``) turns what
``RunHandle.result_async`` returned or raised into JSON, and ``af.Client`` turns that JSON back
into the value or the exception ``RunHandle.result`` would have given. It imports neither
Starlette nor httpx.

The answer is ``200`` with::

    {"run_id": "...", "workflow": "...", "status": "running", "finished": false}
    {"run_id": "...", "workflow": "...", "status": "completed", "finished": true,
     "result": <the run's result>}
    {"run_id": "...", "workflow": "...", "status": "failed", "finished": true,
     "error": {"type": "StepFailed", "message": "step 'charge' failed on attempt 3: ...",
               "step": "charge", "attempt": 3, "error_type": "builtins.ValueError",
               "error_message": "card declined", "traceback": "...",
               "user_traceback": "...",
               "cause": {"type": "builtins.ValueError", "message": "card declined"}}}

``status`` is the run's (for a run that continued as new, the last run of its chain);
``finished`` is true once it is completed, failed or cancelled. ``result`` is the run's result
as JSON (a value JSON cannot carry, such as a pickled object, is sent as its ``str()``).
``error`` names, in ``type``, the class of :mod:`actorflow.errors` that ``result()`` raises
(``StepFailed``, ``StepTimeout``, ``WorkerCrashed``, ``RunCancelled``, ``RunTimeout``,
``WorkflowFailed``...), its ``message``, those of its attributes listed in :data:`FIELDS` that
it has (``step``, ``attempt``, ``reason``, ``timeout``...), and in ``cause`` the exception it was
raised from (a failed step's own exception: its qualified type and message).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from actorflow import errors
from actorflow.errors import (
    ActorflowError,
    ClientError,
    RemoteError,
    RemoteTraceback,
    ResultTimeout,
    RunCancelled,
    RunError,
    StoreError,
)

if TYPE_CHECKING:
    from actorflow.engine._handle import RunHandle

__all__ = ["FIELDS", "MAX_WAIT", "error_from_json", "error_json", "outcome", "parse_wait"]

#: The longest ``wait`` a request may ask for, in seconds: below the idle timeouts of common
#: proxies and load balancers (60 s), so a waiting request is not cut off on the way.
MAX_WAIT: Final = 60.0

#: The attributes of the run errors sent with them (each documented on its class).
FIELDS: Final = (
    "step",
    "attempt",
    "error_type",
    "error_message",
    "traceback",
    "user_traceback",
    "reason",
    "timeout",
    "heartbeat_timeout",
    "exitcode",
    "signal_name",
    "limit",
    "depth",
    "chain",
    "position",
    "expected",
    "actual",
)


def parse_wait(raw: str | None) -> float:
    """The ``wait`` query parameter in seconds (absent: 0, answer at once).

    Raises:
        ClientError: not a number of seconds from 0 to :data:`MAX_WAIT` (the route's 400).
    """
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not 0.0 <= wait <= MAX_WAIT:  # NaN fails too
        raise ClientError(f"wait: expected seconds from 0 to {MAX_WAIT:g}, got {raw!r}")
    return wait


async def outcome(handle: RunHandle, wait: float) -> dict[str, Any]:
    """Wait up to ``wait`` seconds for the run to finish; its outcome as the route answers it.

    Raises:
        RunNotFound, EngineNotRunning, StoreError: as ``RunHandle.result_async`` does (the
            route's 404, 503 and 500).
    """
    import asyncio

    head = {"run_id": handle.id, "workflow": handle.workflow_id}
    try:
        value = await handle.result_async(timeout=wait)
    except ResultTimeout:
        status = await asyncio.to_thread(handle.status)  # a store read: off the loop
        return {**head, "status": status.value, "finished": False}
    except (ClientError, StoreError):
        raise  # not the run's outcome: the request's error
    except ActorflowError as exc:
        done = "cancelled" if isinstance(exc, RunCancelled) else "failed"
        return {**head, "status": done, "finished": True, "error": error_json(exc)}
    return {**head, "status": "completed", "finished": True, "result": value}


def error_json(exc: BaseException) -> dict[str, Any]:
    """A run's error as the route sends it (see the module docstring)."""
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for name in FIELDS:
        value = getattr(exc, name, None)
        if value is not None and _plain(value):
            out[name] = list(value) if isinstance(value, tuple) else value
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, RemoteTraceback):
        if isinstance(cause, RemoteError):
            kind, _, message = str(cause).partition(": ")
            out["cause"] = {"type": cause.type_name, "message": message or kind}
        else:
            cls = type(cause)
            out["cause"] = {"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(cause)}
    return out


def _plain(value: Any) -> bool:
    if isinstance(value, str | int | float | bool):
        return True
    return isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value)


def error_from_json(data: Any, run_id: str | None = None) -> ActorflowError:
    """The exception ``RunHandle.result()`` raises, rebuilt from :func:`error_json`'s JSON.

    Its class is the one named in ``type`` (a class of :mod:`actorflow.errors`; another name
    gives a :class:`RunError`), with the attributes sent and the same message. The failed
    step's own exception cannot be rebuilt on this side: a :class:`RemoteError` with its type
    and message stands in for it as the ``__cause__`` (with the worker's traceback as its own
    ``__cause__``, a :class:`RemoteTraceback`, when there is one).
    """
    if not isinstance(data, dict):
        data = {}
    name = str(data.get("type", ""))
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, ActorflowError)):
        cls = RunError
    exc = cls.__new__(cls)
    exc.__dict__.update({k: data[k] for k in FIELDS if k in data})
    if isinstance(exc.__dict__.get("chain"), list):
        exc.__dict__["chain"] = tuple(exc.__dict__["chain"])
    if "traceback" in exc.__dict__:  # (a server of an older version sends no user_traceback)
        exc.__dict__.setdefault("user_traceback", exc.__dict__["traceback"])
    exc.__dict__["run_id"] = run_id
    Exception.__init__(exc, str(data.get("message", "")))
    cause = data.get("cause")
    if isinstance(cause, dict):
        stand_in = RemoteError(str(cause.get("type", "Exception")), str(cause.get("message", "")))
        traceback = data.get("traceback")
        if isinstance(traceback, str) and traceback:
            user = data.get("user_traceback")
            stand_in.__cause__ = RemoteTraceback(traceback, user if isinstance(user, str) else "")
        exc.__cause__ = stand_in
    return exc
