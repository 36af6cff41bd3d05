"""A run's event history (issue 25: the dashboard's history page, as Temporal shows one).

``engine.history(run_id)`` reads the events back from the records: a graph run's attempts
(a retry, the branch it took, an approval requested then resumed) and a code run's commands
and signals, in time order, over REST and the client too. Real workers, real LMDB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

import actorflow as af
from tests import code_steps, steps
from tests.conftest import wait_until
from tests.serving import serve

MakeEngine = Callable[..., af.Engine]


async def waits_for_signal(ctx: af.WorkflowContext, payload: Any) -> str:
    got = await ctx.wait_for_signal("go", timeout="1h", default="none")
    done: str = await ctx.step("echo", code_steps.add, str(got), "")
    return done


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_a_graph_runs_history_in_time_order(make_engine: MakeEngine, tmp_path: Any) -> None:
    engine = make_engine(workers=2)
    (
        engine.define("order")
        .step("flaky", steps.fail_until, retry=af.Retry(attempts=3, delay=0))
        .if_("big", lambda ctx: True)
        .human_in_the_loop("approve", description="Approve it")
        .endif()
        .step("done", lambda ctx: "done")
    )
    with engine:
        run = engine.trigger("order", {"succeed_on": 2}, idempotency_key="o-1")
        wait_until(lambda: engine.approvals(run_id=run.id) != [])
        engine.resume(engine.approvals(run_id=run.id)[0]["token"], {"ok": True})
        run.result(timeout=60)
        events = engine.history(run.id)
        assert events == run.history()
        types = _types(events)
        assert types[0] == "run_triggered" and "o-1" in events[0]["detail"]
        assert types[-1] == "run_completed"
        times = [e["time"] for e in events]
        assert times == sorted(times)
        flaky = [(e["type"], e["attempt"]) for e in events if e["step"] == "flaky"]
        assert flaky == [
            ("step_started", 1),
            ("step_failed", 1),
            ("step_started", 2),
            ("step_succeeded", 2),
        ]
        failed = next(e for e in events if e["type"] == "step_failed")
        assert "not yet (attempt 1)" in failed["detail"]
        assert ("branch_taken", "big") in [(e["type"], e["step"]) for e in events]
        approval = [e["type"] for e in events if e["step"] == "approve"]
        assert approval.index("approval_requested") < approval.index("approval_resumed")
        resumed = next(e for e in events if e["type"] == "approval_resumed")
        assert resumed["detail"] == 'payload {"ok":true}'
        asked = types.index("approval_requested")
        assert asked < types.index("approval_resumed") < types.index("run_completed")
        with pytest.raises(af.RunNotFound):
            engine.history("no-such-run")


def test_a_code_runs_history_has_its_commands_and_signals(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(workers=1)
    engine.workflow("signalled")(waits_for_signal)
    with engine:
        run = engine.trigger("signalled", {})
        wait_until(lambda: any(e["type"] == "command" for e in engine.history(run.id)))
        run.signal("go", "yes")
        assert run.result(timeout=60) == "yes"
        events = engine.history(run.id)
        types = _types(events)
        assert types.index("signal_received") < types.index("run_completed")
        commands = [e for e in events if e["type"] == "command"]
        assert [c["step"] for c in commands][:1] == ["go"]
        assert any(c["step"] == "echo" and c["detail"].startswith("step") for c in commands)
        signal = next(e for e in events if e["type"] == "signal_received")
        assert signal["detail"] == "go"
        with serve(engine.asgi()) as url:
            listed = httpx.get(f"{url}/api/runs/{run.id}/history").json()
            assert listed == events
            assert httpx.get(f"{url}/api/runs/nope/history").status_code == 404
            with af.Client(url) as client:
                assert client.history(run.id) == events
