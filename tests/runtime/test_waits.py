"""wait_for_event and human_in_the_loop: early and late events, approvals, timeouts, restarts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import actorflow as af
from tests.conftest import wait_until


def _waiting(engine: af.Engine, run: af.RunHandle, step: str) -> bool:
    steps = {s.name: s for s in engine.inspect(run.id).steps}
    return step in steps and steps[step].status == af.StepStatus.RUNNING


def order_flow(engine: af.Engine, **wait: Any) -> None:
    (
        engine.define("order")
        .step("place", lambda ctx: {"order": ctx.payload["order"]})
        .wait_for_event("payment.settled", key=lambda ctx: ctx.payload["order"], **wait)
        .step("ship", lambda ctx: {"shipped": ctx.payload["order"], "paid": ctx.last})
    )


def test_event_published_after_the_wait(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    order_flow(engine)
    with engine:
        run = engine.trigger("order", {"order": "o-1"})
        wait_until(lambda: _waiting(engine, run, "payment.settled"))
        assert engine.publish("payment.settled", {"amount": 5}, key="o-2") == 0  # other key
        assert engine.publish("payment.settled", {"amount": 12}, key="o-1") == 1
        assert run.result(timeout=30) == {"shipped": "o-1", "paid": {"amount": 12}}
        details = engine.inspect(run.id)
        wait_step = {s.name: s for s in details.steps}["payment.settled"]
        assert wait_step.kind == "wait_for_event"
        assert wait_step.output == '{"amount":12}'


def test_event_published_before_the_wait_is_buffered(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    order_flow(engine)
    with engine:
        # Nobody waits yet: the keyed event is kept, then taken when the run gets there.
        assert engine.publish("payment.settled", {"amount": 3}, key="o-7") == 0
        run = engine.trigger("order", {"order": "o-7"})
        assert run.result(timeout=30) == {"shipped": "o-7", "paid": {"amount": 3}}
        # Taken once: a second run with the same key waits for a new event.
        run2 = engine.trigger("order", {"order": "o-7"})
        wait_until(lambda: _waiting(engine, run2, "payment.settled"))
        engine.publish("payment.settled", {"amount": 4}, key="o-7")
        assert run2.result(timeout=30)["paid"] == {"amount": 4}


def test_buffered_event_expires(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)
    order_flow(engine, timeout="1h", on_timeout="continue", default={"amount": None})
    with engine:
        engine.publish("payment.settled", {"amount": 3}, key="o-9", ttl="5m")
        clock.advance(301)
        run = engine.trigger("order", {"order": "o-9"})
        wait_until(lambda: _waiting(engine, run, "payment.settled"))
        clock.advance(3601)  # the wait times out and continues with its default
        assert run.result(timeout=30) == {"shipped": "o-9", "paid": {"amount": None}}


def test_match_filters_events_and_timeout_fails(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)
    (
        engine.define("big")
        .wait_for_event("tick", timeout="10m", match=lambda ctx, e: e["n"] > ctx.payload["min"])
        .step("done", lambda ctx: ctx.last["n"])
    )
    with engine:
        ok = engine.trigger("big", {"min": 5})
        late = engine.trigger("big", {"min": 100})
        wait_until(lambda: _waiting(engine, ok, "tick") and _waiting(engine, late, "tick"))
        assert engine.publish("tick", {"n": 1}) == 2  # delivered to both, matched by none
        engine.publish("tick", {"n": 9})
        assert ok.result(timeout=30) == 9
        clock.advance(601)
        with pytest.raises(af.StepFailed) as info:
            late.result(timeout=30)
        assert "WaitTimeout" in str(info.value) or "no event 'tick'" in str(info.value)
        assert late.status() == af.RunStatus.FAILED


def test_waiting_run_survives_restart_and_event_during_downtime(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    order_flow(engine)
    with engine:
        run = engine.trigger("order", {"order": "o-5"})
        wait_until(lambda: _waiting(engine, run, "payment.settled"))
    # A new engine: the run is still waiting (its registration was durable).
    engine2 = make_engine()
    order_flow(engine2)
    with engine2:
        assert engine2.publish("payment.settled", {"amount": 1}, key="o-5") == 1
        assert engine2.run(run.id).result(timeout=30)["paid"] == {"amount": 1}


def test_approval_resume_and_second_resume(make_engine: Callable[..., af.Engine]) -> None:
    tokens: list[str] = []
    paused = threading.Event()

    def notify(token: str, ctx: Any) -> None:
        tokens.append(token)
        paused.set()

    engine = make_engine()
    (
        engine.define("expense")
        .step("submit", lambda ctx: ctx.payload)
        .human_in_the_loop(
            "approve", timeout="1h", description="Approve?", on_pause=notify, metadata={"x": 1}
        )
        .step("book", lambda ctx: {"approved": ctx.last["ok"], "by": ctx.last["by"]})
    )
    with engine:
        run = engine.trigger("expense", {"amount": 50})
        assert paused.wait(30)
        token = tokens[0]
        assert len(token) >= 32
        pending = engine.approvals()
        assert [(a["token"], a["run_id"], a["step"]) for a in pending] == [
            (token, run.id, "approve")
        ]
        assert pending[0]["description"] == "Approve?" and pending[0]["metadata"] == {"x": 1}
        assert run.status() == af.RunStatus.RUNNING
        engine.resume(token, {"ok": True, "by": "ada"})
        assert run.result(timeout=30) == {"approved": True, "by": "ada"}
        with pytest.raises(af.ApprovalAlreadyResolved):
            engine.resume(token, {"ok": False})
        with pytest.raises(af.ApprovalNotFound):
            engine.resume("not-a-token", {})
        assert engine.approvals() == []
        [resumed] = engine.approvals(status="resumed")
        assert resumed["token"] == token
        assert resumed["payload"] == '{"ok":true,"by":"ada"}'  # what it was resumed with
        assert "payload" not in pending[0]
        with pytest.raises(af.ClientError, match="status"):
            engine.approvals(status="bogus")


def test_approval_survives_restart_then_expires(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()

    def define(engine: af.Engine) -> None:
        (
            engine.define("deploy")
            .human_in_the_loop("go", timeout="24h")
            .step("ship", lambda ctx: ctx.last)
        )

    engine = make_engine(clock=clock)
    define(engine)
    with engine:
        run = engine.trigger("deploy")
        wait_until(lambda: bool(engine.approvals()))
        token = engine.approvals()[0]["token"]
    engine2 = make_engine(clock=clock)
    define(engine2)
    with engine2:
        # The token survived the restart; resume works on the new engine.
        engine2.resume(token, "yes")
        assert engine2.run(run.id).result(timeout=30) == "yes"
        # A second pause expires: past its timeout, the run fails and the token is refused.
        run2 = engine2.trigger("deploy")
        wait_until(lambda: bool(engine2.approvals()))
        token2 = engine2.approvals()[0]["token"]
        clock.advance(24 * 3600 + 1)
        with pytest.raises(af.StepFailed):
            run2.result(timeout=30)
        with pytest.raises(af.ApprovalExpired):
            engine2.resume(token2, "too late")


def test_approval_timeout_fallback(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)
    (
        engine.define("auto")
        .human_in_the_loop("ok", timeout="1h", on_timeout="continue", default={"ok": False})
        .step("after", lambda ctx: ctx.last)
    )
    with engine:
        run = engine.trigger("auto")
        wait_until(lambda: bool(engine.approvals()))
        clock.advance(3601)
        assert run.result(timeout=30) == {"ok": False}


def test_cancelled_run_releases_its_wait_and_token(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    engine.define("w").human_in_the_loop("ok").step("s", lambda ctx: 1)
    engine.define("e").wait_for_event("ping").step("s", lambda ctx: 1)
    with engine:
        a = engine.trigger("w")
        b = engine.trigger("e")
        wait_until(lambda: bool(engine.approvals()) and _waiting(engine, b, "ping"))
        token = engine.approvals()[0]["token"]
        a.cancel("no longer needed")
        b.cancel("no longer needed")
        with pytest.raises(af.ApprovalAlreadyResolved):
            engine.resume(token, 1)
        assert engine.publish("ping") == 0


def test_wait_definition_errors() -> None:
    wf = af.Workflow("bad")
    wf.wait_for_event("", timeout="soon", on_timeout="maybe", match=lambda x: x)
    wf.human_in_the_loop("h", on_pause=lambda: None, metadata={"f": object()})
    with pytest.raises(af.DefinitionError) as info:
        wf.build()
    text = str(info.value)
    for part in ("event", "timeout", "on_timeout", "match", "on_pause", "metadata"):
        assert part in text, part
