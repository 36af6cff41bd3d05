"""The user-facing test harness on every control-flow construct, with mocks and skipped time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.testing import WorkflowTest

Harness = Callable[..., WorkflowTest]


def test_wf_test_runs_at_once_and_skips_a_24h_sleep() -> None:
    engine = af.Engine(store="memory")
    wf = (
        engine.define("nightly")
        .step("a", lambda ctx: ctx.payload + 1)
        .sleep("nap", "24h")
        .step("b", lambda ctx: ctx.last * 2)
    )
    with wf.test(3) as t:
        t.expect_status("completed").expect_output(8)
        # The clock moved a whole day, skipped: waited for, the test would pass the suite's
        # 120 s timeout (no assertion on wall-clock speed here: CI machines vary).
        assert t.elapsed == 86_400.0
        t.expect_step("a").times(1).called_with(payload=3).output(4)
        t.expect_step("b").called_with(last=4)
        assert next(s for s in t.details.steps if s.name == "nap").status == "succeeded"
    assert not engine.running  # the user's engine is never started by the harness


def test_branches_take_the_right_arm_and_skip_the_others(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    wf = (
        engine.define("route")
        .if_("big", lambda ctx: ctx.payload > 100)
        .step("manual", lambda ctx: "manual")
        .elif_("medium", lambda ctx: ctx.payload > 10)
        .step("review", lambda ctx: "review")
        .else_()
        .step("auto", lambda ctx: "auto")
        .endif()
        .action("audit", lambda ctx: None)
        .step("done", lambda ctx: ctx.last)
    )
    for payload, taken in ((500, "manual"), (50, "review"), (5, "auto")):
        t = workflow_test(wf).run(payload)
        t.expect_output(taken)
        t.expect_step(taken).times(1)
        for other in {"manual", "review", "auto"} - {taken}:
            t.expect_step(other).skipped()
        t.expect_action("audit").times(1)


def test_parallel_race_while_for_each_batch(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")

    def slow_origin(ctx: Any) -> str:
        raise AssertionError("mocked away; never called")

    def cache(ctx: Any) -> str:
        return "cache"

    wf = (
        engine.define("fan")
        .parallel("both", {"x": lambda ctx: 1, "y": lambda ctx: 2})
        .race("source", [cache, slow_origin])
        .while_(
            "halve",
            lambda ctx: ctx.iteration == 0 or ctx.last > 1,
            lambda ctx: 64 if ctx.iteration == 0 else ctx.last // 2,
            max_iterations=20,
        )
        .for_each("squares", lambda ctx: [1, 2, 3], lambda item, ctx: item * item, concurrency=2)
        .batch("sums", lambda ctx: list(range(10)), 4, lambda chunk, ctx: sum(chunk))
    )
    t = workflow_test(wf)
    t.mock_step("slow_origin", fn=lambda ctx: time.sleep(0.2) or "origin")
    t.run(None)
    t.expect_output([6, 22, 17])
    t.expect_step("squares").times(3).called_with(3).called_with(item=2)
    t.expect_step("slow_origin")  # it may have started; it cannot have won
    assert next(s for s in t.details.steps if s.name == "source").winner == "cache"
    t.expect_step("sums").times(3).called_with([8, 9])


def test_subflow_runs_the_sibling_workflow(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    engine.define("child").step("total", lambda ctx: sum(ctx.payload))
    parent = engine.define("parent").subflow("sum", "child", input=lambda ctx: ctx.payload)
    t = workflow_test(parent).run([1, 2, 3])
    t.expect_output(6)
    t.expect_step("total").times(1).called_with(payload=[1, 2, 3])


def test_events_scripted_before_the_run_and_a_wait_that_times_out(
    workflow_test: Harness,
) -> None:
    engine = af.Engine(store="memory")
    wf = (
        engine.define("pay")
        .sleep("settle", "1h")
        .wait_for_event("payment.settled", timeout="30m")
        .step("ship", lambda ctx: f"shipped {ctx.last['id']}")
    )
    t = workflow_test(wf).send_event("payment.settled", {"id": "A-1"}).run(None)
    t.expect_output("shipped A-1")
    assert t.elapsed == 3600.0  # delivered when the wait began, not after its timeout

    late = workflow_test(wf).run(None)  # nobody sends it: the 30 min timeout passes
    late.expect_status("failed").expect_error(af.WaitTimeout)
    assert late.elapsed == 3600.0 + 1800.0
    late.expect_step("ship").not_called()


def test_approval_given_later_and_approval_timeout(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    paused: list[str] = []
    wf = (
        engine.define("expense")
        .human_in_the_loop(
            "approve", timeout="24h", on_pause=lambda token, ctx: paused.append(token)
        )
        .step("book", lambda ctx: f"booked by {ctx.last['by']}")
    )
    t = workflow_test(wf).start(None)  # start(): drive until idle, keep the clock still
    assert t.status == af.RunStatus.RUNNING  # waits for someone: the harness stops there
    assert len(paused) == 1  # on_pause ran before start() returned
    t.advance("23h")
    t.approve("approve", {"by": "grace"})  # the run goes on at once
    t.expect_output("booked by grace")
    assert t.elapsed == 23 * 3600.0

    scripted = workflow_test(wf).approve("approve", {"by": "ada"}).run(None)
    scripted.expect_output("booked by ada")
    assert scripted.elapsed == 0.0

    nobody = workflow_test(wf).run(None)  # run() skips to the approval's timeout
    nobody.expect_status("failed").expect_error(af.WaitTimeout)
    assert nobody.elapsed == 24 * 3600.0

    later = workflow_test(wf).start(None)
    later.advance("25h")  # time passes: the approval expires
    later.expect_status("failed")
    with pytest.raises(af.ApprovalError):
        later.engine.resume(paused[-1], {"by": "too late"})


def test_cancel_node_ends_the_run_cancelled(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    wf = (
        engine.define("maybe")
        .if_("small", lambda ctx: ctx.payload < 10)
        .cancel("too small")
        .endif()
        .step("work", lambda ctx: "worked")
    )
    workflow_test(wf).run(5).expect_status("cancelled").expect_step("work").not_called()
    workflow_test(wf).run(50).expect_output("worked")


def test_retries_with_backoff_are_skipped_and_counted(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    wf = engine.define("flaky").step(
        "charge",
        lambda ctx: "real",
        retry=af.Retry(attempts=4, delay="10m", backoff="exponential"),
    )
    attempts: list[int] = []

    def fails_twice(ctx: af.StepContext) -> str:
        attempts.append(ctx.run.attempt)
        if ctx.run.attempt < 3:
            raise ConnectionError("card network down")
        return "charged"

    t = workflow_test(wf).mock_step("charge", fn=fails_twice).run(None)
    t.expect_output("charged")
    t.expect_step("charge").times(3).raised(ConnectionError).called_with(attempt=3)
    assert attempts == [1, 2, 3]
    assert t.elapsed >= 10 * 60 + 20 * 60  # both backoffs passed on the manual clock

    always = workflow_test(wf).mock_step("charge", raises=ValueError("declined")).run(None)
    always.expect_status("failed").expect_error(ValueError, match="declined")
    always.expect_step("charge").times(4)


def test_simulated_timeouts_and_crashes_are_recorded_as_such(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    wf = engine.define("remote").step(
        "call", lambda ctx: "ok", timeout="5s", retry=af.Retry(attempts=2)
    )
    t = workflow_test(wf).mock_step("call", raises=af.StepTimeout).run(None)
    t.expect_status("failed").expect_error(af.StepTimeout)
    kinds = [a.kind for a in t.details.steps[0].attempts]
    assert kinds == ["timeout", "timeout"]

    c = workflow_test(wf).mock_step("call", raises=af.WorkerCrashed).run(None)
    c.expect_error(af.WorkerCrashed)
    assert [a.kind for a in c.details.steps[0].attempts] == ["crash", "crash"]


def test_on_error_handler_and_state_run_inline(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")

    def count(ctx: af.StepContext) -> int:
        return int(ctx.state.incr("seen"))

    wf = (
        engine.define("safe")
        .step("count", count)
        .step("risky", lambda ctx: 1 / 0)
        .on_error(lambda ctx: f"fallback after {type(ctx.error).__name__}")
    )
    t = workflow_test(wf).run(None)
    t.expect_output("fallback after ZeroDivisionError")
    t.expect_step("risky").raised(ZeroDivisionError)
    t.expect_step("count").output(1)
    assert t.run().expect_step("count").output(2).calls[0].run_id == t.run_id


def test_mock_service_answers_and_records_calls(workflow_test: Harness) -> None:
    crm = af.define_service("crm", actions={"create": lambda client, name: client.create(name)})
    engine = af.Engine(store="memory")
    wf = engine.define("signup", services=[crm.with_config()]).step(
        "register", lambda ctx: ctx.services.crm.create(ctx.payload)
    )
    t = workflow_test(wf).mock_service("crm", create=lambda name: {"id": 7, "name": name})
    t.run("ada").expect_output({"id": 7, "name": "ada"})
    t.expect_service("crm", "create").times(1).called_with("ada")

    with pytest.raises(ValueError, match="no workflow of this test declares 'billing'"):
        workflow_test(wf).mock_service("billing", charge=1).run("x")


def test_expectations_fail_with_what_was_seen(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    wf = engine.define("one").step("a", lambda ctx: ctx.payload * 2)
    t = workflow_test(wf).run(21)
    with pytest.raises(AssertionError, match=r"expected 2 call\(s\), got 1[\s\S]*a attempt 1"):
        t.expect_step("a").times(2)
    with pytest.raises(AssertionError, match="expected output 41, got 42"):
        t.expect_step("a").output(41)
    with pytest.raises(AssertionError, match="expected the run to be failed, it is completed"):
        t.expect_status("failed")
    with pytest.raises(AssertionError, match="expected the run to fail; it completed with 42"):
        t.expect_error()
    with pytest.raises(AssertionError, match=r"expected a call with \(payload=20\)"):
        t.expect_step("a").called_with(payload=20)


def test_bad_mocks_are_refused_with_the_known_names(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    wf = engine.define("one").step("charge", lambda ctx: 1)
    with pytest.raises(ValueError, match="exactly one of returns=, raises= or fn=, got 2"):
        workflow_test(wf).mock_step("charge", returns=1, raises=ValueError)
    with pytest.raises(ValueError, match=r"no step named 'chrage' .* \(steps: \['charge'\]\)"):
        workflow_test(wf).mock_step("chrage", returns=1).run(None)
    t = workflow_test(wf).run(None)
    with pytest.raises(ValueError, match="before the first run"):
        t.mock_step("charge", returns=2)


def test_a_graph_mock_of_no_step_is_refused_at_mock_step() -> None:
    engine = af.Engine(store="memory")
    wf = engine.define("one").step("charge", lambda ctx: 1)
    t = WorkflowTest(wf)
    with pytest.raises(ValueError, match=r"no step named 'chrage' .* \(steps: \['charge'\]\)"):
        t.mock_step("chrage", returns=1)  # at once: before any run
    t.close()


async def _charge_step(amount: int) -> int:
    return amount


def _code_engine() -> tuple[af.Engine, Any]:
    engine = af.Engine(store="memory")
    graph = engine.define("graph").step("ship", lambda ctx: "shipped")

    @engine.workflow("pay")
    async def pay(ctx: af.WorkflowContext, amount: int) -> int:
        if amount > 100:
            return await ctx.step("review", _charge_step, amount)
        return await ctx.step("charge", _charge_step, amount)

    return engine, (graph, pay)


def test_a_code_mock_never_used_fails_the_test_at_its_end() -> None:
    """The check used to be skipped whenever the engine had a code workflow (issue 24.9)."""
    _, (_graph, pay) = _code_engine()
    t = WorkflowTest(pay).mock_step("chrage", returns=1).mock_step("ship", returns="x")
    t.run(5).expect_output(5)  # the real "charge" ran: the misspelt mock was never used
    with pytest.raises(AssertionError, match=r"no step named 'chrage' ran .*\['charge'\]"):
        t.close()
    t.close()  # reported once


def test_a_code_mock_used_passes_and_a_failing_test_keeps_its_own_error() -> None:
    _, (_graph, pay) = _code_engine()
    with WorkflowTest(pay).mock_step("charge", returns=7) as t:
        t.run(5).expect_output(7)
    # A test that fails inside the block sees its own error, not the unused mock's.
    with (
        pytest.raises(KeyError, match="the test's own"),
        WorkflowTest(pay).mock_step("review", returns=1) as t,
    ):
        t.run(5)
        raise KeyError("the test's own")


def test_the_fixture_reports_an_unused_code_mock(tmp_path: Path) -> None:
    """As a user's suite runs it: pytest in its own process, the plugin's fixture."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import actorflow as af

            engine = af.Engine(store="memory")


            async def add(a):
                return a + 1


            @engine.workflow("w")
            async def w(ctx, a):
                return await ctx.step("add", add, a)


            def test_typo(workflow_test):
                workflow_test(w).mock_step("ad", returns=0).run(1).expect_output(2)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert "1 passed, 1 error" in out.stdout, out.stdout + out.stderr
    assert "no step named 'ad' ran in this test" in out.stdout


