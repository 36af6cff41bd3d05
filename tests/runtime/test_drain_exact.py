"""Draining is exact: a step that was queued but never started when the engine stopped is no
attempt (not interrupted, not counted towards max_interruptions); a step that started and was
cut off by the stop is one interrupted attempt.

Each test holds the only worker with a step that waits for a file, queues more work behind it,
stops the engine with a short drain, and starts a new engine on the same store (real worker
processes, or inline threads, or a Dask cluster; a real LMDB store in a temporary directory).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import actorflow as af
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from tests import code_steps as cs
from tests import steps
from tests.conftest import wait_until

MakeEngine = Callable[..., af.Engine]


def hold(log: str, marker: str) -> str:
    """A code workflow's step: say it started, then wait for ``marker`` to exist."""
    with open(log, "a") as f:
        f.write(f"hold {os.getpid()}\n")
    while not Path(marker).exists():
        time.sleep(0.01)
    return "held"


def _attempt(run: af.RunHandle, path: str) -> int:
    try:
        return run.inspect().step(path).attempt
    except KeyError:
        return 0  # not recorded yet


def _statuses(engine: af.Engine, run_id: str, path: str) -> tuple[list[str], list[int]]:
    step = engine.inspect(run_id).step(path)
    return [a.status for a in step.attempts], [a.attempt for a in step.attempts]


def _graph(engine: af.Engine) -> None:
    engine.define("hold").step("hold", steps.wait_for_marker)
    engine.define("quick").step("q", steps.slow)


def _started(log: Path, name: str) -> Callable[[], bool]:
    return lambda: (
        log.exists() and any(line.split()[0] == name for line in log.read_text().splitlines())
    )


def _hold_and_queue(
    engine: af.Engine, tmp_path: Path, queued: int = 3
) -> tuple[af.RunHandle, list[af.RunHandle]]:
    """A run whose step holds the only worker, and ``queued`` runs whose steps wait behind."""
    log, marker = tmp_path / "exec.log", tmp_path / "release"
    held = engine.trigger("hold", {"marker": str(marker), "log": str(log)})
    wait_until(_started(log, "hold"), timeout=60)
    waiting = [engine.trigger("quick", {"sleep": 0, "log": str(log)}) for _ in range(queued)]
    for run in waiting:  # recorded as dispatched: they wait for the worker
        wait_until(lambda r=run: _attempt(r, "q") == 1)
    return held, waiting


def _restart(make_engine: MakeEngine, tmp_path: Path, **settings: Any) -> af.Engine:
    (tmp_path / "release").touch()  # the held step now returns at once
    engine = make_engine(**settings)
    _graph(engine)
    return engine


@pytest.mark.parametrize(
    ("executor", "drain"), [("process", True), ("inline", True), ("process", False)]
)
def test_queued_steps_that_never_started_are_no_attempt_and_the_held_one_is_interrupted(
    make_engine: MakeEngine, tmp_path: Path, executor: str, drain: bool
) -> None:
    settings: dict[str, Any] = {"workers": 1}
    if executor == "inline":
        settings["executor"] = "inline"
    engine = make_engine(**settings)
    _graph(engine)
    engine.start()
    held, waiting = _hold_and_queue(engine, tmp_path)
    engine.stop(drain=drain, timeout=0.5)

    engine = _restart(make_engine, tmp_path, **settings)
    with engine:
        assert engine.run(held.id).result(timeout=60) == "released"
        for run in waiting:
            assert engine.run(run.id).result(timeout=60) == "slow done"
        assert _statuses(engine, held.id, "hold") == (["interrupted", "succeeded"], [1, 2])
        for run in waiting:
            assert _statuses(engine, run.id, "q") == (["succeeded"], [1])
    lines = (tmp_path / "exec.log").read_text().splitlines()
    assert sorted(line.rsplit(" ", 1)[0] for line in lines if line.startswith("q ")) == [
        "q 1"
    ] * len(waiting)  # each ran once, as its first attempt


