"""The REST API's request handling: JSON answers, errors, bodies, idempotency keys.

Every route handler of ``_http.py`` is wrapped by :func:`_guard`, which turns the engine's
exceptions into JSON errors with the right status (404 unknown run or workflow, 409 an
approval already used, 413 a body too large, 422 a bad payload, 503 the engine stopped or
the store full); the helpers here read and check what a request carries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from actorflow.errors import (
    ActorflowError,
    ApprovalError,
    ApprovalNotFound,
    ClientError,
    EngineNotRunning,
    MissingExtra,
    RunNotFound,
    ScheduleNotFound,
    StoreFull,
    WorkflowNotFound,
)

if TYPE_CHECKING:
    pass

__all__ = ["STRIPE_TOLERANCE", "Handler"]

log = logging.getLogger("actorflow.http")
STRIPE_TOLERANCE = 300.0
_MAX_KEY = 1024
Handler = Callable[[Request], Awaitable[Response]]


class _HttpError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=str),
        status_code=status,
        media_type="application/json",
    )


def _error(status: int, error: str, detail: str) -> Response:
    return _json({"error": error, "detail": detail}, status)


def _guard(fn: Handler) -> Handler:
    """Turn the engine's errors into JSON 4xx/5xx answers."""

    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except _HttpError as exc:
            return _error(exc.status, exc.error, exc.detail)
        except (RunNotFound, WorkflowNotFound, ApprovalNotFound, ScheduleNotFound) as exc:
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


def _fields(body: bytes, allowed: dict[str, type]) -> dict[str, Any]:
    """A body that is empty or a JSON object of ``allowed`` fields (name -> type, or null)."""
    data = _parse(body, {})
    shape = ", ".join(f'"{k}": {t.__name__}' for k, t in allowed.items())
    if not isinstance(data, dict):
        raise _HttpError(400, "bad_request", f"body: expected {{{shape}}} or none")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _HttpError(400, "bad_request", f"body: unknown fields {unknown} (expected {shape})")
    for name, kind in allowed.items():
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise _HttpError(
                400, "bad_request", f"{name}: expected a {kind.__name__} or null, got {value!r:.80}"
            )
    return data


def _priority(request: Request) -> int:
    """A trigger's ``?priority=`` (0 when absent); its range is the engine's to check."""
    raw = request.query_params.get("priority")
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise _HttpError(400, "bad_request", "priority: expected an integer") from None


def _json_param(request: Request, name: str) -> Any:
    """A query parameter holding JSON (``?where=``, ``?search_attributes=``), or None."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _HttpError(400, "bad_request", f"{name}: expected JSON") from None


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and (not key or len(key) > _MAX_KEY):
        raise _HttpError(
            400, "bad_request", f"Idempotency-Key: expected 1 to {_MAX_KEY} characters"
        )
    return key
