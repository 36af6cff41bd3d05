"""Lifecycle events: typed, in recorded order, delivered once durable, off the actors' threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import steps

MakeEngine = Callable[..., af.Engine]


def test_events_of_a_run_with_a_retry_and_a_child(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine()
    engine.define("child").step("inner", steps.add_one)
    (
        engine.define("parent")
        .step("flaky", steps.fail_until, retry=af.Retry(attempts=3, delay="10ms"))
        .subflow("sub", "child", input=lambda ctx: {"n": 1})
    )
    seen: list[Any] = []
    status_when_told: list[af.RunStatus] = []
    threads: set[str] = set()

    def listen(event: Any) -> None:
        threads.add(threading.current_thread().name)
        seen.append(event)
        if isinstance(event, af.RunFinished):
            # Delivered once durable: the store already says so.
            status_when_told.append(engine.inspect(event.run_id).status)

    engine.subscribe(listen)
    finished: list[af.RunFinished] = []
    engine.subscribe(finished.append, af.RunFinished)
    with engine:
        payload = {"log": str(tmp_path / "log"), "succeed_on": 2}
        run = engine.trigger("parent", payload)
        run.result(timeout=60)
    child_id = engine.inspect(run.id).steps[1].child_run_id
    kinds = [
        (type(e).__name__, getattr(e, "step", None), getattr(e, "outcome", None)) for e in seen
    ]
    assert kinds == [
        ("RunStarted", None, None),
        ("StepAttempted", "flaky", "error"),
        ("StepAttempted", "flaky", "succeeded"),
        ("RunStarted", None, None),
        ("StepAttempted", "inner", "succeeded"),
        ("RunFinished", None, None),
        ("RunFinished", None, None),
    ]
    started = [e for e in seen if isinstance(e, af.RunStarted)]
    assert [(e.run_id, e.parent_run_id) for e in started] == [(run.id, None), (child_id, run.id)]
    attempts = [e for e in seen if isinstance(e, af.StepAttempted)]
    assert [e.attempt for e in attempts[:2]] == [1, 2]
    assert attempts[0].error and "attempt 1" in attempts[0].error
    assert all(e.started_at is not None and e.ended_at >= e.started_at for e in attempts)
    assert [(e.run_id, e.status) for e in finished] == [
        (child_id, af.RunStatus.COMPLETED),
        (run.id, af.RunStatus.COMPLETED),
    ]
    assert status_when_told == [af.RunStatus.COMPLETED, af.RunStatus.COMPLETED]
    assert threads == {"actorflow-lifecycle"}


def test_a_failing_subscriber_is_logged_and_others_still_hear(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine()
    engine.define("bad").step("boom", steps.fail_always)
    heard: list[af.RunFinished] = []
    told = threading.Event()

    def broken(event: Any) -> None:
        raise ValueError("subscriber bug")

    def hear(event: af.RunFinished) -> None:
        heard.append(event)
        told.set()

    engine.subscribe(broken)
    stop = engine.subscribe(hear, af.RunFinished)
    with engine:
        with pytest.raises(af.StepFailed):
            engine.trigger("bad", {}).result(timeout=60)
        assert told.wait(30)  # delivered after the result: on its own thread
        stop()  # unsubscribed: the next run is not heard
        with pytest.raises(af.StepFailed):
            engine.trigger("bad", {}).result(timeout=60)
    assert len(heard) == 1 and heard[0].status == af.RunStatus.FAILED
    assert heard[0].error and "boom on attempt 1" in heard[0].error
    assert "lifecycle subscriber" in caplog.text and "subscriber bug" in caplog.text
    with pytest.raises(af.ClientError, match=r"expected af\.RunStarted"):
        engine.subscribe(print, int)  # type: ignore[arg-type]


def test_the_harness_waits_for_subscribers(workflow_test: Callable[..., Any]) -> None:
    engine = af.Engine(store="memory")
    wf = engine.define("w").step("a", lambda ctx: 1)
    t = workflow_test(wf)
    seen: list[str] = []
    t.engine.subscribe(lambda e: seen.append(type(e).__name__))
    t.run(None)
    assert seen == ["RunStarted", "StepAttempted", "RunFinished"]
