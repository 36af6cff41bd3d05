"""Each operation of the client as a :class:`Call` to send, and its answer decoded.

The sync and async clients and the remote run handle share these, so that each operation is
written once: they differ only in how they send (``Transport.send`` or ``asend``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import orjson

from actorflow._types import RunStatus, StepStatus
from actorflow.client._transport import Call, Reply, quoted
from actorflow.errors import (
    ClientError,
    InvalidPayload,
    ResultTimeout,
    RunNotFound,
    WorkflowNotFound,
)
from actorflow.triggers._results import MAX_WAIT, error_from_json
from actorflow.views import (
    AttemptDetails,
    ErrorDetails,
    RunDetails,
    RunSummary,
    StepDetails,
    WorkflowVersion,
    parse_status,
)

__all__ = ["PAGE", "POLL"]

#: Seconds each request of ``result()`` asks the server to hold it (``?wait=``): well under
#: the route's bound (60) and the idle timeouts of the proxies in between.
POLL: Final = 30.0

#: Most runs one request of ``runs()`` asks for (the route's bound).
PAGE: Final = 1000

_T = TypeVar("_T")


def _run(run_id: Any) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise RunNotFound(str(run_id))
    return quoted(run_id)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ClientError(f"{what}: expected a non-empty string, got {value!r}")
    return quoted(value)


def _key(key: Any) -> dict[str, str]:
    if key is None:
        return {}
    if not isinstance(key, str) or not key:
        raise ClientError(f"idempotency_key: expected a non-empty string or None, got {key!r}")
    return {"Idempotency-Key": key}


# -- starting runs --------------------------------------------------------------------------


def trigger(
    workflow: Any,
    payload: Any,
    idempotency_key: Any,
    priority: Any = 0,
    search_attributes: Any = None,
    memo: Any = None,
) -> Call:
    if not isinstance(workflow, str) or not workflow:
        raise WorkflowNotFound(str(workflow))
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ClientError(f"priority: expected an integer, got {priority!r}")
    params = {"priority": str(priority)} if priority else {}
    for name, value in (("search_attributes", search_attributes), ("memo", memo)):
        if value is not None:
            if not isinstance(value, Mapping):
                raise ClientError(f"{name}: expected a mapping, got {value!r}")
            try:
                params[name] = orjson.dumps(dict(value)).decode()
            except TypeError as exc:
                raise ClientError(f"{name}: expected JSON values ({exc})") from None
    return Call(
        "POST",
        f"/api/workflows/{quoted(workflow)}/trigger",
        payload,
        params=params,
        headers=_key(idempotency_key),
        missing=("workflow", workflow),
    )


def started(reply: Reply) -> tuple[str, str]:
    """(run id, workflow) of a 202 that started a run."""
    return str(reply.data["run_id"]), str(reply.data["workflow"])


def keys_for(payloads: list[Any], keys: Any) -> list[Any]:
    if keys is None:
        return [None] * len(payloads)
    given = list(keys)
    if len(given) != len(payloads):
        raise ClientError(
            f"idempotency_keys: expected {len(payloads)} keys (one per payload), got {len(given)}"
        )
    return given


def retry_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``Client.retry``'s keyword arguments, checked: ``payload`` and ``mock_steps`` only."""
    unknown = sorted(set(overrides) - {"payload", "mock_steps"})
    if unknown:
        raise ClientError(f"retry: unexpected {unknown} (it takes payload= and mock_steps=)")
    return overrides


def retry(run_id: Any, overrides: dict[str, Any] | None = None) -> Call:
    """``overrides``: ``payload`` and ``mock_steps``, as given (none: the run as it was)."""
    return Call(
        "POST", f"/api/runs/{_run(run_id)}/retry", overrides or {}, missing=("run", str(run_id))
    )


# -- one run --------------------------------------------------------------------------------


def result(run_id: Any, wait: float) -> Call:
    return Call(
        "GET",
        f"/api/runs/{_run(run_id)}/result",
        params={"wait": f"{wait:.3f}"},
        wait=wait,
        missing=("run", str(run_id)),
    )


def outcome(reply: Reply, run_id: str) -> tuple[bool, Any]:
    """(finished, result) of a long-poll answer; raises the run's error if it failed."""
    data = reply.data
    if not data.get("finished"):
        return False, None
    if "error" in data:
        raise error_from_json(data["error"], str(data.get("run_id") or run_id))
    return True, data.get("result")


def status_of(reply: Reply) -> RunStatus:
    return RunStatus(reply.data["status"])


