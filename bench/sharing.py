"""B14-B16: several processes on one data_dir, failover under load, and the event loop's lag.

B14 multi-process: ``uvicorn --workers 4`` serving ``POST /go`` (trigger a run, await its
result: one trivial step, durability "sync") from one data_dir (1 leader, 3 followers),
against ``--workers 1`` (the leader alone) in the same run: requests per second under the
same load (a raw asyncio client over keep-alive connections, as B7). After the load, every
request's run must be in the store once: each run's result carries its request's number,
and the numbers are counted.

B15 failover: the 4-worker server under that load; the leader's process is SIGKILLed after
a second. Reported: seconds until another process holds the store's lock, the longest gap
a client connection saw between two answers (connections to the killed worker reconnect),
and the acknowledged runs lost (not completed in the store) and duplicated (two runs for a
request).

B16 loop lag: the longest delay of a 10 ms heartbeat task on the loop that runs 10,000
``trigger_async`` + ``result_async`` (started 200 per loop turn, all in flight together),
against the same pattern awaiting promises that a thread completes in bursts of 400 (the
floor of asyncio and the bridge, no engine) in the same run. Measured with the default
``collector="freeze"`` and again with ``collector="python"`` (Python's collector as it
comes, whose full collections over the in-flight heap were the longest stalls).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

__all__ = ["failover", "loop_lag", "multi_process"]

ROOT = Path(__file__).resolve().parent.parent


def _step(ctx: Any) -> Any:
    return ctx.payload["n"]


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    import actorflow as af

    engine = af.Engine(data_dir=os.environ["B14_DATA_DIR"], workers=1, durability="sync")
    engine.define("go").step("n", _step)

    async def go(request: Request) -> Response:
        data = orjson.loads(await request.body())
        run = await engine.trigger_async("go", data)
        result = await run.result_async(timeout=60)
        return Response(orjson.dumps({"run_id": run.id, "n": result}), 200)

    return Starlette(routes=[Route("/go", go, methods=["POST"])], lifespan=engine.lifespan)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app()
    raise AttributeError(name)


def _server(workers: int, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "B14_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.sharing:app",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )


class _Load:
    """Keep-alive connections posting ``/go`` until ``total`` answers (or errors) came."""

    def __init__(self, port: int, total: int, connections: int, start: int = 0) -> None:
        self.port = port
        self.counter = iter(range(start, start + total))
        self.connections = connections
        self.answers: list[tuple[int, str]] = []  # (request number, run id)
        self.errors = 0
        self.gaps: list[float] = []

    async def run(self) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(self._worker() for _ in range(self.connections)))
        return time.perf_counter() - started

    async def _worker(self) -> None:
        last = time.perf_counter()
        longest = 0.0
        n = next(self.counter, None)
        while n is not None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                while n is not None:
                    body = orjson.dumps({"n": n})
                    writer.write(
                        b"POST /go HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        b"application/json\r\nContent-Length: " + str(len(body)).encode()
                        + b"\r\n\r\n" + body
                    )  # fmt: skip
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    data = await reader.readexactly(length)
                    if head.startswith(b"HTTP/1.1 200"):
                        answer = orjson.loads(data)
                        self.answers.append((n, answer["run_id"]))
                        now = time.perf_counter()
                        longest = max(longest, now - last)
                        last = now
                    else:
                        self.errors += 1
                    n = next(self.counter, None)
            except (OSError, asyncio.IncompleteReadError):
                self.errors += 1  # the worker serving this connection died: not answered
                n = next(self.counter, None)
            finally:
                writer.close()
        self.gaps.append(longest)


def _wait_up(port: int, workers: int) -> None:
    import socket

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    time.sleep(1.0 + 0.5 * workers)  # every worker booted (followers connect)


def _stored(data_dir: Path) -> dict[str, Any]:
    """Runs in the store: their ids, statuses, and how many runs each request number has."""
    from actorflow.store import LmdbStore
    from actorflow.views import list_runs, run_outcome

    store = LmdbStore(data_dir, read_only=True)
    try:
        runs = list_runs(store, "go", None, None, None, None, None)
        numbers: Counter[int] = Counter()
        for r in runs:
            status, result, _ = run_outcome(store, r.id)
            if status.terminal and result is not None:
                numbers[int(result)] += 1
        return {
            "status": {r.id: str(r.status) for r in runs},
            "per_request": numbers,
        }
    finally:
        store.close()


def _serve_and_load(
    root: Path, workers: int, total: int, connections: int, kill_after: float | None
) -> dict[str, Any]:
    import uvloop

    from bench.webhooks import _free_port

    port = _free_port()
    data_dir = root / f"b14-{workers}-{port}"
    proc = _server(workers, port, data_dir)
    killed_at: float | None = None
    lock_taken: float | None = None
    try:
        _wait_up(port, workers)
        uvloop.run(_Load(port, min(300, total), connections, start=10_000_000).run())  # warm up
        load = _Load(port, total, connections)
        if kill_after is not None:
            old = int((data_dir / "engine.lock").read_text().strip())

            def kill() -> None:
                nonlocal killed_at, lock_taken
                time.sleep(kill_after)
                os.kill(old, signal.SIGKILL)
                killed_at = time.perf_counter()
                while time.perf_counter() - killed_at < 30:
                    text = (data_dir / "engine.lock").read_text().strip()
                    if text and int(text) != old:
                        lock_taken = time.perf_counter() - killed_at
                        return
                    time.sleep(0.005)

            killer = threading.Thread(target=kill)
            killer.start()
        seconds = uvloop.run(load.run())
        if kill_after is not None:
            killer.join(60)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    stored = _stored(data_dir)
    acknowledged = {run_id for _, run_id in load.answers}
    numbers = [n for n, _ in load.answers]
    lost = [r for r in acknowledged if stored["status"].get(r) != "completed"]
    doubled = [n for n, c in stored["per_request"].items() if c > 1]
    return {
        "req_s": len(load.answers) / seconds,
        "answered": len(load.answers),
        "errors": load.errors,
        "distinct_requests": len(set(numbers)),
        "lost": len(lost),
        "duplicated": len(doubled),
        "longest_gap_s": max(load.gaps) if load.gaps else None,
        "lock_taken_s": lock_taken,
    }


def multi_process(root: Path, total: int, connections: int, reps: int) -> dict[str, Any]:
    """B14: requests/s of 4 worker processes on one data_dir, against 1, same load."""
    one = max((_serve_and_load(root, 1, total, connections, None) for _ in range(reps)),
              key=lambda r: r["req_s"])  # fmt: skip
    four = max((_serve_and_load(root, 4, total, connections, None) for _ in range(reps)),
               key=lambda r: r["req_s"])  # fmt: skip
    return {
        "one_req_s": one["req_s"],
        "four_req_s": four["req_s"],
        "ratio": four["req_s"] / one["req_s"],
        "exactly_once": four["lost"] == 0 and four["duplicated"] == 0 and four["errors"] == 0,
        "four": four,
        "one": one,
        "connections": connections,
        "target_ratio": 0.8,
    }


def failover(root: Path, total: int, connections: int) -> dict[str, Any]:
    """B15: the leader SIGKILLed under load: takeover time, longest gap, lost and doubled."""
    result = _serve_and_load(root, 4, total, connections, kill_after=1.0)
    return {**result, "target_lock_s": 1.0}


async def _lag_of(start_one: Any, n: int, wave: int) -> float:
    lag = 0.0
    stop = False

    async def beat() -> None:
        nonlocal lag
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = max(lag, time.perf_counter() - t - 0.01)

    heart = asyncio.create_task(beat())
    await asyncio.sleep(0.05)
    tasks = []
    for i in range(0, n, wave):
        tasks.extend(asyncio.ensure_future(start_one(j)) for j in range(i, min(n, i + wave)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    stop = True
    await heart
    return lag


def loop_lag(root: Path, n: int = 10_000, wave: int = 200) -> dict[str, Any]:
    """B16: the heartbeat's longest delay under n triggers + waits, and the floor's."""
    import actorflow as af
    from actorflow.engine._handle import _value
    from actorflow.runtime.kernel._promise import Promise

    def lag_with(collector: str) -> tuple[float, float]:
        engine = af.Engine(
            data_dir=root / f"b16-{collector}", workers=2, durability="fast", collector=collector
        )
        engine.define("go").step("n", _step)

        async def one(i: int) -> None:
            run = await engine.trigger_async("go", {"n": i})
            assert await run.result_async(timeout=120) == i

        with engine:
            asyncio.run(_lag_of(one, 500, wave))  # warm up
            t = time.perf_counter()
            lag = asyncio.run(_lag_of(one, n, wave))
            return lag, time.perf_counter() - t

    pending: list[Promise[None]] = []
    lock = threading.Lock()
    done = threading.Event()

    def completer() -> None:  # bursts of 400, as group commits complete triggers
        while not done.is_set():
            time.sleep(0.002)
            with lock:
                burst, pending[:] = pending[:400], pending[400:]
            for p in burst:
                p.set_result(None)

    async def floor_one(i: int) -> None:
        for _ in range(2):  # a trigger, then a wait
            p: Promise[None] = Promise()
            with lock:
                pending.append(p)
            await _value(p)

    thread = threading.Thread(target=completer, daemon=True)
    thread.start()
    floor = asyncio.run(_lag_of(floor_one, n, wave))
    done.set()
    lag, seconds = lag_with("freeze")
    python_lag, python_seconds = lag_with("python")
    return {
        "lag_ms": lag * 1000,
        "floor_lag_ms": floor * 1000,
        "python_collector_lag_ms": python_lag * 1000,
        "runs": n,
        "seconds": seconds,
        "python_collector_seconds": python_seconds,
        "target_ms": 50,
    }
