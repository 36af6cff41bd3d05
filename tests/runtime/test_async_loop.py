"""The async API never blocks the event loop: no store read, commit wait or actor ask on it.

Measured as a benchmark (bench B16: the heartbeat's lag under 10,000 triggers and waits);
tested here as what it comes from: which thread touches the store, waits for a promise or
asks an actor, for every ``*_async`` call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

import actorflow as af
from actorflow.runtime.kernel._promise import Promise
from actorflow.store import LmdbStore


class RecordingStore:
    """A real LMDB store that notes the thread of every call made on it."""

    def __init__(self, inner: Any, threads: set[int]) -> None:
        self.inner = inner
        self._threads = threads

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value):
            return value
        threads = self._threads

        def call(*args: Any, **kwargs: Any) -> Any:
            threads.add(threading.get_ident())
            return value(*args, **kwargs)

        return call


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, set[int]]]:
    """Threads that waited on an unfinished promise, or asked an actor for an answer."""
    seen: dict[str, set[int]] = {"promise": set(), "ask": set(), "store": set()}
    result, get = Promise.result, pykka.ThreadingFuture.get

    def promise_result(self: Promise[Any], timeout: float | None = None) -> Any:
        if not self.done():
            seen["promise"].add(threading.get_ident())
        return result(self, timeout)

    def future_get(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen["ask"].add(threading.get_ident())
        return get(self, *args, **kwargs)

    monkeypatch.setattr(Promise, "result", promise_result)
    monkeypatch.setattr(pykka.ThreadingFuture, "get", future_get)
    yield seen


def test_no_async_call_touches_the_store_or_waits_on_the_loop_thread(
    data_dir: Path, blocked: dict[str, set[int]]
) -> None:
    engine = af.Engine(store=RecordingStore(LmdbStore(data_dir), blocked["store"]), workers=1)
    engine.define("double").step("double", lambda ctx: ctx.payload * 2)
    engine.define("approve").human_in_the_loop("ok").step("done", lambda ctx: ctx.last)
    engine.define("event").wait_for_event("paid")
    engine.define("boom").step("boom", _boom)

    @engine.workflow("counter")
    async def counter(ctx: Any) -> int:
        seen: list[Any] = []
        ctx.on_query("seen", lambda: len(seen))
        ctx.on_signal("add", seen.append)

        async def bump(n: int) -> int:
            seen.append(n)
            return len(seen)

        ctx.on_update("bump", bump)
        await ctx.wait_for_signal("stop")
        return len(seen)

    loop_threads: set[int] = set()

    async def main() -> None:
        loop_threads.add(threading.get_ident())
        runs = await asyncio.gather(*(engine.trigger_async("double", i) for i in range(200)))
        assert await asyncio.gather(*(r.result_async(timeout=60) for r in runs)) == [
            2 * i for i in range(200)
        ]
        c = await engine.trigger_async("counter")
        assert await c.signal_async("add", 1) is True
        assert await c.update_async("bump", 2) == 2
        assert await c.query_async("seen") == 2
        await c.signal_async("stop")
        assert await c.result_async(timeout=60) == 2
        approval = await engine.trigger_async("approve")
        pending: list[Any] = []
        while not pending:  # (the sync API, on a thread: off this loop)
            pending = await asyncio.to_thread(engine.approvals, run_id=approval.id)
        token = pending[0]["token"]
        await engine.resume_async(token, "yes")
        assert await approval.result_async(timeout=60) == "yes"
        waiting = await engine.trigger_async("event")
        while await engine.publish_async("paid", 5) == 0:
            await asyncio.sleep(0.02)
        assert await waiting.result_async(timeout=60) == 5
        stuck = await engine.trigger_async("approve")
        assert await stuck.cancel_async("no") is True
        failed = await engine.trigger_async("boom")
        with pytest.raises(af.StepFailed):
            await failed.result_async(timeout=60)
        retried = await engine.retry_async(failed.id)
        with pytest.raises(af.StepFailed):
            await retried.result_async(timeout=60)
        with pytest.raises(af.ResultTimeout):
            await (await engine.trigger_async("approve")).result_async(timeout=0.2)
        with pytest.raises(af.WorkflowNotFound):
            await engine.trigger_async("nope")

    # The loop runs on a thread of its own: this one starts the engine (which reads the store).
    errors: list[BaseException] = []

    def run_loop() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    with engine:
        thread = threading.Thread(target=run_loop)
        thread.start()
        thread.join(120)
    if errors:
        raise errors[0]
    (loop,) = loop_threads
    assert blocked["store"], "the recorder saw no store call at all"
    assert loop not in blocked["store"], "an async call read or wrote the store on the loop"
    assert loop not in blocked["promise"], "an async call waited for a promise on the loop"
    assert loop not in blocked["ask"], "an async call asked an actor on the loop"


def _boom(ctx: Any) -> None:
    raise ValueError("boom")


def test_engines_share_the_offload_threads(tmp_path: Path) -> None:
    """Each engine that used the async API kept two threads of its own for good."""
    for i in range(3):
        engine = af.Engine(data_dir=tmp_path / f"store{i}", workers=1, durability="fast")
        engine.define("double").step("double", lambda ctx: ctx.payload * 2)

        async def once(engine: af.Engine = engine) -> Any:
            run = await engine.trigger_async("double", 21)
            return await run.result_async(timeout=60)

        with engine:
            assert asyncio.run(once()) == 42
    offload = [t for t in threading.enumerate() if t.name.startswith("actorflow-async-")]
    assert len(offload) == 2, [t.name for t in offload]