def test_with_max_interruptions_1_a_step_that_never_started_is_not_failed(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine(workers=1, max_interruptions=1)
    _graph(engine)
    engine.start()
    held, waiting = _hold_and_queue(engine, tmp_path, queued=2)
    engine.stop(drain=True, timeout=0.5)

    engine = _restart(make_engine, tmp_path, workers=1, max_interruptions=1)
    with engine:
        for run in waiting:
            assert engine.run(run.id).result(timeout=60) == "slow done"
            assert _statuses(engine, run.id, "q") == (["succeeded"], [1])
        # The step that did start was interrupted once: that is the limit, it is not run again.
        with pytest.raises(af.StepFailed, match="max_interruptions=1"):
            engine.run(held.id).result(timeout=60)
        assert _statuses(engine, held.id, "hold") == (["interrupted"], [1])


def _chunk_records(data_dir: Path) -> list[bytes]:
    store = LmdbStore(data_dir, read_only=True)
    try:
        return [key for key, _ in store.scan(K.VALUES) if b"#chunk/" in key]
    finally:
        store.close()


def test_for_each_chunks_that_never_started_go_out_again_as_first_attempts(
    make_engine: MakeEngine, tmp_path: Path, data_dir: Path
) -> None:
    def define(engine: af.Engine) -> None:
        _graph(engine)
        engine.define("fan").for_each(
            "items", lambda ctx: list(range(ctx.payload["n"])), steps.tiny_double
        )

    engine = make_engine(workers=1)
    define(engine)
    engine.start()
    engine.trigger("fan", {"n": 20}).result(timeout=60)  # the step is known to be tiny
    held, _ = _hold_and_queue(engine, tmp_path, queued=0)
    fan = engine.trigger("fan", {"n": 40})  # its items go out in chunks, behind the held step
    wait_until(lambda: fan.inspect().step("items").items.get("total") == 40)
    engine.stop(drain=True, timeout=0.5)
    assert _chunk_records(data_dir)  # the items were sent in chunks, which never started

    (tmp_path / "release").touch()
    engine = make_engine(workers=1)
    define(engine)
    with engine:
        assert engine.run(fan.id).result(timeout=60) == [2 * i for i in range(40)]
        for i in range(40):
            assert _statuses(engine, fan.id, f"items[{i}]/tiny_double") == (["succeeded"], [1])
        assert engine.run(held.id).result(timeout=60) == "released"
        assert _statuses(engine, held.id, "hold") == (["interrupted", "succeeded"], [1, 2])


def _code(engine: af.Engine) -> None:
    @engine.workflow("holder")
    async def holder(ctx: af.WorkflowContext, log: str, marker: str) -> str:
        return str(await ctx.step("hold", hold, log, marker))

    @engine.workflow("stepper")
    async def stepper(ctx: af.WorkflowContext, log: str) -> Any:
        return await ctx.step("work", cs.logged, log, "work", "done")

    @engine.workflow("mapper")
    async def mapper(ctx: af.WorkflowContext) -> Any:
        return await ctx.map("sq", cs.square, [1, 2, 3])


def test_code_steps_and_map_items_that_never_started_are_no_attempt(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log, marker = tmp_path / "exec.log", tmp_path / "release"
    engine = make_engine(workers=1, max_interruptions=1)
    _code(engine)
    engine.start()
    held = engine.trigger("holder", str(log), str(marker))
    wait_until(_started(log, "hold"), timeout=60)
    step = engine.trigger("stepper", str(log))
    mapped = engine.trigger("mapper")
    wait_until(lambda: _attempt(step, "work") == 1)
    wait_until(lambda: all(_attempt(mapped, f"sq[{i}]") == 1 for i in range(3)))
    engine.stop(drain=True, timeout=0.5)

    marker.touch()
    engine = make_engine(workers=1, max_interruptions=1)
    _code(engine)
    with engine:
        assert engine.run(step.id).result(timeout=60) == "done"
        assert engine.run(mapped.id).result(timeout=60) == [1, 4, 9]
        assert _statuses(engine, step.id, "work") == (["succeeded"], [1])
        for i in range(3):
            assert _statuses(engine, mapped.id, f"sq[{i}]") == (["succeeded"], [1])
        with pytest.raises(af.StepFailed, match="max_interruptions=1"):
            engine.run(held.id).result(timeout=60)
        assert _statuses(engine, held.id, "hold") == (["interrupted"], [1])
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["hold", "work"]


def test_on_dask_queued_steps_that_never_started_are_no_attempt(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        settings = {"executor": af.DaskExecutor(cluster=cluster)}
        engine = make_engine(**settings)
        _graph(engine)
        engine.start()
        held, waiting = _hold_and_queue(engine, tmp_path, queued=2)
        engine.stop(drain=True, timeout=0.5)

        engine = _restart(make_engine, tmp_path, **settings)
        with engine:
            for run in waiting:
                assert engine.run(run.id).result(timeout=60) == "slow done"
                assert _statuses(engine, run.id, "q") == (["succeeded"], [1])
            assert engine.run(held.id).result(timeout=60) == "released"
            assert _statuses(engine, held.id, "hold") == (["interrupted", "succeeded"], [1, 2])


def test_tasks_prefetched_into_a_worker_that_never_started_are_no_attempt(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log, marker, open_ = tmp_path / "exec.log", tmp_path / "release", tmp_path / "open"
    open_.touch()
    engine = make_engine(workers=1)
    _graph(engine)
    engine.start()
    for _ in range(5):  # the step is learnt to be short: tasks queue inside its worker
        engine.trigger("hold", {"marker": str(open_)}).result(timeout=60)
    held = engine.trigger("hold", {"marker": str(marker), "log": str(log)})
    wait_until(_started(log, "hold"), timeout=60)
    sent = engine.statistics()["pool"]["dispatched"]
    behind = [engine.trigger("hold", {"marker": str(open_)}) for _ in range(3)]
    wait_until(lambda: engine.statistics()["pool"]["dispatched"] == sent + 3)  # prefetched
    engine.stop(drain=True, timeout=0.5)

    engine = _restart(make_engine, tmp_path, workers=1)
    with engine:
        for run in behind:
            assert engine.run(run.id).result(timeout=60) == "released"
            assert _statuses(engine, run.id, "hold") == (["succeeded"], [1])
        assert engine.run(held.id).result(timeout=60) == "released"
        assert _statuses(engine, held.id, "hold") == (["interrupted", "succeeded"], [1, 2])


def test_a_step_that_ends_as_the_engine_stops_is_recorded_and_its_successor_is_no_attempt(
    make_engine: MakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first step ends while the engine stops (in the drain, or in the kill grace after
    it): its result is kept, and the next step, recorded but never started, is no attempt."""
    log, marker = tmp_path / "exec.log", tmp_path / "release"
    engine = make_engine(workers=1, kill_grace=10)
    engine.define("two").step("first", steps.wait_for_marker).step("second", steps.shout)
    engine.start()
    run = engine.trigger("two", {"marker": str(marker), "log": str(log)})
    wait_until(_started(log, "first"), timeout=60)
    stopper = threading.Thread(target=engine.stop, kwargs={"drain": True, "timeout": 0.2})
    stopper.start()
    # Past the drain's timeout, in the kill grace: the step ends while its worker is told
    # to stop (the drain itself is covered above).
    wait_until(lambda: "drain did not finish" in caplog.text, timeout=60)
    marker.touch()
    stopper.join(60)

    engine = make_engine(workers=1)
    engine.define("two").step("first", steps.wait_for_marker).step("second", steps.shout)
    with engine:
        assert engine.run(run.id).result(timeout=60) == "RELEASED"
        assert _statuses(engine, run.id, "first") == (["succeeded"], [1])
        assert _statuses(engine, run.id, "second") == (["succeeded"], [1])
    assert [line.split()[:2] for line in log.read_text().splitlines()] == [
        ["first", "1"],
        ["second", "1"],
    ]


def test_tasks_the_stopped_dispatcher_cannot_take_are_marked_never_started(
    tmp_path: Path,
) -> None:
    from actorflow.definition import function_ref
    from actorflow.runtime.kernel._inbox import Actor
    from actorflow.runtime.kernel._messages import TaskSpec, Write
    from actorflow.runtime.persistence._writer import StoreWriter
    from actorflow.store._records import load_record

    stopped = Actor.start()
    stopped.stop()  # what the writer meets at the engine's stop: the dispatcher is gone
    store = LmdbStore(tmp_path / "db")
    targets = SimpleNamespace(dispatcher=stopped, scheduler=stopped)
    writer = StoreWriter.start(store, 4096, False, lambda exc: None, targets)
    task = TaskSpec("r1", "s", 3, "w", function_ref(steps.noop), b"Jnull", None, None)
    done: Future[None] = Future()
    record = (K.STEPS, K.step_key("r1", "s"), b"{}")
    writer.tell(Write([record], dispatch=[task], then=(lambda: done.set_result(None),)))
    done.result(timeout=10)
    writer.stop()
    try:
        raw = store.get(K.VALUES, K.unstarted_key("r1", "s"))
        assert raw is not None and load_record(raw, "marker") == {"attempt": 3}
    finally:
        store.close()
