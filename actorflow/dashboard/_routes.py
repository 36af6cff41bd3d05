"""The dashboard's routes: its page and assets, a workflow's graph, and live events (SSE)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC", "dashboard_routes"]

STATIC = Path(__file__).parent / "static"
#: Seconds between keep-alive comments on an idle event stream.
_KEEPALIVE = 15.0


def _event_json(event: Any) -> bytes:
    data = dataclasses.asdict(event)
    data["type"] = type(event).__name__
    return orjson.dumps(data, default=str)


def dashboard_routes(engine: Any, read_only: bool) -> list[Any]:
    """Routes to add to the engine's app."""

    async def index(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        response.headers["X-Actorflow-Read-Only"] = "1" if read_only else "0"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def config(request: Request) -> Response:
        return Response(
            orjson.dumps({"read_only": read_only, "workflows": engine.workflows}),
            media_type="application/json",
        )

    async def graph(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            run_id = request.query_params.get("run") or None
            data = await run_in_threadpool(engine.graph, request.path_params["workflow"], run_id)
        except Exception as exc:
            return Response(
                orjson.dumps({"error": "not_found", "detail": str(exc)}),
                status_code=404,
                media_type="application/json",
            )
        return Response(orjson.dumps(data), media_type="application/json")

    async def stream(request: Request) -> StreamingResponse:
        """Lifecycle events as server-sent events, for as long as the client listens."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)

        def deliver(event: Any) -> None:
            data = _event_json(event)

            def put() -> None:
                if not queue.full():  # a client that stopped reading loses events, not memory
                    queue.put_nowait(data)

            loop.call_soon_threadsafe(put)

        async def events() -> AsyncIterator[bytes]:
            stop = engine.subscribe(deliver)
            try:
                yield b": connected\n\n"
                while True:
                    try:
                        data = await asyncio.wait_for(queue.get(), _KEEPALIVE)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield b"data: " + data + b"\n\n"
            finally:
                stop()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return [
        Route("/", index, methods=["GET"]),
        Route("/ui/config", config, methods=["GET"]),
        Route("/api/workflows/{workflow}/graph", graph, methods=["GET"]),
        Route("/api/stream", stream, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
