"""Code workflows on a real engine: steps in real workers, recorded and replayed.

Each test defines ``async def`` workflows with ``@engine.workflow`` and checks what users see:
results, errors, step records, and what is recorded in the history.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import code_steps as cs
from tests.conftest import executions, wait_until

MakeEngine = Callable[..., af.Engine]


def steps_of(engine: af.Engine, run_id: str) -> dict[str, af.StepDetails]:
    return {s.path: s for s in engine.inspect(run_id).steps}


def test_steps_gather_map_sleep_and_repeated_names(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine()
    log = str(tmp_path / "log")

    @engine.workflow("etl")
    async def etl(ctx: af.WorkflowContext, n: int) -> dict[str, Any]:
        a = await ctx.step("add", cs.add, n, 1)
        # Issued left to right at the call: "add" is used three times (add, add#2, add#3).
        b, c = await asyncio.gather(ctx.step("add", cs.add, a, 1), ctx.step("add", cs.add, a, 2))
        squares = await ctx.map("sq", cs.square, [1, 2, 3, 4], concurrency=2)
        await ctx.sleep("nap", "20ms")
        tagged = await ctx.step("log", cs.logged, log, "log", {"x": [a, b, c]})
        return {"a": a, "b": b, "c": c, "squares": squares, "tagged": tagged}

    with engine:
        run = engine.trigger("etl", 5)
        assert run.result(timeout=30) == {
            "a": 6,
            "b": 7,
            "c": 8,
            "squares": [1, 4, 9, 16],
            "tagged": {"x": [6, 7, 8]},
        }
        steps = steps_of(engine, run.id)
    assert [p for p in steps] == [
        "add", "add#2", "add#3", "sq", "sq[0]", "sq[1]", "sq[2]", "sq[3]", "nap", "log",
    ]  # fmt: skip
    assert steps["add#3"].output == "8"
    assert steps["sq"].kind == "map"
    assert steps["sq"].items == {
        "total": 4, "succeeded": 4, "failed": 0, "cancelled": 0, "pending": 0,
    }  # fmt: skip
    assert steps["nap"].kind == "sleep"
    assert all(s.status == af.StepStatus.SUCCEEDED for s in steps.values())
    assert executions(Path(log)) == {"log": 1}


def test_step_failure_fails_the_run_unless_caught(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("fails")
    async def fails(ctx: af.WorkflowContext) -> None:
        await ctx.step("boom", cs.fail, "no luck")

    @engine.workflow("recovers")
    async def recovers(ctx: af.WorkflowContext) -> str:
        try:
            await ctx.step("boom", cs.fail, "no luck")
        except af.StepFailed as exc:
            return f"caught {type(exc.__cause__).__name__}: {exc.__cause__}"
        return "not reached"

    with engine:
        with pytest.raises(af.StepFailed) as info:
            engine.trigger("fails").result(timeout=30)
        assert info.value.step == "boom"
        assert isinstance(info.value.__cause__, ValueError)
        assert str(info.value.__cause__) == "no luck"
        assert engine.trigger("recovers").result(timeout=30) == "caught ValueError: no luck"


def test_temporal_retry_fields(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine()
    log = str(tmp_path / "log")

    @engine.workflow("flaky")
    async def flaky(ctx: af.WorkflowContext) -> list[Any]:
        policy = af.Retry(
            maximum_attempts=4, initial_interval="10ms", backoff_coefficient=3.0,
            maximum_interval="50ms",
        )  # fmt: skip
        ok = await ctx.step("flaky", cs.fail_until, log, "flaky", 3, retry=policy)
        never = af.Retry(maximum_attempts=5, non_retryable_error_types=["RuntimeError"])
        try:
            await ctx.step("fatal", cs.fail_until, log, "fatal", 9, retry=never)
        except af.StepFailed as exc:
            return [ok, exc.attempt]
        return [ok, None]

    with engine:
        run = engine.trigger("flaky")
        assert run.result(timeout=30) == [3, 1]
        steps = steps_of(engine, run.id)
    assert [a.status for a in steps["flaky"].attempts] == ["failed", "failed", "succeeded"]
    assert executions(Path(log)) == {"flaky": 3, "fatal": 1}
    policy = af.Retry(initial_interval="10ms", backoff_coefficient=3.0, maximum_interval="50ms")
    assert [policy.delay_for(n) for n in (1, 2, 3)] == pytest.approx([0.01, 0.03, 0.05])
    assert af.Retry(maximum_attempts=0).attempts > 10**9  # Temporal: 0 means no limit


def test_temporal_vocabulary_means_temporal_defaults(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    """Issue 24.6: without maximum_attempts, a Temporal-style Retry retries without limit."""
    assert af.Retry().attempts == 3 and af.Retry(delay="1s").attempts == 3  # actorflow's
    assert af.Retry(initial_interval="1s").attempts > 10**9  # Temporal's: no limit
    assert af.Retry(non_retryable_error_types=["KeyError"]).attempts > 10**9
    assert af.Retry(initial_interval="1s", maximum_attempts=4).attempts == 4
    assert af.Retry(attempts=2, initial_interval="1s").attempts == 2  # said outright
    engine = make_engine()
    log = str(tmp_path / "log")

    @engine.workflow("patient", retry=af.Retry(initial_interval=0))
    async def patient(ctx: af.WorkflowContext) -> int:
        return await ctx.step("flaky", cs.fail_until, log, "flaky", 6)

    with engine:
        assert engine.trigger("patient").result(timeout=30) == 6  # past the 3 of the default
    assert executions(Path(log)) == {"flaky": 6}


def test_schedule_to_close_bounds_all_attempts(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine()
    log = str(tmp_path / "log")
    policy = af.Retry(
        maximum_attempts=0, initial_interval="50ms", backoff="fixed", schedule_to_close="400ms"
    )

    @engine.workflow("bounded")
    async def bounded(ctx: af.WorkflowContext) -> None:
        await ctx.step("never", cs.fail_until, log, "never", 10**6, retry=policy)

    with engine:
        run = engine.trigger("bounded")
        with pytest.raises(af.StepFailed):
            run.result(timeout=30)
        step = steps_of(engine, run.id)["never"]
    runs = executions(Path(log))["never"]
    assert 2 <= runs <= 12, runs  # unlimited attempts, cut off by the 400 ms bound
    assert step.failures == runs
    assert step.attempts[-1].ended_at - step.dispatched_at < 5  # type: ignore[operator]


def test_signals_and_queries_during_a_sleep(make_engine: MakeEngine) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)

    @engine.workflow("sleeper")
    async def sleeper(ctx: af.WorkflowContext) -> dict[str, Any]:
        seen: list[Any] = []
        ctx.on_query("seen", lambda: list(seen))
        ctx.on_query("plus", lambda a, b: a + b)
        ctx.on_signal("note", seen.append)
        await ctx.sleep("long", "24h")
        last = await ctx.wait_for_signal("go")
        return {"seen": seen, "go": last, "slept_until": ctx.time()}

    with engine:
        run = engine.trigger("sleeper")
        wait_until(lambda: "long" in steps_of(engine, run.id))
        assert run.query("seen") == []
        run.signal("note", "first")
        run.signal("note", {"second": 2})
        run.signal("go", "early")  # before the wait: kept for it
        assert run.query("seen") == ["first", {"second": 2}]
        assert run.query("plus", 2, 3) == 5
        with pytest.raises(af.ClientError, match="no such query handler"):
            run.query("missing")
        assert run.status() == af.RunStatus.RUNNING
        clock.advance(24 * 3600)
        result = run.result(timeout=30)
    assert result["seen"] == ["first", {"second": 2}]
    assert result["go"] == "early"
    assert result["slept_until"] >= 1_700_000_000 + 24 * 3600


def test_update_returns_the_handlers_value(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("cart")
    async def cart(ctx: af.WorkflowContext) -> list[int]:
        items: list[int] = []

        async def add(n: int) -> int:
            items.append(await ctx.step("price", cs.square, n))
            return sum(items)

        def reject(n: int) -> None:
            raise ValueError(f"refused {n}")

        ctx.on_update("add", add)
        ctx.on_update("reject", reject)
        await ctx.wait_for_signal("checkout")
        return items

    with engine:
        run = engine.trigger("cart")
        wait_until(lambda: "checkout" in steps_of(engine, run.id))
        assert run.update("add", 3, timeout=30) == 9
        assert run.update("add", 4, timeout=30) == 25
        with pytest.raises(ValueError, match="refused 5"):
            run.update("reject", 5, timeout=30)
        with pytest.raises(af.ClientError, match="no such update handler"):
            run.update("missing", 1, timeout=30)
        run.signal("checkout")
        assert run.result(timeout=30) == [9, 16]
        assert set(steps_of(engine, run.id)) >= {"price", "price#2"}


def test_child_results_and_failures_propagate(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("graph-child").step("double", lambda ctx: ctx.payload * 2)

    @engine.workflow("child")
    async def child(ctx: af.WorkflowContext, a: int, b: int) -> int:
        return await ctx.step("add", cs.add, a, b)

    @engine.workflow("bad-child")
    async def bad_child(ctx: af.WorkflowContext) -> None:
        await ctx.step("boom", cs.fail, "child broke")

    @engine.workflow("parent")
    async def parent(ctx: af.WorkflowContext, fail: bool) -> list[int]:
        x = await ctx.child("sum", "child", 2, 3)
        y = await ctx.child("double", "graph-child", x)
        if fail:
            await ctx.child("bad", "bad-child")
        return [x, y]

    with engine:
        ok = engine.trigger("parent", False)
        assert ok.result(timeout=30) == [5, 10]
        child_id = steps_of(engine, ok.id)["sum"].child_run_id
        assert child_id is not None
        assert engine.run(child_id).result(timeout=5) == 5
        bad = engine.trigger("parent", True)
        with pytest.raises(af.StepFailed) as info:
            bad.result(timeout=30)
        assert info.value.step == "bad"
        assert "child broke" in str(info.value)
        failed_child = steps_of(engine, bad.id)["bad"].child_run_id
        assert engine.run(failed_child or "").status() == af.RunStatus.FAILED


def test_continue_as_new_chain_with_bounded_history(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("counter")
    async def counter(ctx: af.WorkflowContext, total: int, rounds: int) -> int:
        for _ in range(5):
            total = await ctx.step("add", cs.add, total, 1)
        if rounds > 1:
            ctx.continue_as_new(total, rounds - 1)
        return total

    with engine:
        run = engine.trigger("counter", 0, 6)
        assert run.result(timeout=60) == 30
        assert run.status() == af.RunStatus.COMPLETED
        runs = engine.runs(workflow="counter")
        assert len(runs) == 6
        assert sum(1 for r in runs if r.status == af.RunStatus.CONTINUED) == 5
        for r in runs:
            history = engine.export_history(r.id)["entries"]
            assert len(history) <= 6  # start + 5 steps: bounded whatever the chain's length
        assert engine.inspect(run.id).status == af.RunStatus.CONTINUED


def test_deterministic_time_random_and_ids_replay_identically(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()

    @engine.workflow("dice")
    async def dice(ctx: af.WorkflowContext) -> list[Any]:
        first = [ctx.time(), ctx.random(), str(ctx.uuid4()), ctx.rng.randint(1, 6)]
        await ctx.step("roll", cs.add, 1, 1)
        return [*first, ctx.now().timestamp(), ctx.random()]

    with engine:
        run = engine.trigger("dice")
        value = run.result(timeout=30)
        doc = engine.export_history(run.id)
    replayed = af.testing.replay(doc, dice)
    assert replayed.ok and replayed.outcome == "completed"
    assert replayed.result == value
    assert value[4] >= value[0]  # the second activation's time


def test_workflow_failure_types_and_workflow_failed(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("refuses", failure_types=[KeyError])
    async def refuses(ctx: af.WorkflowContext, kind: str) -> None:
        await ctx.step("check", cs.add, 1, 1)
        if kind == "key":
            raise KeyError("no such order")
        raise af.WorkflowFailed("order refused")

    with engine:
        with pytest.raises(af.WorkflowFailed) as info:
            engine.trigger("refuses", "key").result(timeout=30)
        assert isinstance(info.value.__cause__, KeyError)
        with pytest.raises(af.WorkflowFailed, match="order refused"):
            engine.trigger("refuses", "explicit").result(timeout=30)


def test_wait_for_event_with_key_and_timeout_default(make_engine: MakeEngine) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)

    @engine.workflow("payments")
    async def payments(ctx: af.WorkflowContext, order: str) -> list[Any]:
        paid = await ctx.wait_for_event("paid", key=order, timeout="1h")
        shipped = await ctx.wait_for_event("shipped", key=order, timeout="1h", default="late")
        return [paid, shipped]

    with engine:
        engine.publish("paid", {"amount": 7}, key="B")  # before B waits: kept for it
        a = engine.trigger("payments", "A")
        b = engine.trigger("payments", "B")
        wait_until(lambda: "paid" in steps_of(engine, a.id))
        assert engine.publish("paid", {"amount": 3}, key="A") == 1
        wait_until(lambda: "shipped" in steps_of(engine, a.id))
        wait_until(lambda: "shipped" in steps_of(engine, b.id))
        engine.publish("shipped", "today", key="A")
        assert a.result(timeout=30) == [{"amount": 3}, "today"]
        clock.advance(3601)
        assert b.result(timeout=30) == [{"amount": 7}, "late"]


def test_wait_for_signal_timeout_raises_wait_timeout(make_engine: MakeEngine) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)

    @engine.workflow("impatient")
    async def impatient(ctx: af.WorkflowContext) -> str:
        try:
            await ctx.wait_for_signal("go", timeout="5m")
        except af.WaitTimeout as exc:
            return f"gave up: {exc}"
        return "went"

    with engine:
        run = engine.trigger("impatient")
        wait_until(lambda: "go" in steps_of(engine, run.id))
        clock.advance(301)
        assert run.result(timeout=30) == "gave up: no signal 'go' within 300s"


def test_heartbeat_timeout_retries_with_last_details(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine()
    log = str(tmp_path / "log")

    @engine.workflow("beats")
    async def beats(ctx: af.WorkflowContext) -> list[Any]:
        resumed = await ctx.step(
            "work", cs.heartbeat_then_hang, log, "work", heartbeat_timeout="500ms",
            retry=af.Retry(maximum_attempts=2, initial_interval=0),
        )  # fmt: skip
        alive = await ctx.step("alive", cs.beating, 1.2, heartbeat_timeout="400ms")
        return [resumed, alive]

    with engine:
        run = engine.trigger("beats")
        assert run.result(timeout=60) == [
            {"resumed_from": {"done": 3}, "attempt": 2},
            "alive",  # it ran three times its heartbeat timeout, beating all along
        ]
        work = steps_of(engine, run.id)["work"]
    assert [a.status for a in work.attempts] == ["failed", "succeeded"]
    assert work.attempts[0].kind == "timeout"
    assert "no heartbeat for 0.5s" in (work.attempts[0].error or "")
    assert executions(Path(log)) == {"work": 2}


def test_heartbeat_timeout_without_retry_fails_with_heartbeat_timeout(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine()
    log = str(tmp_path / "log")

    @engine.workflow("silent")
    async def silent(ctx: af.WorkflowContext) -> None:
        await ctx.step("work", cs.heartbeat_then_hang, log, "work", heartbeat_timeout="300ms")

    with engine, pytest.raises(af.HeartbeatTimeout) as info:
        engine.trigger("silent").result(timeout=60)
    assert info.value.heartbeat_timeout == pytest.approx(0.3)


def test_sticky_cache_eviction_rebuilds_by_replay(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    engine = make_engine(sticky_cache_size=0)  # every waiting run leaves memory

    @engine.workflow("waiter")
    async def waiter(ctx: af.WorkflowContext) -> list[Any]:
        got = [await ctx.step(f"s{i}", cs.logged, log, f"s{i}", i) for i in range(3)]
        count = {"n": 0}
        ctx.on_query("count", lambda: count["n"])
        ctx.on_signal("tick", lambda _: count.__setitem__("n", count["n"] + 1))
        await ctx.wait_for_signal("done")
        return [*got, count["n"]]

    with engine:
        run = engine.trigger("waiter")
        wait_until(lambda: "done" in steps_of(engine, run.id))
        wait_until(lambda: engine.statistics()["live_runs"] == 0)
        for _ in range(3):
            run.signal("tick")
        assert run.query("count") == 3  # rebuilt from the history (three signals in it)
        run.signal("done")
        assert run.result(timeout=30) == [0, 1, 2, 3]
    assert executions(Path(log)) == {"s0": 1, "s1": 1, "s2": 1}  # replays ran nothing


def test_bad_usage_gives_clear_errors(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("graph").step("one", lambda ctx: 1)

    @engine.workflow("code")
    async def code(ctx: af.WorkflowContext) -> None:
        await ctx.wait_for_signal("never")

    with engine:
        with pytest.raises(af.ClientError, match="takes one payload"):
            engine.trigger("graph", 1, 2)
        graph_run = engine.trigger("graph")
        graph_run.result(timeout=30)
        with pytest.raises(af.ClientError, match="finished"):
            graph_run.signal("x")
        running = engine.trigger("code")
        with pytest.raises(af.InvalidPayload, match="signal 'x'"):
            running.signal("x", threading.Lock())  # not storable
        with pytest.raises(af.ClientError, match="not panicked"):
            engine.restart(running.id)
        running.cancel("done testing")
    with pytest.raises(af.DefinitionError, match="async def"):
        other = af.Engine(store="memory")
        other.workflow("sync")(lambda ctx: None)  # type: ignore[arg-type, return-value]
        other.start()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sleep", "cannot use wall-clock timers"),
        ("name", "ctx.step: name: expected a non-empty name"),
    ],
)
def test_workflow_code_misuse_panics_with_a_clear_message(
    make_engine: MakeEngine, body: str, message: str
) -> None:
    engine = make_engine()

    @engine.workflow("misuse", panic=af.PanicPolicy(max_restarts=0))
    async def misuse(ctx: af.WorkflowContext) -> None:
        if body == "sleep":
            await asyncio.sleep(1)
        else:
            await ctx.step("bad/name", cs.add, 1, 2)

    with engine:
        run = engine.trigger("misuse")
        wait_until(lambda: run.status() == af.RunStatus.PANICKED)
        record = engine._read(lambda store: _run_record(store, run.id))
    assert message in record["panic"]["message"]
    assert record["restarts"] == 0


def _run_record(store: Any, run_id: str) -> dict[str, Any]:
    from actorflow.views import read_run

    return read_run(store, run_id)


def test_graph_steps_take_heartbeat_timeout_too(make_engine: MakeEngine) -> None:
    from tests import steps

    engine = make_engine()
    engine.define("g", retry=af.Retry(attempts=2, delay=0)).step(
        "hb", steps.heartbeat_once_then_hang, heartbeat_timeout="300ms"
    )
    with engine:
        run = engine.trigger("g")
        assert run.result(timeout=60) == {"at": 1}
        hb = steps_of(engine, run.id)["hb"]
    assert [a.kind for a in hb.attempts] == ["timeout", None]


def test_signals_sent_while_queued_reach_the_run(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("one-at-a-time", concurrency=1)
    async def single(ctx: af.WorkflowContext, name: str) -> list[Any]:
        first = await ctx.wait_for_signal("go")
        return [name, first]

    with engine:
        a = engine.trigger("one-at-a-time", "a")
        b = engine.trigger("one-at-a-time", "b")
        assert b.status() == af.RunStatus.QUEUED
        b.signal("go", "early")  # recorded now, delivered when b starts
        with pytest.raises(af.ClientError, match="queued"):
            b.query("anything")
        a.signal("go", "now")
        assert a.result(timeout=30) == ["a", "now"]
        assert b.result(timeout=30) == ["b", "early"]
        doc = engine.export_history(b.id)
    assert af.testing.replay(doc, single).ok


def test_sticky_cache_ttl_evicts_idle_runs(make_engine: MakeEngine) -> None:
    engine = make_engine(sticky_cache_ttl=0.2, sweep_interval=0.1)

    @engine.workflow("idle")
    async def idle(ctx: af.WorkflowContext) -> str:
        return str(await ctx.wait_for_signal("wake"))

    with engine:
        runs = [engine.trigger("idle") for _ in range(5)]
        wait_until(lambda: all("wake" in steps_of(engine, r.id) for r in runs))
        wait_until(lambda: engine.statistics()["live_runs"] == 0)  # evicted past their TTL
        for i, run in enumerate(runs):
            run.signal("wake", i)
        assert [r.result(timeout=30) for r in runs] == ["0", "1", "2", "3", "4"]


def test_event_for_an_evicted_run_is_taken_on_reload(make_engine: MakeEngine) -> None:
    engine = make_engine(sticky_cache_size=0)

    @engine.workflow("evicted")
    async def evicted(ctx: af.WorkflowContext) -> Any:
        return await ctx.wait_for_event("ready", key="k", timeout="1h")

    with engine:
        run = engine.trigger("evicted")
        wait_until(lambda: "ready" in steps_of(engine, run.id))
        wait_until(lambda: engine.statistics()["live_runs"] == 0)
        assert engine.publish("ready", {"ok": 1}, key="k") == 1
        assert run.result(timeout=30) == {"ok": 1}


def test_queries_answer_from_a_finished_runs_final_state(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("counted")
    async def counted(ctx: af.WorkflowContext, n: int) -> int:
        state = {"done": 0}
        ctx.on_query("done", lambda: state["done"])
        for i in range(n):
            await ctx.step("add", cs.add, i, 1)
            state["done"] += 1
        return n

    with engine:
        run = engine.trigger("counted", 3)
        assert run.result(timeout=30) == 3
        assert run.query("done") == 3  # replayed from its history: nothing runs again
        with pytest.raises(af.ClientError, match="no such query handler"):
            run.query("other")


def test_signals_with_an_idempotency_key_are_delivered_once(make_engine: MakeEngine) -> None:
    engine = make_engine(sticky_cache_size=0)  # also across a reload from the store

    @engine.workflow("tally")
    async def tally(ctx: af.WorkflowContext) -> list[Any]:
        got: list[Any] = []
        ctx.on_signal("add", got.append)
        await ctx.wait_for_signal("done")
        return got

    with engine:
        run = engine.trigger("tally")
        wait_until(lambda: "done" in steps_of(engine, run.id))
        assert run.signal("add", 1, idempotency_key="a") is True
        assert run.signal("add", 1, idempotency_key="a") is False  # a client's retry
        assert run.signal("add", 2, idempotency_key="b") is True
        assert run.signal("add", 3) is True
        assert run.signal("add", 3) is True  # no key: each call is a signal
        run.signal("done")
        assert run.result(timeout=30) == [1, 2, 3, 3]


def test_workflow_timeout_and_cancel_stop_the_run(make_engine: MakeEngine, tmp_path: Path) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)
    release = str(tmp_path / "never")

    @engine.workflow("slow", timeout="1h")
    async def slow(ctx: af.WorkflowContext) -> None:
        await ctx.sleep("forever", "1d")

    @engine.workflow("busy")
    async def busy(ctx: af.WorkflowContext) -> None:
        await ctx.step("wait", cs.wait_file, release)

    with engine:
        timed = engine.trigger("slow")
        wait_until(lambda: "forever" in steps_of(engine, timed.id))
        clock.advance(3601)
        with pytest.raises(af.RunTimeout):
            timed.result(timeout=30)
        running = engine.trigger("busy")
        wait_until(lambda: steps_of(engine, running.id).get("wait") is not None)
        wait_until(lambda: steps_of(engine, running.id)["wait"].status == af.StepStatus.RUNNING)
        assert running.cancel("no longer needed") is True
        with pytest.raises(af.RunCancelled, match="no longer needed"):
            running.result(timeout=30)
        assert steps_of(engine, running.id)["wait"].status == af.StepStatus.CANCELLED
        assert running.cancel() is False  # already finished
