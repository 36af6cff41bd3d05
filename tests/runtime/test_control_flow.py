"""Every control-flow construct, alone and nested, through the real engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import steps
from tests.conftest import executions, process_gone, wait_until


def test_if_elif_else(engine: af.Engine) -> None:
    (
        engine.define("route")
        .step("start", steps.echo_payload)
        .if_("big", lambda ctx: ctx.last["amount"] > 1000)
        .step("review", steps.label)
        .elif_("medium", lambda ctx: ctx.last["amount"] > 100)
        .step("check", steps.label)
        .else_()
        .step("auto", steps.label)
        .endif()
        .step("after", steps.label)
    )
    with engine:
        big = engine.trigger("route", {"amount": 5000})
        medium = engine.trigger("route", {"amount": 500})
        small = engine.trigger("route", {"amount": 5})
        assert big.result(timeout=30) == "after:review:{'amount': 5000}"
        assert medium.result(timeout=30) == "after:check:{'amount': 500}"
        assert small.result(timeout=30) == "after:auto:{'amount': 5}"
        d = engine.inspect(big.id)
        assert d.step("big").kind == "branch" and d.step("big").branch == "big"
        assert d.step("review").status == af.StepStatus.SUCCEEDED
        assert d.step("check").status == af.StepStatus.SKIPPED
        assert d.step("auto").status == af.StepStatus.SKIPPED
        assert engine.inspect(small.id).step("big").branch == "else"


def test_no_arm_taken_passes_the_value_through(engine: af.Engine) -> None:
    engine.define("w").step("start", steps.echo_payload).if_("never", lambda ctx: False).step(
        "x", steps.label
    ).endif().step("after", steps.label)
    with engine:
        run = engine.trigger("w", 7)
        assert run.result(timeout=30) == "after:7"
        assert run.inspect().step("never").branch is None


def test_parallel_outputs_by_branch_name(engine: af.Engine) -> None:
    def sub(flow: af.Flow) -> None:
        flow.step("sub1", steps.plus_ten).step("sub2", steps.plus_ten)

    engine.define("p").step("start", steps.echo_payload).parallel(
        "fan", {"ten": steps.plus_ten, "twenty": sub, "label": steps.label}
    ).step("after", lambda ctx: sorted(ctx.last.items()))
    with engine:
        out = engine.trigger("p", 1).result(timeout=30)
    assert out == [["label", "label:1"], ["ten", 11], ["twenty", 21]] or out == [
        ("label", "label:1"),
        ("ten", 11),
        ("twenty", 21),
    ]


def test_race_cancels_the_loser_and_kills_its_worker(engine: af.Engine, tmp_path: Path) -> None:
    pid_file = tmp_path / "loser.pid"
    engine.define("race").race("r", {"slow": steps.pid_and_hang, "fast": steps.quick})
    with engine:
        run = engine.trigger("race", {"pid_file": str(pid_file)})
        assert run.result(timeout=30) == "quick won"
        d = run.inspect()
        assert d.step("r").winner == "fast"
        assert d.step("slow").status == af.StepStatus.CANCELLED
        pid = int(pid_file.read_text())
        wait_until(lambda: process_gone(pid))
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 2)


def test_race_fails_only_when_every_branch_fails(engine: af.Engine) -> None:
    engine.define("r1").step("start", steps.echo_payload).race(
        "r", {"bad": steps.fail_always, "good": steps.plus_ten}
    )
    engine.define("r2").race("r", {"bad": steps.fail_always, "worse": steps.fail_not_retryable})
    with engine:
        assert engine.trigger("r1", 5).result(timeout=30) == 15
        with pytest.raises(af.StepFailed):
            engine.trigger("r2", {}).result(timeout=30)


def test_while_loops_on_its_predicate(engine: af.Engine) -> None:
    engine.define("count").while_(
        "loop", lambda ctx: (ctx.last or 0) < 5, steps.incr, max_iterations=10
    ).step("after", steps.label)
    with engine:
        run = engine.trigger("count")
        assert run.result(timeout=30) == "after:5"
        d = run.inspect()
        assert d.step("loop").iterations == 5
        assert [s.path for s in d.steps if s.path.startswith("loop[")] == [
            f"loop[{i}]/incr" for i in range(5)
        ]


def test_while_past_max_iterations_fails(engine: af.Engine) -> None:
    engine.define("forever").while_("loop", lambda ctx: True, steps.incr, max_iterations=3)
    with engine:
        run = engine.trigger("forever")
        with pytest.raises(af.StepFailed, match="max_iterations=3"):
            run.result(timeout=30)
        loop = run.inspect().step("loop")
    assert loop.status == af.StepStatus.FAILED and loop.iterations == 3
    assert loop.error is not None and loop.error.type == "actorflow.errors.MaxIterationsExceeded"


def test_for_each_results_in_item_order(engine: af.Engine, counter_file: Path) -> None:
    engine.define("fe").for_each(
        "double", lambda ctx: ctx.payload["items"], steps.double_item, concurrency=3
    ).step("after", lambda ctx: [*ctx.last, "done"])
    with engine:
        run = engine.trigger("fe", {"items": list(range(10)), "log": str(counter_file)})
        assert run.result(timeout=30) == [i * 2 for i in range(10)] + ["done"]
        d = run.inspect()
        assert d.step("double").items == {
            "total": 10, "succeeded": 10, "failed": 0, "cancelled": 0, "pending": 0
        }  # fmt: skip
        assert d.step("double[7]/double_item").output == "14"
    assert executions(counter_file) == {f"item{i}": 1 for i in range(10)}


def test_for_each_respects_concurrency(engine: af.Engine, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    engine.define("fe").for_each("slow", lambda ctx: list(range(8)), steps.slow_item, concurrency=1)
    with engine:
        assert engine.trigger("fe", {"log": str(log)}).result(timeout=60) == list(range(8))
    events = sorted(
        (float(t), kind) for kind, _, t in (line.split() for line in log.read_text().splitlines())
    )
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 1


def test_for_each_body_flow_sees_item_index_and_last(engine: af.Engine) -> None:
    def body(item: Any, flow: af.Flow) -> None:
        flow.step("view", steps.item_from_ctx).step("bump", lambda ctx: ctx.last["item"] + "100")

    engine.define("fe").for_each("each", lambda ctx: ["a", "b"], body).step(
        "after", steps.echo_payload
    )
    with engine:
        run = engine.trigger("fe", "payload")
        assert run.result(timeout=30) == "payload"
        d = run.inspect()
        assert d.step("each[1]/view").output == (
            '{"item":"b","index":1,"last":"b","path":"each[1]/view"}'
        )
        assert d.step("each").output == '["a100","b100"]'


def test_for_each_of_nothing(engine: af.Engine) -> None:
    engine.define("fe").for_each("none", lambda ctx: [], steps.double_item).step(
        "after", lambda ctx: ctx.last
    )
    with engine:
        assert engine.trigger("fe").result(timeout=30) == []


def test_batch_hands_each_chunk_to_the_body(engine: af.Engine) -> None:
    engine.define("b").batch("sums", lambda ctx: list(range(10)), 4, steps.sum_chunk)
    with engine:
        run = engine.trigger("b")
        assert run.result(timeout=30) == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 8 + 9]
        assert run.inspect().step("sums").items["total"] == 3  # type: ignore[index]


def test_nested_if_in_for_each_in_parallel(engine: af.Engine) -> None:
    def per_item(item: Any, flow: af.Flow) -> None:
        (
            flow.step("take", lambda ctx: ctx.item)
            .if_("even", lambda ctx: ctx.last % 2 == 0)
            .step("half", lambda ctx: ctx.last // 2)
            .else_()
            .step("triple", lambda ctx: ctx.last * 3)
            .endif()
        )

    def numbers(flow: af.Flow) -> None:
        flow.for_each("items", lambda ctx: ctx.payload, per_item, concurrency=2)

    engine.define("nested").parallel("both", {"numbers": numbers, "plain": steps.echo_payload})
    with engine:
        run = engine.trigger("nested", [1, 2, 3, 4])
        assert run.result(timeout=30) == {"numbers": [3, 1, 9, 2], "plain": [1, 2, 3, 4]}
        d = run.inspect()
        assert d.step("items[1]/even").branch == "even"
        assert d.step("items[0]/half").status == af.StepStatus.SKIPPED


def test_subflow_runs_a_child_and_waits(engine: af.Engine) -> None:
    engine.define("child").step("total", steps.child_total)
    engine.define("parent").step("start", steps.echo_payload).subflow(
        "sum", "child", input=lambda ctx: {"values": ctx.last}
    ).step("after", lambda ctx: ctx.last * 2)
    with engine:
        run = engine.trigger("parent", [1, 2, 3])
        assert run.result(timeout=30) == 12
        child_id = run.inspect().step("sum").child_run_id
        assert child_id
        child = engine.inspect(child_id)
        assert child.workflow_id == "child" and child.status == af.RunStatus.COMPLETED
        assert child.result == "6"


def test_subflow_failure_fails_the_step_with_the_childs_error(engine: af.Engine) -> None:
    engine.define("child").step("boom", steps.fail_always)
    engine.define("parent").subflow("sub", "child").step("never", steps.noop)
    with engine, pytest.raises(af.StepFailed) as info:
        engine.trigger("parent", {}).result(timeout=30)
    assert info.value.step == "sub"
    assert "boom on attempt 1" in str(info.value)


def test_sleep_is_a_durable_timer(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)
    engine.define("nap").step("a", steps.echo_payload).sleep("wait", "24h").step("b", steps.label)
    with engine:
        run = engine.trigger("nap", 1)
        wait_until(lambda: run.inspect().step("wait").status == af.StepStatus.RUNNING)
        wait_until(lambda: engine.statistics()["live_runs"] == 0)  # out of memory while asleep
        clock.advance(24 * 3600 - 1)
        with pytest.raises(af.ResultTimeout):
            run.result(timeout=0.3)
        clock.advance(1)
        assert run.result(timeout=30) == "b:1"  # the sleep passes ctx.last through


def test_sleep_across_an_engine_restart(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()

    def define(engine: af.Engine) -> None:
        engine.define("nap").step("a", steps.echo_payload).sleep("wait", "1h").step(
            "b", steps.label
        )

    first = make_engine(clock=clock)
    define(first)
    with first:
        run = first.trigger("nap", 2)
        wait_until(lambda: run.inspect().step("wait").status == af.StepStatus.RUNNING)
    second = make_engine(clock=clock)
    define(second)
    with second:
        clock.advance(3600)
        assert second.run(run.id).result(timeout=30) == "b:2"


def test_cancel_inside_a_branch(engine: af.Engine) -> None:
    engine.define("c").if_("refuse", lambda ctx: ctx.payload == "no").cancel(
        "customer said no"
    ).endif().step("go", steps.echo_payload)
    with engine:
        assert engine.trigger("c", "yes").result(timeout=30) == "yes"
        with pytest.raises(af.RunCancelled, match="customer said no"):
            engine.trigger("c", "no").result(timeout=30)


def test_on_error_fallback_and_reraise(engine: af.Engine) -> None:
    engine.define("fb").step("boom", steps.fail_always).on_error(steps.fallback).step(
        "after", lambda ctx: ctx.last["error"]
    )
    engine.define("rr").step("boom", steps.fail_always).on_error(steps.reraise)
    engine.define("wide", on_error=steps.fallback).step("boom", steps.fail_always)
    with engine:
        run = engine.trigger("fb", {})
        assert run.result(timeout=30) == "Boom"
        step = run.inspect().step("boom")
        assert step.status == af.StepStatus.SUCCEEDED and step.recovered
        assert [a.status for a in step.attempts] == ["failed", "recovered"]
        with pytest.raises(af.StepFailed, match="handler gave up"):
            engine.trigger("rr", {}).result(timeout=30)
        assert engine.trigger("wide", {}).result(timeout=30)["fallback"] is True


def test_large_for_each_uses_few_commits(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(durability="fast")
    engine.define("big").for_each("items", lambda ctx: list(range(10_000)), steps.item_with_log)
    with engine:
        before = engine.statistics()["store"]["commits"]
        out = engine.trigger("big", {}).result(timeout=300)
        commits = engine.statistics()["store"]["commits"] - before
    assert out == [i + 1 for i in range(10_000)]
    assert commits < 2_000, commits  # group commits: far fewer than the 10,000 items


def test_large_outputs_inside_a_loop_body_are_read_back(engine: af.Engine) -> None:
    """A body step's output too large for its record is found again by its path."""

    def body(item: Any, flow: af.Flow) -> None:
        flow.step("big", steps.big_text).step("size", steps.read_big)

    engine.define("big").for_each("lines", items=lambda ctx: [1, 22], body=body)
    with engine:
        run = engine.trigger("big")
        assert run.result(timeout=30) == [5002, 5003]
        shown = run.inspect().step("lines[1]/big").output
    assert shown is not None and shown.startswith('"22:xxx')
