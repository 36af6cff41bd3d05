"""Webhooks: the raw ASGI front of the engine's app, and their signatures.

A webhook request is served here, before Starlette: its size, signature (HMAC, GitHub- and
Stripe-style), JSON body, schema and idempotency key are checked with a fraction of the
router's work per request, and the run is recorded before the 202. Everything else goes on
to the Starlette app (the REST API and the dashboard).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from actorflow.definition._triggers import WebhookSpec, validate_payload
from actorflow.errors import (
    ActorflowError,
    ClientError,
    EngineNotRunning,
    StoreFull,
)
from actorflow.triggers._lifespan import HINT, wired
from actorflow.triggers._origin import answer
from actorflow.triggers._paths import route_path, slash_redirect

if TYPE_CHECKING:
    from actorflow.engine._engine import Engine
from actorflow.triggers._requests import (
    _MAX_KEY,
    STRIPE_TOLERANCE,
    _check_length,
    _HttpError,
    _parse,
)

__all__ = ["check_signature"]

log = logging.getLogger("actorflow.http")


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
