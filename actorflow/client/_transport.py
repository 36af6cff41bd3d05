"""The client's HTTP half: one request to the engine's REST API, its answer, and its errors.

A :class:`Call` says what to send (method, path, JSON body, query, headers, how long the
server may hold it); :class:`Transport` sends it with httpx, sync or async, and returns a
:class:`Reply` for a 2xx answer. Anything else raises an exception of the actorflow tree
(:func:`error_for`), carrying the server's detail and, as ``exc.http``, the
:class:`HttpAnswer` it came from. httpx is imported when a transport is made, never before:
``import actorflow`` does not load it.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from actorflow._extras import require
from actorflow.errors import (
    AccessDenied,
    ActorflowError,
    ApprovalAlreadyResolved,
    ApprovalExpired,
    ApprovalNotFound,
    ClientError,
    ConfigError,
    EngineNotRunning,
    EngineUnreachable,
    InvalidPayload,
    RemoteError,
    ResultTimeout,
    RunNotFound,
    ScheduleNotFound,
    StoreFull,
    WorkflowNotFound,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CLIENT_HEADER",
    "Call",
    "HttpAnswer",
    "Reply",
    "Transport",
    "answer_of",
    "check_url",
    "error_for",
    "quoted",
]

#: Sent with every request: the API takes state changes only from programs that send JSON
#: or this header (``_origin.HostGuard``); the client sends both.
CLIENT_HEADER: Final = "X-Actorflow-Client"

_E = TypeVar("_E", bound=BaseException)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """The HTTP answer an error of :class:`~actorflow.Client` came from (``exc.http``).

    Attributes:
        method: the request's method.
        path: the request's path, below the client's URL.
        status: the HTTP status.
        error: the API's error code (``not_found``, ``unauthorized``...), or ``http_error``
            when the answer was not the API's JSON.
        detail: the API's message (or the start of the answer's text).
    """

    method: str
    path: str
    status: int
    error: str
    detail: str


@dataclass(frozen=True, slots=True)
class Call:
    """One request.

    Attributes:
        method: ``GET`` or ``POST``.
        path: below the client's URL, its parts already quoted (:func:`quoted`).
        body: the JSON body (POST only; None sends JSON ``null``).
        params: the query string.
        headers: more headers (``Idempotency-Key``).
        wait: seconds the server may hold the request before answering (the long-poll),
            added to the client's timeout for the answer.
        timeout: this request's timeout instead of the client's (``...``: the client's).
        late: with ``timeout``: the message of the :class:`ResultTimeout` raised when no
            answer comes in time (an update that runs on), instead of EngineUnreachable.
        missing: what a 404 of the API means: ``("run", id)``, ``("workflow", id)``,
            ``("approval", token)`` or ``("schedule", name)``.
        accept: statuses besides 2xx answered as a :class:`Reply` (``/readyz``'s 503).
    """

    method: str
    path: str
    body: Any = None
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    wait: float = 0.0
    timeout: Any = ...
    late: str = ""
    missing: tuple[str, str] | None = None
    accept: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Reply:
    """A 2xx answer: its status, its JSON, its headers (lower-case names)."""

    status: int
    data: Any
    headers: Mapping[str, str]


def quoted(part: str) -> str:
    """``part`` as one path segment (``/`` and every reserved character escaped)."""
    return urllib.parse.quote(part, safe="")


def check_url(url: Any) -> str:
    """The engine's base URL without a trailing slash.

    A path is kept: an engine mounted under ``/flows`` is ``http://host:8080/flows``.

    Raises:
        ClientError: not an http(s) URL with a host (and a valid port).
    """
    if isinstance(url, str):
        text = url.strip().rstrip("/")
        try:
            parts = urllib.parse.urlsplit(text)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError:
            ok = False
        if ok and not parts.query and not parts.fragment:
            return text
    raise ClientError(
        f"url: expected the engine's http(s) URL such as http://127.0.0.1:8080, got {url!r}"
    )


def answer_of(exc: BaseException) -> HttpAnswer | None:
    """The HTTP answer ``exc`` was raised for, if it was raised for one."""
    found = getattr(exc, "http", None)
    return found if isinstance(found, HttpAnswer) else None


def _with(exc: _E, answer: HttpAnswer) -> _E:
    exc.http = answer  # type: ignore[attr-defined]
    return exc


def error_for(call: Call, status: int, body: bytes, token_sent: bool) -> ActorflowError:
    """The exception for an answer of ``status`` (not 2xx) to ``call``, with its detail.

    The API's errors are JSON ``{"error": code, "detail": message}``; each maps onto the
    exception the engine raised for it (see docs/client.md for the table).
    """
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    ours = isinstance(data, dict) and isinstance(data.get("detail"), str)
    code = str(data.get("error", "http_error")) if ours and data else "http_error"
    detail = str(data["detail"]) if ours and data else body[:200].decode("utf-8", "replace")
    answer = HttpAnswer(call.method, call.path, status, code, detail)
    where = f"{call.method} {call.path}"
    exc: ActorflowError
    if status in (401, 403):
        if status == 401:
            detail += (
                "; this client sent no token: af.Client(url, token=...)"
                if not token_sent
                else "; the token this client sent is not the engine's API token"
            )
        exc = AccessDenied(detail, status)
    elif not ours:
        hint = (
            ": no such route (is this URL an actorflow engine's API, of a version that has it?)"
            if status == 404
            else ""
        )
        exc = ActorflowError(f"{where}: {status} {detail.strip() or '(no body)'}{hint}")
    elif status == 404 and code == "not_found":
        exc = _not_found(call.missing, detail)
    elif status == 409 and code == "approval":
        # One code for both: the engine's message tells them apart.
        expired = " expired at " in detail
        exc = ApprovalExpired(detail) if expired else ApprovalAlreadyResolved(detail)
    elif status == 413:
        exc = InvalidPayload(detail)
    elif status == 422 and code in ("query_failed", "update_failed"):
        kind, _, message = detail.partition(": ")
        exc = RemoteError(kind, message)  # what the handler raised, by name
    elif status == 503:
        exc = EngineNotRunning(detail)
    elif status == 507:
        exc = StoreFull(detail)
    elif status == 501:
        exc = ConfigError(detail)  # the server lacks an extra
    elif 400 <= status < 500:
        exc = ClientError(detail)
    else:
        exc = ActorflowError(f"{where}: {status} {detail}")
    return _with(exc, answer)


def _not_found(missing: tuple[str, str] | None, detail: str) -> ActorflowError:
    exc: ActorflowError
    kind, name = missing or ("", "")
    if kind == "run":
        exc = RunNotFound(name)
    elif kind == "workflow":
        exc = WorkflowNotFound(name)
    elif kind == "approval":
        exc = ApprovalNotFound(detail)
    elif kind == "schedule":
        exc = ScheduleNotFound(name)
    else:
        return ClientError(detail)
    exc.args = (detail,)  # the server's words (they list the workflows it knows)
    return exc


class Transport:
    """Sends :class:`Call` s to one engine's API, sync or async, over pooled connections.

    Args:
        url: the engine's base URL.
        token: the API token, sent as ``Authorization: Bearer``.
        timeout: seconds to wait for each answer (None: no limit).
        headers: more headers for every request.
        options: more keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``.
        own_async: keep one ``httpx.AsyncClient`` (an async client's, used on one loop);
            else each async request has a client of its own (a sync client's handles,
            awaited on whatever loop).

    Raises:
        MissingExtra: httpx is not installed (``pip install 'actorflow[client]'``).
        ClientError: a bad URL or timeout.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float | None,
        headers: Mapping[str, str] | None,
        options: Mapping[str, Any] | None,
        own_async: bool,
    ) -> None:
        self._httpx = require("httpx", "af.Client")
        self.url = check_url(url)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ClientError(f"timeout: expected seconds > 0 or None, got {timeout!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise ClientError("token: expected the API token (a non-empty string) or None")
        self.timeout = None if timeout is None else float(timeout)
        self.token_sent = token is not None
        from actorflow._version import __version__

        self._headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            CLIENT_HEADER: "python",
            "User-Agent": f"actorflow-client/{__version__}",
            **(headers or {}),
        }
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._options = dict(options or {})
        self._own_async = own_async
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._lock = threading.Lock()  # threads share a client: one pool, made once

    def _settings(self) -> dict[str, Any]:
        return {
            "base_url": self.url,
            "headers": self._headers,
            "timeout": self.timeout,
            **self._options,
        }

    def _request(self, call: Call) -> dict[str, Any]:
        timeout = self.timeout if call.timeout is ... else call.timeout
        if timeout is not None and call.wait:
            timeout += call.wait
        out: dict[str, Any] = {
            "method": call.method,
            "url": call.path,
            "params": dict(call.params) or None,
            "headers": dict(call.headers) or None,
            "timeout": timeout,
        }
        if call.method != "GET":
            try:
                out["content"] = orjson.dumps(call.body)
            except TypeError as exc:
                raise InvalidPayload(
                    f"{call.method} {call.path}: the body cannot be sent as JSON ({exc}); over "
                    "the API, payloads are JSON (dicts with string keys, lists, numbers, "
                    "strings, booleans, None)"
                ) from None
        return out

    def send(self, call: Call) -> Reply:
        """Send ``call`` and wait for its answer.

        Raises:
            EngineUnreachable: nothing answered (in time).
            ActorflowError: the API answered with an error (see :func:`error_for`).
        """
        request = self._request(call)
        http = self._sync
        if http is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._httpx.Client(**self._settings())
                http = self._sync
        try:
            response = http.request(**request)
        except self._httpx.TransportError as exc:
            raise self._failed(call, exc, request["timeout"]) from None
        return self._reply(call, response)

    async def asend(self, call: Call) -> Reply:
        """Awaitable twin of :meth:`send`; does not block the event loop."""
        request = self._request(call)
        try:
            if self._own_async:
                if self._async is None:
                    self._async = self._httpx.AsyncClient(**self._settings())
                response = await self._async.request(**request)
            else:
                async with self._httpx.AsyncClient(**self._settings()) as http:
                    response = await http.request(**request)
        except self._httpx.TransportError as exc:
            raise self._failed(call, exc, request["timeout"]) from None
        return self._reply(call, response)

    def _failed(self, call: Call, exc: Exception, timeout: float | None) -> ActorflowError:
        if isinstance(exc, self._httpx.TimeoutException):
            if call.late and not isinstance(exc, self._httpx.ConnectTimeout):
                return ResultTimeout(call.late)
            return EngineUnreachable(self.url, f"{call.method} {call.path}", timeout)
        reason = str(exc) or type(exc).__name__
        return EngineUnreachable(self.url, reason)

    def _reply(self, call: Call, response: httpx.Response) -> Reply:
        status = response.status_code
        body = response.content
        if not 200 <= status < 300 and status not in call.accept:
            raise error_for(call, status, body, self.token_sent)
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            raise ActorflowError(
                f"{call.method} {call.path}: {status} but not JSON: is {self.url} an actorflow "
                "engine's API?"
            ) from None
        return Reply(status, data, {k.lower(): v for k, v in response.headers.items()})

    def close(self) -> None:
        """Close the sync connections (an async client's are closed by :meth:`aclose`)."""
        with self._lock:
            http, self._sync = self._sync, None
        if http is not None:
            http.close()

    async def aclose(self) -> None:
        """Close every connection."""
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None
