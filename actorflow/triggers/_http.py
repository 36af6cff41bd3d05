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
    GET  /api/runs?workflow=&status=&limit=&before=&since=&until=
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
    GET  /api/approvals?status=waiting
    POST /api/approvals/{token}/resume    body: the payload (the approval step's output)
    POST /api/events/{name}               body: {"payload": ..., "key": ..., "ttl": ...}
    GET  /api/schedules
    POST /api/runs/{run_id}/signals/{name}   code workflows: body: the signal's payload
                                             (an Idempotency-Key header drops repeats)
    GET  /api/runs/{run_id}/queries/{name}?args=[...]   the query handler's answer
    POST /api/runs/{run_id}/updates/{name}   body: the payload; answer: the handler's result
    POST /api/runs/{run_id}/restart          restart a panicked code workflow run
    GET  /api/runs/{run_id}/progress         item counts of the run's fan-outs
    GET  /api/runs/{run_id}/result?wait=30   long-poll: answers once the run finishes, or
                                             after ``wait`` seconds (0 to 60; absent: 0):
                                             {"run_id", "workflow", "status", "finished",
                                             and once finished "result" or "error": {"type",
                                             "message", "step", "cause", ...}} (_results.py)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actorflow._hosts import host_problems
from actorflow.definition._triggers import WebhookSpec, validate_payload
from actorflow.errors import (
    ActorflowError,
    ApprovalError,
    ApprovalNotFound,
    ClientError,
    ConfigError,
    EngineNotRunning,
    MissingExtra,
    RunNotFound,
    StoreFull,
    WorkflowNotFound,
)
from actorflow.triggers._lifespan import HINT, lifespan, wired
from actorflow.triggers._origin import HostGuard, answer
from actorflow.triggers._paths import route_path, slash_redirect

if TYPE_CHECKING:
    from actorflow.engine._engine import Engine

__all__ = ["build_app"]

log = logging.getLogger("actorflow.http")

#: Stripe's default tolerance between its signature timestamp and now.
STRIPE_TOLERANCE = 300.0
_MAX_KEY = 1024


class _HttpError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


async def _handled(call: Awaitable[Any], what: str) -> Any:
    """Await a query or update; an exception its handler raised is a 422, not a 500."""
    try:
        return await call
    except ActorflowError:
        raise
    except Exception as exc:  # the handler raised
        raise _HttpError(422, f"{what}_failed", f"{type(exc).__name__}: {exc}") from None


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=str),
        status_code=status,
        media_type="application/json",
    )


def _error(status: int, error: str, detail: str) -> Response:
    return _json({"error": error, "detail": detail}, status)


Handler = Callable[[Request], Awaitable[Response]]


def _guard(fn: Handler) -> Handler:
    """Turn the engine's errors into JSON 4xx/5xx answers."""

    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except _HttpError as exc:
            return _error(exc.status, exc.error, exc.detail)
        except (RunNotFound, WorkflowNotFound, ApprovalNotFound) as exc:
            return _error(404, "not_found", str(exc))
        except ApprovalError as exc:
            return _error(409, "approval", str(exc))
        except EngineNotRunning as exc:
            return _error(503, "engine_not_running", str(exc))
        except StoreFull as exc:
            return _error(507, "store_full", str(exc))
        except MissingExtra as exc:  # e.g. GET /metrics without prometheus-client
            return _error(501, "missing_extra", str(exc))
        except ClientError as exc:
            return _error(400, "bad_request", str(exc))
        except ActorflowError as exc:
            return _error(500, "engine_error", str(exc))

    return handler


