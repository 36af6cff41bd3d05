"""Workflows started by published events, as cronflow's ``onEvent`` (issue 24.7).

``wf.on_event(name, key=fn)``: ``engine.publish(name, payload)`` starts a run of every
workflow with the trigger, the event's payload as its payload, once per event identity; the
runs are durable before the publish returns; an event published again starts nothing more,
and so does a publish repeated after an engine SIGKILL. Real workers, LMDB and SIGKILL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests.conftest import sigkill_when

MakeEngine = Callable[..., af.Engine]


def order_id(event: dict[str, Any]) -> str:
    return str(event["id"])


def ship(ctx: Any) -> str:
    return f"shipped {ctx.payload['id']}"


async def invoice(ctx: af.WorkflowContext, event: dict[str, Any]) -> str:
    total: str = await ctx.step("total", lambda e: f"invoiced {e['id']}", event)
    return total


def define(engine: af.Engine) -> None:
    engine.define("ship").step("ship", ship).on_event("order.created", key=order_id)
    engine.workflow("invoice")(invoice).on_event("order.created", key=order_id)
    engine.define("audit").step("log", lambda ctx: ctx.payload).on_event("audit")


def started_by(engine: af.Engine, workflow: str) -> Counter[str]:
    """How many runs of ``workflow`` each event identity started."""
    return Counter(
        engine.inspect(r.id).idempotency_key or "" for r in engine.runs(workflow, limit=None)
    )


def test_an_event_starts_one_run_of_each_subscribed_workflow_once_per_identity(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(workers=2)
    define(engine)
    with engine:
        assert engine.publish("order.created", {"id": 7, "sku": "a"}) == 2
        assert engine.publish("order.created", {"id": 8, "sku": "b"}) == 2
        # The same order again (a retry): its runs exist, nothing more starts.
        assert engine.publish("order.created", {"id": 7, "sku": "a"}) == 2
        assert started_by(engine, "ship") == {
            "event/order.created/7": 1,
            "event/order.created/8": 1,
        }
        assert started_by(engine, "invoice") == {
            "event/order.created/7": 1,
            "event/order.created/8": 1,
        }
        results = sorted(
            engine.run(r.id).result(timeout=60)
            for wf in ("ship", "invoice")
            for r in engine.runs(wf, limit=None)
        )
        assert results == ["invoiced 7", "invoiced 8", "shipped 7", "shipped 8"]
        assert engine.runs("audit", limit=None) == []


def test_without_a_key_function_the_publish_key_or_the_event_itself_is_the_identity(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(workers=1)
    define(engine)
    with engine:
        engine.publish("audit", {"n": 1}, key="k1")
        engine.publish("audit", {"n": 1}, key="k1")  # the same event: one run
        engine.publish("audit", {"n": 2})
        engine.publish("audit", {"n": 2})  # no identity: each publish is an event
        runs = engine.runs("audit", limit=None)
        assert len(runs) == 3
        keys = Counter(engine.inspect(r.id).idempotency_key or "" for r in runs)
        assert keys["event/audit/k1"] == 1
        assert sorted(engine.run(r.id).result(timeout=60)["n"] for r in runs) == [1, 2, 2]


def test_a_bad_event_fails_the_publish_before_anything_is_written(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(workers=1)
    define(engine)
    engine.define("waits").wait_for_event("order.created", key=lambda ctx: "x").step(
        "got", lambda ctx: ctx.last
    )
    with engine:
        waiter = engine.trigger("waits")
        with pytest.raises(af.ClientError, match=r"of workflow 'ship': key raised KeyError"):
            engine.publish("order.created", {"no id": 1}, key="x")
        with pytest.raises(af.ClientError, match="expected a non-empty string"):
            engine.publish("order.created", {"id": ""}, key="x")
        assert engine.runs("ship", limit=None) == []
        assert engine.runs("invoice", limit=None) == []
        assert waiter.status() == af.RunStatus.RUNNING  # it did not get the bad event
        assert engine.publish("order.created", {"id": 1}, key="x") == 3
        assert waiter.result(timeout=60) == {"id": 1}


def test_on_event_is_checked_at_definition() -> None:
    wf = af.Workflow("w").step("s", ship).on_event("", key="not a function")
    with pytest.raises(af.DefinitionError) as info:
        wf.build()
    assert "on_event(''): event: expected a non-empty string" in str(info.value)
    assert "key: expected a function key(payload) -> str" in str(info.value)


def test_each_event_starts_its_runs_exactly_once_across_an_engine_sigkill(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    acked = tmp_path / "acked"
    sigkill_when(
        tmp_path,
        f"""
            import threading
            import actorflow as af
            from tests.runtime.test_event_triggers import define

            engine = af.Engine(data_dir={str(data_dir)!r}, workers=2)
            define(engine)
            with engine:
                def publish_all():
                    for i in range(40):
                        engine.publish("order.created", {{"id": i}})
                        with open({str(acked)!r}, "a") as f:
                            f.write(f"{{i}}\\n")
                            f.flush()
                        if i == 15:
                            print("PUBLISHING x", flush=True)  # killed from here on

                threading.Thread(target=publish_all).start()
                import time
                time.sleep(600)
            """,
        "PUBLISHING",
    )
    confirmed = {int(line) for line in acked.read_text().split()}
    assert set(range(16)) <= confirmed
    engine = make_engine(data_dir=data_dir, workers=2)
    define(engine)
    with engine:
        for wf in ("ship", "invoice"):
            counts = started_by(engine, wf)
            # Every acknowledged event has its run; none has two (an in-flight one: 0 or 1).
            assert all(counts[f"event/order.created/{i}"] == 1 for i in confirmed)
            assert set(counts.values()) == {1}
        for i in range(40):  # the publisher sends everything again after the crash
            engine.publish("order.created", {"id": i})
        for wf, word in (("ship", "shipped"), ("invoice", "invoiced")):
            counts = started_by(engine, wf)
            assert counts == Counter({f"event/order.created/{i}": 1 for i in range(40)})
            outs = sorted(engine.run(r.id).result(timeout=60) for r in engine.runs(wf, limit=None))
            assert outs == sorted(f"{word} {i}" for i in range(40))
