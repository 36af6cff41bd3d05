"""Queues shared by workflows, as DBOS's (issue 24.6): ``af.Queue(name, concurrency=, ...)``.

One queue given to a graph and a code workflow limits their runs together; the limit holds
across an engine SIGKILL (the runs active before it keep their slots, the queued ones stay
queued and start in order); a queue with ``priority=True`` starts the lowest priority first.
Real workers, real LMDB, a real SIGKILL; concurrency is read from the runs' own records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.runtime._admission import Admission
from tests.conftest import sigkill_when, wait_until

MakeEngine = Callable[..., af.Engine]


def gated(ctx: Any) -> Any:
    """A graph step: wait until the gate file in the payload exists, then return the tag."""
    payload = ctx.payload
    while not Path(payload["gate"]).exists():
        time.sleep(0.01)
    return payload["tag"]


def wait_gate(gate: str, tag: str) -> str:
    """A code workflow's step: the same."""
    while not Path(gate).exists():
        time.sleep(0.01)
    return tag


async def coded(ctx: af.WorkflowContext, payload: dict[str, Any]) -> str:
    out: str = await ctx.step("work", wait_gate, payload["gate"], payload["tag"])
    return out


def define(engine: af.Engine, queue: af.Queue) -> None:
    engine.define("graph", queue=queue).step("work", gated)
    engine.workflow("code", queue=queue)(coded)


def most_at_once(engine: af.Engine, run_ids: list[str]) -> int:
    """The most runs that were active at one time, from their records' start and end."""
    edges: list[tuple[float, int]] = []
    for run_id in run_ids:
        info = engine.inspect(run_id)
        assert info.started_at is not None and info.ended_at is not None
        edges += [(info.started_at, 1), (info.ended_at, -1)]
    peak = now = 0
    for _, step in sorted(edges):  # an end before a start at the same instant
        now += step
        peak = max(peak, now)
    return peak