def test_a_step_that_really_hangs_fails_the_test_in_time(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")
    wf = engine.define("stuck").step("hang", lambda ctx: time.sleep(5))
    with pytest.raises(TimeoutError, match=r"did not settle within 0\.5s"):
        workflow_test(wf, timeout=0.5).run(None)


# -- code workflows --------------------------------------------------------------------------


def extract(source: str) -> list[int]:
    return [1, 2, 3] if source == "db" else []


def double(x: int) -> int:
    return 2 * x


def test_code_workflow_with_map_sleep_signal_and_child(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")

    @engine.workflow("loader")
    async def loader(ctx: af.WorkflowContext, rows: list[int]) -> int:
        return sum(rows)

    @engine.workflow("etl")
    async def etl(ctx: af.WorkflowContext, source: str) -> dict[str, Any]:
        rows = await ctx.step("extract", extract, source)
        parts = await ctx.map("transform", double, rows)
        await ctx.sleep("pause", "24h")
        who = await ctx.wait_for_signal("approve", timeout="1h")
        loaded = await ctx.child("load", "loader", parts)
        return {"loaded": loaded, "by": who}

    # Time is skipped (a 24 h sleep and a 1 h wait on the manual clock), not waited: a
    # real wait would end at the test's timeout, long before the day passes.
    t = workflow_test(etl).approve("approve", "grace").run("db")
    t.expect_output({"loaded": 12, "by": "grace"})
    assert t.elapsed == 86_400.0
    t.expect_step("extract").times(1).called_with("db").output([1, 2, 3])
    t.expect_step("transform").times(3).called_with(2)

    mocked = workflow_test(etl).mock_step("extract", returns=[10]).start("db")
    mocked.expect_step("transform").called_with(10)
    mocked.advance("24h")  # the sleep ends; the run now waits for the signal
    assert mocked.status == af.RunStatus.RUNNING
    mocked.signal("approve", "ada").expect_output({"loaded": 20, "by": "ada"})

    timed_out = workflow_test(etl).run("db")  # nobody approves within the hour
    timed_out.expect_status("failed").expect_error(af.WaitTimeout)
    assert timed_out.elapsed == 86_400.0 + 3600.0


def test_code_workflow_events_and_step_failures(workflow_test: Harness) -> None:
    engine = af.Engine(store="memory")

    @engine.workflow("pay", retry=af.Retry(attempts=2, delay="1m"))
    async def pay(ctx: af.WorkflowContext, order: str) -> str:
        settled = await ctx.wait_for_event("settled", key=order, timeout="1d")
        try:
            await ctx.step("charge", double, settled["amount"])
        except af.StepFailed:
            return "refunded"
        return "charged"

    ok = workflow_test(pay).send_event("settled", {"amount": 5}, key="o-1").run("o-1")
    ok.expect_output("charged").expect_step("charge").called_with(5).output(10)

    failing = workflow_test(pay).mock_step("charge", raises=RuntimeError("declined"))
    failing.send_event("settled", {"amount": 5}, key="o-2").run("o-2")
    failing.expect_output("refunded").expect_step("charge").times(2)
    assert failing.elapsed == 60.0


def test_plugin_engine_fixture_is_a_real_engine(actorflow_engine: af.Engine) -> None:
    actorflow_engine.define("pid").step("where", lambda ctx: __import__("os").getpid())
    with actorflow_engine:
        pid = actorflow_engine.trigger("pid").result(timeout=60)
    assert pid != __import__("os").getpid()  # it ran in a worker process
    assert actorflow_engine.config.store == "lmdb"
