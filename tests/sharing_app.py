"""Engines that share one data_dir across processes, for the leader/follower tests.

Usage: python -m tests.sharing_app DATA_DIR [ROLE] [VARIANT]

Starts an engine (``make``) on DATA_DIR, prints ``READY <role> <pid>`` and runs until
killed, or until its stdin closes (then it stops cleanly). As an ASGI app (uvicorn or
gunicorn with several workers): ``tests.sharing_app:app`` with ``SHARING_DATA_DIR`` set; it
serves the engine's API and ``POST /go`` (trigger a run and await its result).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import actorflow as af


def double(ctx: Any) -> dict[str, Any]:
    time.sleep(float(ctx.payload.get("sleep", 0)))
    log = ctx.payload.get("log")
    if log:
        with open(log, "a") as f:
            f.write(f"{ctx.run.id} {os.getpid()}\n")
    return {"n": ctx.payload["n"] * 2}


def make(data_dir: str, role: str = "auto", variant: str = "v1", **settings: Any) -> af.Engine:
    """The test engine: graph workflows with waits, and a code workflow with handlers."""
    settings.setdefault("workers", 1)
    engine = af.Engine(data_dir=data_dir, role=role, kill_grace=0.2, **settings)
    flow = engine.define("double").step("double", double)
    if variant == "v2":
        flow.step("again", double)  # a rolling deploy changed this workflow
    engine.define("approve").human_in_the_loop("ok", timeout="1h").step("done", _done)
    engine.define("event").wait_for_event("paid", key=lambda ctx: ctx.payload["order"])
    engine.define("chatty").step("talk", _talk)

    @engine.workflow("counter")
    async def counter(ctx: Any) -> int:
        seen: list[Any] = []
        ctx.on_query("seen", lambda: len(seen))
        ctx.on_signal("add", seen.append)
        await ctx.wait_for_signal("stop")
        return len(seen)

    return engine


def _done(ctx: Any) -> Any:
    return {"approved": ctx.last}


def _talk(ctx: Any) -> str:
    ctx.log.info("said on %s", ctx.run.step)
    return "said"


def main(data_dir: str, role: str = "auto", variant: str = "v1") -> None:
    engine = make(data_dir, role, variant).start()
    print(f"READY {engine.role} {os.getpid()}", flush=True)
    sys.stdin.read()  # until the test closes it (or kills this process)
    engine.stop()


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    engine = make(os.environ["SHARING_DATA_DIR"])

    async def go(request: Request) -> JSONResponse:
        data = await request.json()
        run = await engine.trigger_async("double", data)
        result = await run.result_async(timeout=60)
        return JSONResponse({"run_id": run.id, "result": result, "pid": os.getpid()})

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid(), "role": engine.role})

    return Starlette(
        routes=[
            Route("/go", go, methods=["POST"]),
            Route("/whoami", whoami, methods=["GET"]),
            Mount("/flows", engine.asgi()),
        ],
        lifespan=engine.lifespan,
    )


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first use: importing the module for `make` needs no env
        return _app()
    raise AttributeError(name)


if __name__ == "__main__":
    # Through the module's own name, so that step functions are named as in the tests
    # (a definition names its functions' modules: ``__main__`` would differ).
    from tests import sharing_app

    sharing_app.main(*sys.argv[1:])