def test_one_queue_limits_a_graph_and_a_code_workflow_together(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    engine = make_engine(workers=4)
    define(engine, af.Queue("shared", concurrency=2))
    with engine:
        runs = [
            engine.trigger("graph" if i % 2 else "code", {"gate": str(gate), "tag": f"t{i}"})
            for i in range(8)
        ]
        wait_until(lambda: sum(r.status() == af.RunStatus.RUNNING for r in runs) == 2)
        # Four workers are free, yet two runs of the two workflows hold the queue's slots.
        assert [r.status() for r in runs].count(af.RunStatus.QUEUED) == 6
        assert [r.id for r in runs if r.status() == af.RunStatus.RUNNING] == [
            runs[0].id,
            runs[1].id,
        ]
        gate.touch()
        assert [r.result(timeout=60) for r in runs] == [f"t{i}" for i in range(8)]
        assert most_at_once(engine, [r.id for r in runs]) == 2
        # Trigger order, across both workflows: a run's start is when admission let it in,
        # not when its shard took it up (two shards can take up two admitted runs in
        # either order).
        starts = [engine.inspect(r.id).started_at for r in runs]
        assert starts == sorted(starts)


def test_the_queue_holds_its_limit_across_an_engine_sigkill(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    data_dir = tmp_path / "data"
    printed = sigkill_when(
        tmp_path,
        f"""
            import actorflow as af
            from tests.conftest import wait_until
            from tests.runtime.test_queues import define

            engine = af.Engine(data_dir={str(data_dir)!r}, workers=3)
            define(engine, af.Queue("shared", concurrency=1))
            with engine:
                runs = [
                    engine.trigger(wf, {{"gate": {str(gate)!r}, "tag": tag}})
                    for wf, tag in [("graph", "a"), ("code", "b"), ("graph", "c")]
                ]
                wait_until(lambda: runs[0].status() == af.RunStatus.RUNNING)
                print("QUEUED", ",".join(r.id for r in runs), flush=True)
                import time
                time.sleep(600)
            """,
        "QUEUED",
    )
    ids = printed.split(",")
    engine = make_engine(data_dir=data_dir, workers=3)
    define(engine, af.Queue("shared", concurrency=1))
    with engine:
        # Recovered: the first run is running again and keeps the one slot; the other two,
        # of both workflows, are still queued behind it, with three idle workers.
        wait_until(lambda: engine.inspect(ids[0]).status == af.RunStatus.RUNNING)
        time.sleep(0.3)
        assert [engine.inspect(i).status for i in ids[1:]] == [af.RunStatus.QUEUED] * 2
        gate.touch()
        assert [engine.run(i).result(timeout=60) for i in ids] == ["a", "b", "c"]
        assert most_at_once(engine, ids) == 1


def test_a_priority_queue_starts_the_lowest_priority_first_even_after_a_restart(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    data_dir = tmp_path / "data"
    queue = af.Queue("ranked", concurrency=1, priority=True)
    engine = make_engine(data_dir=data_dir, workers=2)
    define(engine, queue)
    engine.start()
    try:
        first = engine.trigger("graph", {"gate": str(gate), "tag": "first"})
        wait_until(lambda: first.status() == af.RunStatus.RUNNING)
        queued = [
            engine.trigger("code", {"gate": str(gate), "tag": tag}, priority=p)
            if i % 2
            else engine.trigger("graph", {"gate": str(gate), "tag": tag}, priority=p)
            for i, (tag, p) in enumerate([("p5", 5), ("p1", 1), ("p1-later", 1), ("p0", 0)])
        ]
        assert all(r.status() == af.RunStatus.QUEUED for r in queued)
    finally:
        engine.stop(drain=False)  # the first run's step is killed: it runs again after
    engine = make_engine(data_dir=data_dir, workers=2)
    define(engine, queue)
    with engine:
        gate.touch()
        handles = [first, *queued]
        for h in handles:
            engine.run(h.id).result(timeout=60)
        order = sorted(handles, key=lambda h: engine.inspect(h.id).started_at or 0)
        tags = [engine.run(h.id).result(timeout=5) for h in order]
        assert tags == ["first", "p0", "p1", "p1-later", "p5"]


def test_queue_options_are_checked_where_they_are_given(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    engine.define("plain").step("s", gated)
    engine.define("fifo", queue=af.Queue("fifo", concurrency=1)).step("s", gated)
    with pytest.raises(af.DefinitionError, match="one queue has one set of limits"):
        engine.define("other", queue=af.Queue("fifo", concurrency=2)).step("s", gated)
    both = af.Workflow("both", queue=af.Queue("q2"), concurrency=3).step("s", gated)
    with pytest.raises(af.DefinitionError, match="give concurrency and rate_limit to the queue"):
        both.build()
    with pytest.raises(af.DefinitionError, match="queue concurrency: expected an integer"):
        af.Queue("bad", concurrency=0)
    with engine:
        with pytest.raises(af.ClientError, match="not on a queue that orders by priority"):
            engine.trigger("fifo", {}, priority=3)
        with pytest.raises(af.ClientError, match="not on a queue that orders by priority"):
            engine.trigger("plain", {}, priority=3)
        with pytest.raises(af.ClientError, match="priority: expected an integer from 0"):
            engine.trigger("fifo", {}, priority=-1)
        assert engine.runs(limit=None) == []  # nothing was recorded


def test_admission_groups_unit() -> None:
    clock = af.ManualClock(0.0)
    adm = Admission({"own": 1}, {}, clock)
    q = af.Queue("q", concurrency=1, priority=True)
    adm.set_limit("a", None, None, q)
    adm.set_limit("b", None, None, q)
    assert adm.try_acquire("a", "r1")
    assert adm.try_acquire("own", "o1")  # its own group: not limited by the queue's
    assert not adm.try_acquire("b", "r2", 7)
    assert not adm.try_acquire("a", "r3", 2)
    assert not adm.try_acquire("b", "r4", 2)
    assert adm.queued("a") == adm.queued("b") == 3
    assert adm.release("a", "r3") == []  # cancelled while queued: skipped when it comes up
    assert adm.queued("b") == 2
    clock.advance(5)
    assert adm.release("a", "r1") == [("r4", 5.0)]  # with the time it was admitted
    clock.advance(1)
    assert adm.release("b", "r4") == [("r2", 6.0)]
    assert adm.active("a") == 1 and adm.queued("a") == 0
    assert sorted(adm.groups()) == ["own", "queue/q"]


# -- steps given a queue ------------------------------------------------------------------

STEPS = af.Queue("api", concurrency=2)


def logged_call(ctx: Any) -> str:
    """A graph step limited by ``STEPS``: logs its start and end (pid, wall time)."""
    return logged(ctx.payload["log"], f"g{ctx.index if ctx.index is not None else ''}")


def logged(log: str, tag: str) -> str:
    import os

    with open(log, "a") as f:
        f.write(f"start {tag} {os.getpid()} {time.time()}\n")
    time.sleep(0.15)
    with open(log, "a") as f:
        f.write(f"end {tag} {os.getpid()} {time.time()}\n")
    return tag


async def calls(ctx: af.WorkflowContext, log: str, n: int) -> list[str]:
    import asyncio

    return list(
        await asyncio.gather(
            *(ctx.step("call", logged, log, f"c{i}", queue=STEPS) for i in range(n))
        )
    )


def define_steps(engine: af.Engine) -> None:
    (
        engine.define("fan").for_each(
            "items",
            lambda ctx: list(range(ctx.payload["n"])),
            lambda item, flow: flow.step("call", logged_call, queue=STEPS),
        )
    )
    engine.workflow("calls")(calls)


def running_at_once(log: Path) -> tuple[int, set[str]]:
    """The most steps between their start and end at one time, and the tags that started."""
    edges = []
    tags = set()
    for line in log.read_text().splitlines():
        kind, tag, _, at = line.split()
        edges.append((float(at), 1 if kind == "start" else -1))
        if kind == "start":
            tags.add(tag)
    peak = now = 0
    for _, step in sorted(edges):
        now += step
        peak = max(peak, now)
    return peak, tags


def test_a_queue_limits_steps_of_graph_and_code_runs_together(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine(workers=4)
    define_steps(engine)
    with engine:
        runs = [
            engine.trigger("fan", {"n": 4, "log": str(log)}),
            engine.trigger("calls", str(log), 3),
            engine.trigger("fan", {"n": 2, "log": str(log)}),
        ]
        outs = [r.result(timeout=120) for r in runs]
    assert outs == [["g0", "g1", "g2", "g3"], ["c0", "c1", "c2"], ["g0", "g1"]]
    peak, _ = running_at_once(log)
    # Four workers, nine steps of three runs of two workflows: two at a time.
    assert 1 <= peak <= 2


def test_a_step_waiting_for_its_queue_is_cancelled_without_running(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    gate = tmp_path / "gate"
    engine = make_engine(workers=3)
    one = af.Queue("one", concurrency=1)
    engine.define("holder").step("hold", gated, queue=one)
    engine.define("waiter").step("call", logged_call, queue=one)
    with engine:
        holder = engine.trigger("holder", {"gate": str(gate), "tag": "held"})
        wait_until(lambda: any(s.status == af.StepStatus.RUNNING for s in holder.inspect().steps))
        time.sleep(0.2)  # the holder's step is out: the waiter's cannot go
        waiter = engine.trigger("waiter", {"log": str(log)})
        wait_until(lambda: any(s.name == "call" for s in waiter.inspect().steps))
        time.sleep(0.3)
        assert not log.exists()  # dispatched, recorded, but waiting for the queue
        waiter.cancel("not needed")
        wait_until(lambda: waiter.status() == af.RunStatus.CANCELLED)
        after = engine.trigger("waiter", {"log": str(log)})
        gate.touch()
        assert holder.result(timeout=60) == "held"
        assert after.result(timeout=60) == "g"
    assert [line.split()[:2] for line in log.read_text().splitlines()] == [
        ["start", "g"],
        ["end", "g"],
    ]


def test_steps_waiting_for_a_queue_run_after_a_restart_under_the_same_limit(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    data_dir = tmp_path / "data"
    engine = make_engine(data_dir=data_dir, workers=4)
    define_steps(engine)
    engine.start()
    try:
        run = engine.trigger("fan", {"n": 6, "log": str(log)})
        wait_until(lambda: log.exists() and "start" in log.read_text())
    finally:
        engine.stop(drain=False)  # two steps were out, four waited for the queue
    engine = make_engine(data_dir=data_dir, workers=4)
    define_steps(engine)
    with engine:
        assert engine.run(run.id).result(timeout=120) == [f"g{i}" for i in range(6)]
    peak, tags = running_at_once(log)
    assert peak <= 2 and tags == {f"g{i}" for i in range(6)}


def test_step_queues_unit() -> None:
    from actorflow.runtime.dispatch._step_queues import StepQueues
    from actorflow.runtime.dispatch._transport import Task
    from actorflow.runtime.kernel._messages import TaskSpec

    now = [100.0]
    queues = StepQueues(lambda: now[0])
    rated = af.Queue("rated", rate_limit="2/10s", priority=True)

    def task(n: int, rank: int = 0) -> Task:
        spec = TaskSpec("r", f"s{n}", 1, "w", None, b"", None, None, queue=rated, rank=rank)  # type: ignore[arg-type]
        return Task(n, spec)

    tasks = [task(1), task(2), task(3, rank=5), task(4, rank=1)]
    assert [queues.admit(t) for t in tasks] == [True, True, False, False]
    assert queues.next_due() == 110.0
    assert queues.ready() == []
    now[0] = 110.0
    assert [t.id for t in queues.ready()] == [4, 3]  # rank 1 before rank 5
    queues.release(tasks[0])  # a rate limit: a slot freed is not a start allowed
    late = task(5)
    assert queues.admit(late) is False and queues.held(late)
    assert queues.next_due() == 120.0  # the two starts at 110 leave the window then
    queues.release(late)  # cancelled while it waited: never comes up
    now[0] = 121.0
    assert queues.ready() == [] and not queues.held(late)
