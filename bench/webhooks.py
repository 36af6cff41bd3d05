"""B7: webhook triggers per second on loopback, each run durable before its 202.

The server runs in its own process (``python -m bench.webhooks serve``): uvicorn on uvloop
with httptools, serving either the engine's ASGI app (durability "sync": every accepted request
is a run recorded and fsynced before the answer) or, as the baseline of the same run, a bare
Starlette endpoint that parses the JSON body and answers 202 without recording anything. The
load generator is a small asyncio client over raw keep-alive connections (an HTTP client
library would cost more CPU than the server it measures on two cores). After the load, the
store is opened read-only and the runs are counted: every accepted request must be a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

__all__ = ["webhook_head_cost", "webhook_throughput"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _app(mode: str, data_dir: str) -> Any:
    if mode == "bare":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def hook(request: Request) -> Response:
            orjson.loads(await request.body())
            return Response(b'{"run_id":"-"}', 202, media_type="application/json")

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    import actorflow as af

    engine = af.Engine(data_dir=data_dir, workers=1, durability="sync")
    engine.define("hook").step("accept", _accept).on_webhook("/hook")
    return engine.asgi()


def _accept(ctx: Any) -> Any:
    return ctx.payload["n"]


def _serve(mode: str, port: int, data_dir: str) -> None:
    import uvicorn

    uvicorn.run(
        _app(mode, data_dir),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


async def _load(port: int, total: int, connections: int) -> tuple[int, float]:
    """Send ``total`` POSTs over ``connections`` keep-alive connections; (accepted, seconds)."""
    accepted = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in counter:
                body = orjson.dumps({"n": n})
                writer.write(
                    b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 202"):
                    accepted += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return accepted, time.perf_counter() - started


def _wait_up(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("benchmark server did not start")


def _one(mode: str, root: Path, total: int, connections: int) -> tuple[float, int, int]:
    """(accepted requests/s, accepted, runs recorded) for one server process."""
    port = _free_port()
    data_dir = root / f"b7-{mode}-{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.webhooks", "serve", mode, str(port), str(data_dir)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        _wait_up(port)
        import uvloop

        asyncio.run(_load(port, min(500, total), connections))  # warm up
        accepted, seconds = uvloop.run(_load(port, total, connections))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    recorded = -1
    if mode == "engine":
        from actorflow.store import LmdbStore
        from actorflow.store import _keys as K

        store = LmdbStore(data_dir, read_only=True)
        try:
            recorded = len(store.scan(K.INDEX, K.workflow_index_prefix("hook")))
        finally:
            store.close()
    return accepted / seconds, accepted, recorded


def webhook_throughput(root: Path, total: int, connections: int, reps: int) -> dict[str, Any]:
    """B7 figures: the engine's and the bare endpoint's accepted requests per second."""
    bare = max(_one("bare", root, total, connections)[0] for _ in range(reps))
    best = (0.0, 0, 0)
    for _ in range(reps):
        figures = _one("engine", root, total, connections)
        if figures[0] > best[0]:
            best = figures
    rate, accepted, recorded = best
    warmup = min(500, total)
    return {
        "engine_req_s": rate,
        "bare_req_s": bare,
        "ratio": rate / bare,
        "accepted": accepted,
        # Every accepted request (the warm-up's too) must be a recorded run.
        "runs_recorded": recorded,
        "all_recorded": recorded == accepted + warmup,
        "connections": connections,
    }


def _cpu(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)  # this process's threads; its workers excluded


def webhook_head_cost(root: Path, total: int, connections: int) -> dict[str, Any]:
    """B18's webhook row: the server process's CPU per accepted request and its run.

    Taken from the first request of the measured load until the process is idle again
    (its runs finished: under 2% of a core for 0.5 s), after a warm-up load.
    """
    import psutil

    port = _free_port()
    data_dir = root / f"b18-hook-{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.webhooks", "serve", "engine", str(port), str(data_dir)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        _wait_up(port)
        server = psutil.Process(proc.pid)
        asyncio.run(_load(port, min(500, total), connections))  # warm up
        _idle(server)
        cpu = _cpu(server)
        accepted, seconds = asyncio.run(_load(port, total, connections))
        _idle(server)
        cpu = _cpu(server) - cpu
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    per = cpu / max(accepted, 1)
    return {
        "items": accepted,
        "head_cpu_s": cpu,
        "head_us_per_item": per * 1e6,
        "ceiling_items_s": 1 / per if per else float("inf"),
        "load_s": seconds,
    }


def _idle(proc: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last = _cpu(proc)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu(proc)
        if now - last < 0.01:
            return
        last = now
    raise RuntimeError("the webhook server did not become idle")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("mode", choices=["engine", "bare"])
    serve.add_argument("port", type=int)
    serve.add_argument("data_dir")
    run = sub.add_parser("run")
    run.add_argument("--requests", type=int, default=10_000)
    run.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if args.cmd == "serve":
        _serve(args.mode, args.port, args.data_dir)
        return
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="actorflow-b7-"))
    print(orjson.dumps(webhook_throughput(root, args.requests, args.connections, 1)).decode())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
