"""Retry policies, exact counts, and durable backoff timers on a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

import actorflow as af
from tests import steps
from tests.conftest import executions, wait_until


def test_attempts_are_exact(engine: af.Engine, counter_file: Path) -> None:
    engine.define("w").step("boom", steps.fail_always, retry=af.Retry(attempts=3, delay=0))
    with engine, pytest.raises(af.StepFailed) as info:
        engine.trigger("w", {"log": str(counter_file)}).result(timeout=30)
    assert executions(counter_file) == {"boom": 3}
    assert info.value.attempt == 3
    assert "boom on attempt 3" in str(info.value.__cause__)  # the last error


def test_non_retryable_stops_at_once(engine: af.Engine, counter_file: Path) -> None:
    engine.define(
        "w", retry=af.Retry(attempts=5, delay=0, non_retryable=(steps.NotRetryable,))
    ).step("nr", steps.fail_not_retryable)
    with engine, pytest.raises(af.StepFailed) as info:
        engine.trigger("w", {"log": str(counter_file)}).result(timeout=30)
    assert executions(counter_file) == {"nr": 1}
    assert isinstance(info.value.__cause__, steps.NotRetryable)


def test_success_after_failures(engine: af.Engine, counter_file: Path) -> None:
    engine.define("w").step("flaky", steps.fail_until, retry=af.Retry(attempts=5, delay=0))
    with engine:
        run = engine.trigger("w", {"log": str(counter_file), "succeed_on": 3})
        assert run.result(timeout=30) == "ok on attempt 3"
        step = run.inspect().step("flaky")
        assert (step.attempt, step.failures) == (3, 2)
        assert [a.status for a in step.attempts] == ["failed", "failed", "succeeded"]
        assert step.error is None
    assert executions(counter_file) == {"flaky": 3}


def test_backoff_waits_on_the_durable_timer(
    make_engine: pytest.FixtureRequest, counter_file: Path
) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)  # type: ignore[operator]
    engine.define("w").step(
        "flaky", steps.fail_until, retry=af.Retry(attempts=3, backoff="exponential", delay="1h")
    )
    with engine:
        run = engine.trigger("w", {"log": str(counter_file), "succeed_on": 3})
        wait_until(lambda: run.inspect().step("flaky").status == af.StepStatus.RETRYING)
        step = run.inspect().step("flaky")
        assert step.next_retry_at == pytest.approx(clock.now() + 3600)
        clock.advance(3599)
        with pytest.raises(af.ResultTimeout):
            run.result(timeout=0.3)  # not due yet: nothing runs
        assert executions(counter_file) == {"flaky": 1}
        clock.advance(1)
        wait_until(lambda: executions(counter_file).get("flaky") == 2)
        wait_until(lambda: run.inspect().step("flaky").status == af.StepStatus.RETRYING)
        assert run.inspect().step("flaky").next_retry_at == pytest.approx(clock.now() + 7200)
        clock.advance(7200)  # exponential: the second wait is twice the first
        assert run.result(timeout=30) == "ok on attempt 3"


def test_backoff_timer_survives_a_restart(
    make_engine: pytest.FixtureRequest, counter_file: Path
) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)  # type: ignore[operator]
    engine.define("w").step("flaky", steps.fail_until, retry=af.Retry(attempts=2, delay="10m"))
    with engine:
        run = engine.trigger("w", {"log": str(counter_file), "succeed_on": 2})
        wait_until(lambda: run.inspect().step("flaky").status == af.StepStatus.RETRYING)
    engine2 = make_engine(clock=clock)  # type: ignore[operator]
    engine2.define("w").step("flaky", steps.fail_until, retry=af.Retry(attempts=2, delay="10m"))
    with engine2:
        clock.advance(600)
        assert engine2.run(run.id).result(timeout=30) == "ok on attempt 2"
    assert executions(counter_file) == {"flaky": 2}


def test_cancel_while_retrying_drops_the_timer(
    make_engine: pytest.FixtureRequest, counter_file: Path
) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)  # type: ignore[operator]
    engine.define("w").step("boom", steps.fail_always, retry=af.Retry(attempts=3, delay="1h"))
    with engine:
        run = engine.trigger("w", {"log": str(counter_file)})
        wait_until(lambda: run.inspect().step("boom").status == af.StepStatus.RETRYING)
        assert run.cancel("stop retrying")
        clock.advance(7200)
        with pytest.raises(af.RunCancelled):
            run.result(timeout=10)
    assert executions(counter_file) == {"boom": 1}
    from actorflow.store import LmdbStore
    from actorflow.store import _keys as K

    store = LmdbStore(engine.config.data_dir, read_only=True)
    assert store.scan(K.TIMERS) == []  # nothing left to fire after a restart
    store.close()
