"""Circuit breakers: closed -> open -> half-open -> closed, shared across runs, on a manual
clock; an open circuit fails attempts at once (without running them), retried by policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from tests import steps
from tests.conftest import executions, wait_until

MakeEngine = Callable[..., af.Engine]


def test_transitions_shared_across_runs(
    make_engine: MakeEngine, counter_file: Path, tmp_path: Path
) -> None:
    clock = af.ManualClock()
    breaker = af.CircuitBreaker(failure_threshold=2, reset_timeout="10s", name="payments")
    engine = make_engine(clock=clock)
    engine.define("pay").step("call", steps.flaky_service, breaker=breaker)
    engine.define("refund").step("call", steps.flaky_service, breaker=breaker)  # same breaker
    down = tmp_path / "down"
    down.touch()
    payload = {"log": str(counter_file), "down": str(down)}

    def fails(workflow: str) -> af.StepFailed:
        with pytest.raises(af.StepFailed) as info:
            engine.trigger(workflow, payload).result(timeout=30)
        return info.value

    with engine:
        assert breaker.state == "closed"
        assert isinstance(fails("pay").__cause__, ConnectionError)
        assert breaker.state == "closed"  # one failure of two
        assert isinstance(fails("refund").__cause__, ConnectionError)
        assert breaker.state == "open"  # two in a row, across workflows
        assert executions(counter_file) == {"call": 2}
        err = fails("pay")  # fails fast: nothing ran
        assert "circuit breaker 'payments' is open" in str(err)
        assert executions(counter_file) == {"call": 2}
        stats = engine.statistics()["breakers"]["payments"]
        assert (stats["state"], stats["opened"], stats["rejected"]) == ("open", 1, 1)
        clock.advance(10)
        assert breaker.state == "half_open"
        assert isinstance(fails("pay").__cause__, ConnectionError)  # the trial fails...
        assert breaker.state == "open"  # ...so it opens again
        assert executions(counter_file) == {"call": 3}
        clock.advance(10)
        down.unlink()  # the service is back
        assert engine.trigger("refund", payload).result(timeout=30) == "ok"
        assert breaker.state == "closed"
        assert engine.trigger("pay", payload).result(timeout=30) == "ok"
    assert executions(counter_file) == {"call": 5}


def test_an_open_circuit_is_retried_by_policy(
    make_engine: MakeEngine, counter_file: Path, tmp_path: Path
) -> None:
    clock = af.ManualClock()
    breaker = af.CircuitBreaker(failure_threshold=1, reset_timeout="30s")
    engine = make_engine(clock=clock)
    engine.define("pay").step(
        "call",
        steps.flaky_service,
        breaker=breaker,
        retry=af.Retry(attempts=3, delay="20s", backoff="fixed"),
    )
    down = tmp_path / "down"
    down.touch()
    with engine:
        run = engine.trigger("pay", {"log": str(counter_file), "down": str(down)})
        wait_until(lambda: run.inspect().step("call").status == af.StepStatus.RETRYING)
        assert breaker.state == "open" and executions(counter_file) == {"call": 1}
        clock.advance(20)  # attempt 2: the circuit is still open, fails without running
        wait_until(lambda: run.inspect().step("call").attempt == 2)
        wait_until(lambda: run.inspect().step("call").status == af.StepStatus.RETRYING)
        assert executions(counter_file) == {"call": 1}
        down.unlink()
        clock.advance(20)  # attempt 3, 40 s after the opening: a trial, which succeeds
        assert run.result(timeout=30) == "ok"
        attempts = run.inspect().step("call").attempts
        assert [a.status for a in attempts] == ["failed", "failed", "succeeded"]
        assert "CircuitOpen" in (attempts[1].error or "")
    assert executions(counter_file) == {"call": 2} and breaker.state == "closed"


def test_non_retryable_circuit_open_fails_at_once(make_engine: MakeEngine, tmp_path: Path) -> None:
    breaker = af.CircuitBreaker(failure_threshold=1, reset_timeout="1h")
    engine = make_engine()
    engine.define("pay").step(
        "call",
        steps.flaky_service,
        breaker=breaker,
        retry=af.Retry(attempts=5, delay=0, non_retryable=(af.CircuitOpen, ConnectionError)),
    )
    down = tmp_path / "down"
    down.touch()
    with engine:
        with pytest.raises(af.StepFailed):
            engine.trigger("pay", {"down": str(down)}).result(timeout=30)
        run = engine.trigger("pay", {"down": str(down)})
        with pytest.raises(af.StepFailed) as info:
            run.result(timeout=30)
        assert info.value.attempt == 1 and "is open" in str(info.value)


def test_bad_breakers_are_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold: expected an integer >= 1"):
        af.CircuitBreaker(failure_threshold=0)
    engine = af.Engine(store="memory")
    engine.define("w").step("s", steps.add_one, breaker="yes")
    with pytest.raises(af.DefinitionError, match=r"breaker: expected af\.CircuitBreaker"):
        engine.start()


def test_code_workflow_steps_share_a_breaker_and_never_spin(
    make_engine: MakeEngine, counter_file: Path, tmp_path: Path
) -> None:
    from tests import code_steps

    clock = af.ManualClock()
    breaker = af.CircuitBreaker(failure_threshold=1, reset_timeout="1m", name="code")
    engine = make_engine(clock=clock)

    @engine.workflow("calls")
    async def calls(ctx: af.WorkflowContext, log: str, down: str) -> str:
        # Unlimited attempts, no delay: an open circuit must still wait, not spin.
        retry = af.Retry(maximum_attempts=0, delay=0)
        return await ctx.step(  # type: ignore[no-any-return]
            "call", code_steps.service_call, log, down, retry=retry, breaker=breaker
        )

    down = tmp_path / "down"
    down.touch()
    with engine:
        run = engine.trigger("calls", str(counter_file), str(down))
        wait_until(lambda: breaker.state == "open")
        wait_until(lambda: run.inspect().step("call").status == af.StepStatus.RETRYING)
        attempts = run.inspect().step("call").attempt
        assert attempts <= 3, attempts  # opened after the first failure; then it waits
        assert executions(counter_file) == {"call": 1}
        assert engine.statistics()["breakers"]["code"]["state"] == "open"
        down.unlink()
        clock.advance(60)
        assert run.result(timeout=30) == "ok"
        assert breaker.state == "closed"
    assert executions(counter_file) == {"call": 2}
