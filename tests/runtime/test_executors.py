"""``Engine(executor=...)``: names and instances of the ``af.Executor`` protocol, bad values
refused at the boundary, and an executor written outside the engine (a transport on a
``concurrent.futures`` thread pool) running steps with the engine's bookkeeping: results,
``ctx.steps``, a timeout counted from the start, and a cancel; written with the public
``actorflow.executors`` names only."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest

import actorflow as af
from actorflow.executors import RemoteTransport, Task, TransportHost, run_here
from tests.conftest import wait_until


class FuturesTransport(RemoteTransport):
    """Runs each task on a thread pool, as a third-party executor would."""

    where = "futures"
    halted = "abandoned"

    def __init__(self, core: TransportHost, threads: int) -> None:
        super().__init__(core)
        self.pool = concurrent.futures.ThreadPoolExecutor(threads)
        self.halted_tasks: list[str] = []

    def send(self, task: Task, body: tuple[Any, ...]) -> Any:
        future = self.pool.submit(self._run, task, body)
        future.add_done_callback(lambda f: self.core.tell_finished(task.id, f.result()))
        return future

    def _run(self, task: Task, body: tuple[Any, ...]) -> Any:
        return run_here(self, task, body, "futures")

    def halt(self, task: Task) -> None:
        self.halted_tasks.append(task.spec.step)
        task.handle.cancel()

    def worker_count(self) -> int:
        return 3

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class FuturesExecutor:
    name = "futures"

    def __init__(self) -> None:
        self.transports: list[FuturesTransport] = []

    def transport(self, core: TransportHost) -> FuturesTransport:
        t = FuturesTransport(core, 3)
        self.transports.append(t)
        return t


release = threading.Event()


def first(ctx: Any) -> int:
    return int(ctx.payload["n"]) + 1


def second(ctx: Any) -> int:
    return int(ctx.steps["first"].output) * 10


def hang(ctx: Any) -> None:
    release.wait(30)


def test_names_and_instances_are_executors() -> None:
    for value, name in [
        (None, "process"),
        ("process", "process"),
        ("inline", "inline"),
        (af.ProcessExecutor(), "process"),
        (af.InlineExecutor(2), "inline"),
        (FuturesExecutor(), "futures"),
    ]:
        engine = af.Engine(store="memory", executor=value, workers=1)
        assert engine._executor.name == name
    assert isinstance(af.ProcessExecutor(), af.Executor)
    assert isinstance(FuturesExecutor(), af.Executor)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "executor: expected a name"),
        ("threads", "executor: expected one of 'process', 'inline', 'ray'"),
        ("dask", "'dask' needs its cluster"),
        (object(), "executor: expected a name"),
    ],
)
def test_a_bad_executor_is_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        af.Engine(store="memory", executor=value)


def test_inline_executor_threads_are_checked() -> None:
    with pytest.raises(ValueError, match="InlineExecutor workers"):
        af.InlineExecutor(0)


def test_an_outside_executor_runs_steps_with_the_engines_bookkeeping() -> None:
    executor = FuturesExecutor()
    engine = af.Engine(store="memory", executor=executor)
    engine.define("two").step("first", first).step("second", second)
    engine.define("hung").step("hang", hang, timeout=0.5)
    engine.define("held").step("hang", hang)
    release.clear()
    with engine:
        assert engine.trigger("two", {"n": 4}).result(timeout=30) == 50
        assert engine.health()["checks"]["workers"] == {
            "ok": True,
            "alive": 3,
            "executor": "futures",
        }
        # The timeout counts from the start and halts the task through the transport.
        with pytest.raises(af.StepTimeout, match="abandoned"):
            engine.trigger("hung", {}).result(timeout=30)
        transport = executor.transports[-1]
        assert transport.halted_tasks == ["hang"]
        # A cancel halts a running step too.
        run = engine.trigger("held", {})
        wait_until(lambda: engine.statistics()["busy_workers"] >= 1, timeout=10)
        run.cancel()
        with pytest.raises(af.RunCancelled):
            run.result(timeout=30)
        wait_until(lambda: transport.halted_tasks == ["hang", "hang"], timeout=10)
        release.set()  # the abandoned threads end; their late outcomes are dropped
        assert engine.trigger("two", {"n": 1}).result(timeout=30) == 20