def deadline_of(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ClientError(f"timeout: expected seconds >= 0 or None, got {timeout!r}")
    return time.monotonic() + timeout


def next_wait(deadline: float | None) -> float:
    """How long the next long-poll may wait; raises ResultTimeout once ``deadline`` passed."""
    if deadline is None:
        return POLL
    return max(0.0, min(POLL, MAX_WAIT, deadline - time.monotonic()))


def late(run_id: str, timeout: float | None, deadline: float | None) -> None:
    """Raise ResultTimeout if ``deadline`` has passed (after an unfinished answer)."""
    if deadline is not None and time.monotonic() >= deadline:
        raise ResultTimeout(f"run {run_id} did not finish within {timeout:g}s (it goes on)")


def cancel(run_id: Any, reason: Any, terminate: bool = False) -> Call:
    if not isinstance(reason, str):
        raise ClientError(f"reason: expected a string, got {reason!r}")
    body: dict[str, Any] = {"reason": reason} if reason else {}  # none: "cancelled over the API"
    if terminate:
        body["terminate"] = True
    return Call("POST", f"/api/runs/{_run(run_id)}/cancel", body, missing=("run", str(run_id)))


def signal(run_id: Any, name: Any, payload: Any, idempotency_key: Any, args: Any = None) -> Call:
    path = f"/api/runs/{_run(run_id)}/signals/{_name(name, 'signal: name')}"
    if args is not None:  # the handler's arguments: the body is their list
        if payload is not None:
            raise ClientError(f"signal {name!r}: give payload or args, not both")
        if not isinstance(args, list | tuple):
            raise ClientError(f"signal {name!r}: args: expected a list, got {args!r}")
        path, payload = f"{path}?args=true", list(args)
    return Call(
        "POST",
        path,
        payload,
        headers=_key(idempotency_key),
        missing=("run", str(run_id)),
    )


def signaled(reply: Reply) -> bool:
    return not reply.data.get("duplicate", False)


def query(run_id: Any, name: Any, args: tuple[Any, ...], timeout: Any) -> Call:
    try:
        encoded = orjson.dumps(list(args)).decode()
    except TypeError as exc:
        raise InvalidPayload(f"query {name!r}: arguments cannot be sent as JSON ({exc})") from None
    return Call(
        "GET",
        f"/api/runs/{_run(run_id)}/queries/{_name(name, 'query: name')}",
        params={"args": encoded},
        timeout=timeout,
        late=f"query {name!r} of run {run_id}: no answer",
        missing=("run", str(run_id)),
    )


def update(run_id: Any, name: Any, payload: Any, timeout: Any) -> Call:
    wait = "" if timeout is None else f" within {timeout:g}s"
    return Call(
        "POST",
        f"/api/runs/{_run(run_id)}/updates/{_name(name, 'update: name')}",
        payload,
        timeout=timeout,
        late=f"update {name!r} of run {run_id} did not finish{wait}",
        missing=("run", str(run_id)),
    )


def answer(reply: Reply) -> Any:
    """The ``result`` of a query's or an update's answer."""
    return reply.data.get("result")


def inspect(run_id: Any) -> Call:
    return Call("GET", f"/api/runs/{_run(run_id)}", missing=("run", str(run_id)))


def progress(run_id: Any) -> Call:
    return Call("GET", f"/api/runs/{_run(run_id)}/progress", missing=("run", str(run_id)))


def history(run_id: Any) -> Call:
    return Call("GET", f"/api/runs/{_run(run_id)}/history", missing=("run", str(run_id)))


def logs(run_id: Any, step: Any, attempt: Any) -> Call:
    params: dict[str, str] = {}
    if step is not None:
        if not isinstance(step, str) or not step:
            raise ClientError(f"step: expected a step's path or None, got {step!r}")
        params["step"] = step
    if attempt is not None:
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise ClientError(f"attempt: expected an integer >= 1 or None, got {attempt!r}")
        params["attempt"] = str(attempt)
    return Call(
        "GET", f"/api/runs/{_run(run_id)}/logs", params=params, missing=("run", str(run_id))
    )


def step_logs(reply: Reply) -> dict[str, Any]:
    """``engine.logs``'s answer: ``{"records": [...], "dropped": [...]}``."""
    data = reply.data
    return {"records": list(data["records"]), "dropped": list(data["dropped"])}


def restart(run_id: Any) -> Call:
    return Call("POST", f"/api/runs/{_run(run_id)}/restart", missing=("run", str(run_id)))


# -- listings, events, approvals ------------------------------------------------------------


def runs_page(
    workflow: Any,
    status: Any,
    limit: int,
    before: Any,
    since: Any,
    until: Any,
    where: Any = None,
    id_prefix: Any = None,
    idempotency_key: Any = None,
) -> Call:
    params: dict[str, str] = {"limit": str(limit)}
    for name, text in (("id_prefix", id_prefix), ("idempotency_key", idempotency_key)):
        if text is not None:
            if not isinstance(text, str) or not text:
                raise ClientError(f"{name}: expected a non-empty string, got {text!r}")
            params[name] = text
    if where is not None:
        if not isinstance(where, Mapping):
            raise ClientError(
                f"where: expected a mapping such as {{'customer': 'c-42'}}, got {where!r}"
            )
        try:
            params["where"] = orjson.dumps(dict(where)).decode()
        except TypeError as exc:
            raise ClientError(f"where: expected JSON values ({exc})") from None
    if workflow is not None:
        params["workflow"] = str(workflow)
    wanted = parse_status(status)
    if wanted is not None:
        params["status"] = wanted.value
    if before is not None:
        if not isinstance(before, str):
            raise ClientError(f"before: expected a run id, got {before!r}")
        params["before"] = before
    for name, given in (("since", since), ("until", until)):
        if given is not None:
            if isinstance(given, bool) or not isinstance(given, int | float):
                raise ClientError(f"{name}: expected seconds since the epoch, got {given!r}")
            params[name] = repr(float(given))
    return Call("GET", "/api/runs", params=params)


def check_limit(limit: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ClientError(f"limit: expected a non-negative integer or None, got {limit!r}")


def page_size(limit: int | None, have: int) -> int:
    return PAGE if limit is None else min(PAGE, limit - have)


def summaries(reply: Reply) -> tuple[list[RunSummary], str | None]:
    """A page of runs, and the next page's cursor (``X-Next-Cursor``), if any."""
    page = [_build(RunSummary, item, status=RunStatus(item["status"])) for item in reply.data]
    return page, reply.headers.get("x-next-cursor") or None


def approvals(status: Any) -> Call:
    if status is not None and not isinstance(status, str):
        raise ClientError(f"status: expected an approval status or None, got {status!r}")
    return Call("GET", "/api/approvals", params={"status": "all" if status is None else status})


def approvals_of(reply: Reply, run_id: Any) -> list[dict[str, Any]]:
    items = list(reply.data or [])
    if run_id is None:
        return items
    return [a for a in items if a.get("run_id") == run_id]


def resume(token: Any, payload: Any) -> Call:
    return Call(
        "POST",
        f"/api/approvals/{_name(token, 'token')}/resume",
        payload,
        missing=("approval", str(token)),
    )


def publish(event: Any, payload: Any, key: Any, ttl: Any) -> Call:
    body: dict[str, Any] = {"payload": payload}
    if key is not None:
        body["key"] = key
    if ttl is not None:
        body["ttl"] = ttl
    return Call("POST", f"/api/events/{_name(event, 'event')}", body)


def delivered(reply: Reply) -> int:
    return int(reply.data.get("delivered", 0))


def versions(workflow: Any) -> Call:
    return Call(
        "GET",
        f"/api/workflows/{_name(workflow, 'workflow')}/versions",
        missing=("workflow", str(workflow)),
    )


def versions_of(reply: Reply) -> list[WorkflowVersion]:
    return [_build(WorkflowVersion, item) for item in reply.data or []]


def health() -> Call:
    return Call("GET", "/readyz", accept=frozenset({503}))


# -- schedules ------------------------------------------------------------------------------


def schedules() -> Call:
    return Call("GET", "/api/schedules")


def schedule(name: Any, action: str, note: Any = None) -> Call:
    """``POST /api/schedules/{name}/{action}`` (pause, resume, trigger)."""
    if note is not None and not isinstance(note, str):
        raise ClientError(f"note: expected a string or None, got {note!r}")
    return Call(
        "POST",
        f"/api/schedules/{_name(name, 'name')}/{action}",
        {"note": note} if note is not None else {},
        missing=("schedule", str(name)),
    )


# -- RunDetails from JSON -------------------------------------------------------------------


def _build(cls: type[_T], data: Mapping[str, Any], **given: Any) -> _T:
    """``cls`` from its JSON fields (unknown ones, from a newer server, are left out)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names and k not in given}, **given)


def _error(data: Any) -> ErrorDetails | None:
    return None if not data else _build(ErrorDetails, data)


def _step(data: Mapping[str, Any]) -> StepDetails:
    return _build(
        StepDetails,
        data,
        status=StepStatus(data["status"]),
        error=_error(data.get("error")),
        attempts=tuple(_build(AttemptDetails, a) for a in data.get("attempts") or ()),
    )


def details(reply: Reply) -> RunDetails:
    """The :class:`RunDetails` of ``GET /api/runs/{id}``, as ``engine.inspect`` gives them."""
    data = reply.data
    return _build(
        RunDetails,
        data,
        status=RunStatus(data["status"]),
        error=_error(data.get("error")),
        steps=tuple(_step(s) for s in data.get("steps") or ()),
    )
