"""The ASGI app: webhooks, a small JSON REST API and ``/healthz`` (Starlette).

Everything from the network is JSON, parsed with orjson and never unpickled. A webhook's run
is durably recorded before the ``202`` is sent. Bad requests get a 4xx with a JSON body
``{"error": ..., "detail": ...}`` naming the problem. Signatures are compared in constant time
(``hmac.compare_digest``). A webhook's body must be JSON (empty: 400); the API's bodies are
optional, an empty one meaning no payload (None), as the Python calls default to. In front of
it all, ``_origin.HostGuard`` checks ``Host`` and refuses state changes from other sites.

Mounted under a prefix (``app.mount("/flows", engine.asgi())``, ``uvicorn --root-path``),
every route below is under it: each layer matches the route path (``_paths.route_path``),
the prefix itself is sent on to the prefix with a ``/`` (the dashboard's page, whose URLs
are relative), and until something starts the engine (a mounted app gets no lifespan: see
``engine.lifespan``) every route but the page and its assets answers 503 saying how to.

Routes::

    <webhook path>                        POST (or its method): start a run
    GET  /healthz                         liveness of the engine
    GET  /readyz                          readiness: store writable, workers alive, timers on time
    GET  /metrics                         Prometheus metrics (501 without the metrics extra)
    GET  /api/workflows                   defined workflows and their triggers
    POST /api/workflows/{id}/trigger      start a run; body: the payload (optional)
    GET  /api/runs?workflow=&status=&limit=&before=&since=&until=&where={json}
                                          newest first; X-Next-Cursor: the next page's before
    GET  /api/workflows/{workflow}/graph  nodes and edges, for the dashboard (?run=ID: the
                                          plan that run started on)
    GET  /api/workflows/{workflow}/versions   each version, defined or still run, and its
                                              runs in flight (engine.versions)
    GET  /api/stream                      lifecycle events (server-sent events)
    GET  /                                the dashboard (static page; /static/...)
    GET  <prefix>                         mounted: 307 to <prefix>/, the dashboard
    GET  /api/runs/{run_id}               everything recorded about a run
    POST /api/runs/{run_id}/cancel        body: {"reason": "..."} (optional)
    POST /api/runs/{run_id}/retry         a failed or cancelled run again, as a new run
                                          (body {"payload": .., "mock_steps": {..}}: any
                                          finished run, with those overrides)
    GET  /api/approvals?status=waiting
    POST /api/approvals/{token}/resume    body: the payload (the approval step's output)
    POST /api/events/{name}               body: {"payload": ..., "key": ..., "ttl": ...}
    GET  /api/schedules
    POST /api/schedules/{name}/pause      body: {"note": "..."} (optional); name URL-encoded
    POST /api/schedules/{name}/resume     missed slots are skipped, not fired
    POST /api/schedules/{name}/trigger    one run now, as a slot: 202 {"run_id", "workflow"}
    POST /api/runs/{run_id}/signals/{name}   code workflows: body: the signal's payload
                                             (an Idempotency-Key header drops repeats)
    GET  /api/runs/{run_id}/queries/{name}?args=[...]   the query handler's answer
    POST /api/runs/{run_id}/updates/{name}   body: the payload; answer: the handler's result
    POST /api/runs/{run_id}/restart          restart a panicked code workflow run
    GET  /api/runs/{run_id}/progress         item counts of the run's fan-outs
    GET  /api/runs/{run_id}/logs?step=&attempt=   what its steps logged (engine.logs)
    GET  /api/runs/{run_id}/result?wait=30   long-poll: answers once the run finishes, or
                                             after ``wait`` seconds (0 to 60; absent: 0):
                                             {"run_id", "workflow", "status", "finished",
                                             and once finished "result" or "error": {"type",
                                             "message", "step", "cause", ...}} (_results.py)
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actorflow._hosts import host_problems
from actorflow.errors import (
    ClientError,
    ConfigError,
    NondeterminismError,
    StoreError,
)
from actorflow.triggers._lifespan import lifespan
from actorflow.triggers._origin import HostGuard

if TYPE_CHECKING:
    from actorflow.engine._engine import Engine

from actorflow.triggers._requests import (
    _check_length,
    _error,
    _fields,
    _guard,
    _HttpError,
    _idempotency_key,
    _json,
    _json_param,
    _parse,
    _priority,
)
from actorflow.triggers._webhooks import _Webhooks, check_signature

__all__ = ["build_app", "check_signature"]

log = logging.getLogger("actorflow.http")


async def _handled(call: Awaitable[Any], what: str) -> Any:
    """Await a query or update; an exception its handler raised is a 422, not a 500.

    What the handler raised includes actorflow's own run errors (a step the update awaited
    failed: ``StepFailed``); the request's errors (``ClientError``: no such run or handler),
    the store's, and a diverged history (``NondeterminismError``) are the engine's answer.
    """
    try:
        return await call
    except (ClientError, StoreError, NondeterminismError):
        raise
    except Exception as exc:  # the handler raised
        raise _HttpError(422, f"{what}_failed", f"{type(exc).__name__}: {exc}") from None


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it all)."""
    _check_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _HttpError(413, "too_large", f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _read_only(route: Route) -> Route:
    """The route, refusing with 403 if it changes anything (an API action)."""
    if "POST" not in (route.methods or set()):
        return route

    async def refused(request: Request) -> Response:
        return _error(403, "read_only", "this API is read-only (engine.asgi(read_only=True))")

    return Route(route.path, refused, methods=list(route.methods or ()))


def build_app(
    engine: Engine,
    read_only: bool = False,
    dashboard: bool = True,
    token: str = "",
    rate_limit: float = 0.0,
    allowed_hosts: Iterable[str] = (),
) -> Any:
    """The ASGI app for ``engine`` (see the module docstring).

    Its lifespan starts the engine if it is not running (and then stops it at shutdown), so
    the app also runs under a plain ``uvicorn module:app``; mounted in another app it gets no
    lifespan events, and that app's lifespan must start the engine (``engine.lifespan``).
    In front of everything, a
    :class:`~actorflow.triggers._origin.HostGuard` refuses foreign ``Host`` names and
    cross-site requests that would change state.

    Raises:
        ConfigError: ``allowed_hosts`` is not a list of host names.
    """
    problems = host_problems(allowed_hosts)
    if problems:
        raise ConfigError("; ".join(problems))
    names = (*engine.config.allowed_hosts, *allowed_hosts)
    limit = engine.config.max_body

    @_guard
    async def healthz(request: Request) -> Response:
        if engine.alive:
            return _json({"status": "ok"})
        failure = engine._failure
        if failure is not None:  # halted by a store failure: the process must be restarted
            return _json({"status": "halted", "detail": f"a store commit failed: {failure}"}, 503)
        return _json({"status": "stopped"}, 503)

    @_guard
    async def metrics(request: Request) -> Response:
        text = await run_in_threadpool(engine.metrics)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @_guard
    async def readyz(request: Request) -> Response:
        health = await run_in_threadpool(engine.health)
        return _json(health, 200 if health["ready"] else 503)

    @_guard
    async def workflows(request: Request) -> Response:
        out = []
        for wid in engine.workflows:
            d = await run_in_threadpool(engine.definition, wid)
            out.append(
                {
                    k: d.get(k)
                    for k in (
                        "id",
                        "description",
                        "webhooks",
                        "schedules",
                        "rate_limit",
                        "version",
                        "versions",
                        "concurrency",
                        "queue",
                    )
                }
                # A code workflow's kind is "code"; a graph's record has none. Events and
                # polls are listed when it has them.
                | {
                    "kind": d.get("kind", "graph"),
                    "events": d.get("events") or [],
                    "polls": d.get("polls") or [],
                }
            )
        return _json(out)

    @_guard
    async def trigger(request: Request) -> Response:
        body = await _body(request, limit)
        key = _idempotency_key(request)
        run = await engine.trigger_async(
            request.path_params["workflow"],
            _parse(body),
            idempotency_key=key,
            priority=_priority(request),
            search_attributes=_json_param(request, "search_attributes"),
            memo=_json_param(request, "memo"),
        )
        return _json({"run_id": run.id, "workflow": run.workflow_id}, 202)

    @_guard
    async def runs(request: Request) -> Response:
        q = request.query_params
        try:
            limit_n = int(q.get("limit", "50"))
        except ValueError:
            raise _HttpError(400, "bad_request", "limit: expected an integer") from None
        if not 1 <= limit_n <= 1000:
            raise _HttpError(400, "bad_request", "limit: expected 1 to 1000")
        status = q.get("status")
        times: dict[str, float | None] = {}
        for name in ("since", "until"):
            raw = q.get(name)
            try:
                times[name] = float(raw) if raw else None
            except ValueError:
                raise _HttpError(
                    400, "bad_request", f"{name}: expected seconds since the epoch"
                ) from None
        where = _json_param(request, "where")
        items = await run_in_threadpool(
            functools.partial(
                engine.runs,
                q.get("workflow") or None,
                status or None,
                limit_n,
                before=q.get("before") or None,
                since=times["since"],
                until=times["until"],
                where=where,
                id_prefix=q.get("id_prefix") or None,
                idempotency_key=q.get("idempotency_key") or None,
            )
        )
        response = _json(items)
        if len(items) == limit_n:
            # The next page: runs older than the last one here.
            response.headers["X-Next-Cursor"] = items[-1].id
        return response

    @_guard
    async def run_detail(request: Request) -> Response:
        details = await run_in_threadpool(engine.inspect, request.path_params["run_id"])
        return _json(details)

    @_guard
    async def cancel(request: Request) -> Response:
        data = _parse(await _body(request, limit), {}) or {}
        reason = data.get("reason", "cancelled over the API") if isinstance(data, dict) else ""
        terminate = isinstance(data, dict) and data.get("terminate", False)
        if not isinstance(terminate, bool):
            raise _HttpError(400, "bad_request", "terminate: expected true or false")
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        if terminate:  # at once: neither the run's code nor its on_cancel hook is told
            cancelled = await run_in_threadpool(handle.terminate, str(reason))
        else:
            cancelled = await handle.cancel_async(str(reason))
        return _json({"run_id": handle.id, "cancelled": cancelled})

    @_guard
    async def retry(request: Request) -> Response:
        data = _parse(await _body(request, limit), {}) or {}
        if not isinstance(data, dict) or set(data) - {"payload", "mock_steps"}:
            raise _HttpError(
                400, "bad_request", 'body: expected {"payload": ..., "mock_steps": {...}} or none'
            )
        overrides: dict[str, Any] = {"mock_steps": data.get("mock_steps")}
        if "payload" in data:
            overrides["payload"] = data["payload"]
        handle = await run_in_threadpool(
            functools.partial(engine.retry, request.path_params["run_id"], **overrides)
        )
        return _json({"run_id": handle.id, "workflow": handle.workflow_id}, 202)

    @_guard
    async def approvals(request: Request) -> Response:
        status = request.query_params.get("status", "waiting")
        items = await run_in_threadpool(engine.approvals, None if status == "all" else status)
        return _json(items)

    @_guard
    async def resume(request: Request) -> Response:
        payload = _parse(await _body(request, limit))
        await engine.resume_async(request.path_params["token"], payload)
        return _json({"resumed": True})

    @_guard
    async def publish(request: Request) -> Response:
        data = _parse(await _body(request, limit), {})
        if not isinstance(data, dict):
            raise _HttpError(400, "bad_request", 'body: expected {"payload": ..., "key": ...}')
        unknown = set(data) - {"payload", "key", "ttl"}
        if unknown:
            raise _HttpError(400, "bad_request", f"body: unknown fields {sorted(unknown)}")
        delivered = await engine.publish_async(
            request.path_params["name"],
            data.get("payload"),
            key=data.get("key"),
            ttl=data.get("ttl"),
        )
        return _json({"delivered": delivered}, 202)

    @_guard
    async def versions(request: Request) -> Response:
        found = await run_in_threadpool(engine.versions, request.path_params["workflow"])
        return _json([v.to_dict() for v in found])

    @_guard
    async def schedules(request: Request) -> Response:
        return _json(await run_in_threadpool(engine.schedules))

    # A schedule's name ("report#0") is one path segment, URL-encoded; ``{name:path}``
    # also takes one with a "%2F" in it (decoded to "/" before routing), answered 404.
    @_guard
    async def pause_schedule(request: Request) -> Response:
        note = _fields(await _body(request, limit), {"note": str}).get("note")
        name = request.path_params["name"]
        await engine.pause_schedule_async(name, note=note)
        return _json({"name": name, "paused": True, "note": note})

    @_guard
    async def resume_schedule(request: Request) -> Response:
        _fields(await _body(request, limit), {})
        name = request.path_params["name"]
        await engine.resume_schedule_async(name)
        return _json({"name": name, "paused": False})

    @_guard
    async def trigger_schedule(request: Request) -> Response:
        _fields(await _body(request, limit), {})
        run = await engine.trigger_schedule_async(request.path_params["name"])
        return _json({"run_id": run.id, "workflow": run.workflow_id}, 202)

    @_guard
    async def signal(request: Request) -> Response:
        payload = _parse(await _body(request, limit))
        key = _idempotency_key(request)
        spread = request.query_params.get("args", "false")
        if spread not in ("true", "false"):
            raise _HttpError(400, "bad_request", f"args: expected true or false, got {spread!r}")
        if spread == "true" and not isinstance(payload, list):
            raise _HttpError(
                400, "bad_request", "args=true: expected the body to be a JSON list of arguments"
            )
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        name = request.path_params["name"]
        if spread == "true":
            fresh = await handle.signal_async(name, args=payload, idempotency_key=key)
        else:
            fresh = await handle.signal_async(name, payload, idempotency_key=key)
        return _json({"run_id": handle.id, "signaled": True, "duplicate": not fresh}, 202)

    @_guard
    async def query(request: Request) -> Response:
        raw = request.query_params.get("args", "[]")
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, list):
            raise _HttpError(400, "bad_request", 'args: expected a JSON list, e.g. [1, "a"]')
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        result = await _handled(handle.query_async(request.path_params["name"], *args), "query")
        return _json({"run_id": handle.id, "result": result})

    @_guard
    async def update(request: Request) -> Response:
        payload = _parse(await _body(request, limit))
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        result = await _handled(handle.update_async(request.path_params["name"], payload), "update")
        return _json({"run_id": handle.id, "result": result})

    @_guard
    async def progress(request: Request) -> Response:
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        return _json(await run_in_threadpool(handle.progress))

    @_guard
    async def history(request: Request) -> Response:
        return _json(await run_in_threadpool(engine.history, request.path_params["run_id"]))

    @_guard
    async def logs(request: Request) -> Response:
        q = request.query_params
        raw = q.get("attempt")
        attempt = None
        if raw:
            digits = raw.isascii() and raw.isdigit() and len(raw) <= 10
            attempt = int(raw) if digits else 0
            if not 1 <= attempt < 2**31:
                raise _HttpError(
                    400, "bad_request", f"attempt: expected an integer >= 1, got {raw[:40]!r}"
                )
        run_id, step = request.path_params["run_id"], q.get("step") or None
        return _json(await run_in_threadpool(engine.logs, run_id, step, attempt=attempt))

    @_guard
    async def restart(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        await engine.restart_async(run_id)
        return _json({"run_id": run_id, "restarted": True})

    @_guard
    async def result(request: Request) -> Response:
        from actorflow.triggers._results import outcome, parse_wait

        wait = parse_wait(request.query_params.get("wait"))
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        return _json(await outcome(handle, wait))

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/workflows", workflows, methods=["GET"]),
        Route("/api/workflows/{workflow}/trigger", trigger, methods=["POST"]),
        Route("/api/workflows/{workflow}/versions", versions, methods=["GET"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/runs/{run_id}", run_detail, methods=["GET"]),
        Route("/api/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/api/runs/{run_id}/retry", retry, methods=["POST"]),
        Route("/api/approvals", approvals, methods=["GET"]),
        Route("/api/approvals/{token}/resume", resume, methods=["POST"]),
        Route("/api/events/{name}", publish, methods=["POST"]),
        Route("/api/schedules", schedules, methods=["GET"]),
        Route("/api/schedules/{name:path}/pause", pause_schedule, methods=["POST"]),
        Route("/api/schedules/{name:path}/resume", resume_schedule, methods=["POST"]),
        Route("/api/schedules/{name:path}/trigger", trigger_schedule, methods=["POST"]),
        Route("/api/runs/{run_id}/signals/{name:path}", signal, methods=["POST"]),
        Route("/api/runs/{run_id}/queries/{name:path}", query, methods=["GET"]),
        Route("/api/runs/{run_id}/updates/{name:path}", update, methods=["POST"]),
        Route("/api/runs/{run_id}/restart", restart, methods=["POST"]),
        Route("/api/runs/{run_id}/progress", progress, methods=["GET"]),
        Route("/api/runs/{run_id}/logs", logs, methods=["GET"]),
        Route("/api/runs/{run_id}/history", history, methods=["GET"]),
        Route("/api/runs/{run_id}/result", result, methods=["GET"]),
    ]
    if read_only:
        routes = [_read_only(r) for r in routes]
    if dashboard:
        from actorflow.dashboard import dashboard_routes

        routes.extend(dashboard_routes(engine, read_only))
    hooks = {(spec.path, spec.method): (wid, spec) for wid, spec in engine._webhooks()}
    for wid, spec in hooks.values():
        if spec.secret_env is not None and not os.environ.get(spec.secret_env):
            log.warning(
                "webhook %s of workflow %r: environment variable %s is not set; its requests "
                "are refused (500) until it is",
                spec.path,
                wid,
                spec.secret_env,
            )

    def own_lifespan(app: Starlette) -> AbstractAsyncContextManager[None]:
        # The same as engine.lifespan: start the engine unless it runs, stop it if it started.
        return lifespan(engine)

    app: Any = Starlette(routes=routes, lifespan=own_lifespan)
    if token:
        from actorflow.triggers._auth import TokenGate

        app = TokenGate(app, token, login=dashboard)
    front: Any = _Webhooks(app, engine, hooks, limit)
    if rate_limit:
        from actorflow.triggers._limits import RateLimit

        front = RateLimit(front, rate_limit)
    return HostGuard(front, names, {path for path, _ in hooks})