def _check_length(declared: str | None, limit: int) -> None:
    """Refuse a declared Content-Length past ``limit`` (413) before reading the body."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _HttpError(400, "bad_request", "Content-Length is not a number") from None
        if size > limit:
            raise _HttpError(413, "too_large", f"body of {size} bytes is over the {limit} limit")


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


def _parse(body: bytes, empty: Any = None, required: bool = False) -> Any:
    """The JSON ``body``; an empty one is ``empty``, or a 400 if a body is ``required``."""
    if not body.strip():
        if required:
            raise _HttpError(400, "bad_json", "body: expected JSON, got an empty body")
        return empty
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _HttpError(400, "bad_json", f"body is not valid JSON: {exc}") from None


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and (not key or len(key) > _MAX_KEY):
        raise _HttpError(
            400, "bad_request", f"Idempotency-Key: expected 1 to {_MAX_KEY} characters"
        )
    return key


def check_signature(spec: WebhookSpec, headers: Any, body: bytes, now: float) -> None:
    """Raise a 401 unless ``body`` carries a valid signature for ``spec``."""
    if spec.signature is None or spec.secret_env is None:
        return
    secret = os.environ.get(spec.secret_env)
    if not secret:
        raise _HttpError(500, "misconfigured", "the webhook's signing secret is not set")
    key = secret.encode()
    if spec.signature == "stripe":
        header = headers.get("stripe-signature")
        if not header:
            raise _HttpError(401, "signature", "missing Stripe-Signature header")
        parts: dict[str, list[str]] = {}
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            parts.setdefault(name, []).append(value)
        try:
            stamp = int(parts["t"][0])
        except (KeyError, ValueError):
            raise _HttpError(401, "signature", "Stripe-Signature has no timestamp") from None
        if now - stamp > STRIPE_TOLERANCE:
            raise _HttpError(
                401,
                "signature",
                f"Stripe-Signature timestamp is too old (more than {STRIPE_TOLERANCE:g} s ago)",
            )
        if stamp - now > STRIPE_TOLERANCE:
            # Not a replay but a clock apart: a message of its own, so that it can be fixed.
            raise _HttpError(
                401,
                "signature",
                f"Stripe-Signature timestamp is in the future (more than {STRIPE_TOLERANCE:g} s "
                "ahead of this server's clock)",
            )
        expected = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not any(_same(expected, v) for v in parts.get("v1", [])):
            raise _HttpError(401, "signature", "signature does not match")
        return
    name = "x-hub-signature-256" if spec.signature == "github" else "x-signature"
    header = headers.get(name)
    if not header:
        raise _HttpError(401, "signature", f"missing {name} header")
    if spec.signature == "github" and not header.startswith("sha256="):
        raise _HttpError(
            401,
            "signature",
            "X-Hub-Signature-256: expected 'sha256=<hex digest>' (no sha256= prefix)",
        )
    given = header.removeprefix("sha256=")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not _same(expected, given):
        raise _HttpError(401, "signature", "signature does not match")


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of a hex digest with what a request sent.

    As bytes: ``compare_digest`` refuses str with non-ASCII characters (a TypeError, which
    would answer 500), and a header may hold any character.
    """
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


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
                    )
                }
            )
        return _json(out)

    @_guard
    async def trigger(request: Request) -> Response:
        body = await _body(request, limit)
        key = _idempotency_key(request)
        run = await engine.trigger_async(
            request.path_params["workflow"], _parse(body), idempotency_key=key
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
        items = await run_in_threadpool(
            functools.partial(
                engine.runs,
                q.get("workflow") or None,
                status or None,
                limit_n,
                before=q.get("before") or None,
                since=times["since"],
                until=times["until"],
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
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        cancelled = await handle.cancel_async(str(reason))
        return _json({"run_id": handle.id, "cancelled": cancelled})

    @_guard
    async def retry(request: Request) -> Response:
        handle = await run_in_threadpool(engine.retry, request.path_params["run_id"])
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

    @_guard
    async def signal(request: Request) -> Response:
        payload = _parse(await _body(request, limit))
        key = _idempotency_key(request)
        handle = await run_in_threadpool(engine.run, request.path_params["run_id"])
        fresh = await handle.signal_async(request.path_params["name"], payload, idempotency_key=key)
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
        Route("/api/runs/{run_id}/signals/{name}", signal, methods=["POST"]),
        Route("/api/runs/{run_id}/queries/{name}", query, methods=["GET"]),
        Route("/api/runs/{run_id}/updates/{name}", update, methods=["POST"]),
        Route("/api/runs/{run_id}/restart", restart, methods=["POST"]),
        Route("/api/runs/{run_id}/progress", progress, methods=["GET"]),
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

        app = TokenGate(app, token)
    front: Any = _Webhooks(app, engine, hooks, limit)
    if rate_limit:
        from actorflow.triggers._limits import RateLimit

        front = RateLimit(front, rate_limit)
    return HostGuard(front, names, {path for path, _ in hooks})


class _Webhooks:
    """The app's front: webhook requests are served here, everything else by Starlette.

    Webhooks are the throughput-critical route, and Starlette's middleware stack and router
    cost more CPU per request than recording the run; this raw ASGI path does the same checks
    (size, signature, JSON, schema, idempotency key) with a fraction of the work. It also
    sends a request for the mount point itself on to the dashboard's page (``/flows`` to
    ``/flows/``), and answers 503 with :data:`~actorflow.triggers._lifespan.HINT` while no
    lifespan started the engine (the page and its assets still load, and show the error).
    """

    def __init__(
        self,
        app: Starlette,
        engine: Engine,
        hooks: dict[tuple[str, str], tuple[str, WebhookSpec]],
        limit: int,
    ) -> None:
        self.app = app
        self._engine = engine
        self._hooks = hooks
        self._paths = {path for path, _ in hooks}
        self._limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        location = slash_redirect(scope) if not path else None
        if location is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 307,
                    "headers": [(b"location", location), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        engine = self._engine
        if not engine.running and not wired(engine) and path != "/" and path[:8] != "/static/":
            await self._not_started(path, send)
            return
        if path in self._paths:
            hook = self._hooks.get((path, scope["method"]))
            if hook is None:
                allowed = sorted(m for p, m in self._hooks if p == path)
                status, data = (
                    405,
                    orjson.dumps(
                        {"error": "method", "detail": f"this webhook takes {', '.join(allowed)}"}
                    ),
                )
            else:
                status, data = await self._handle(scope, receive, *hook)
            await answer(send, status, data)
            return
        await self.app(scope, receive, send)

    async def _not_started(self, path: str, send: Any) -> None:
        """503 for an engine nothing started, saying how to start it (the lifespan)."""
        body: dict[str, Any] = {"error": "engine_not_running", "detail": HINT}
        if path == "/readyz":
            body = {**await run_in_threadpool(self._engine.health), **body}
        elif path == "/healthz":
            body = {"status": "not_started", **body}
        await answer(send, 503, orjson.dumps(body))

    async def _handle(
        self, scope: Any, receive: Any, workflow: str, spec: WebhookSpec
    ) -> tuple[int, bytes]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await _read(receive, headers, self._limit)
            check_signature(spec, headers, body, time.time())
            key = headers.get("idempotency-key")
            if key is not None and (not key or len(key) > _MAX_KEY):
                raise _HttpError(
                    400, "bad_request", f"Idempotency-Key: expected 1 to {_MAX_KEY} characters"
                )
            try:
                payload = validate_payload(spec.schema, _parse(body, required=True))
            except ValueError as exc:
                raise _HttpError(422, "schema", str(exc)) from None
            run = await self._engine.trigger_async(workflow, payload, idempotency_key=key)
            return 202, orjson.dumps({"run_id": run.id, "workflow": workflow})
        except _HttpError as exc:
            return exc.status, orjson.dumps({"error": exc.error, "detail": exc.detail})
        except EngineNotRunning as exc:
            return 503, orjson.dumps({"error": "engine_not_running", "detail": str(exc)})
        except StoreFull as exc:
            return 507, orjson.dumps({"error": "store_full", "detail": str(exc)})
        except ClientError as exc:
            return 400, orjson.dumps({"error": "bad_request", "detail": str(exc)})
        except ActorflowError as exc:
            return 500, orjson.dumps({"error": "engine_error", "detail": str(exc)})


async def _read(receive: Any, headers: dict[str, str], limit: int) -> bytes:
    """A raw ASGI request body, refused with 413 past ``limit`` bytes."""
    _check_length(headers.get("content-length"), limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HttpError(400, "bad_request", "the client went away")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _HttpError(413, "too_large", f"body is over the {limit} byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
