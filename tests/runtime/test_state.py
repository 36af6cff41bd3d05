"""Persistent state: engine.state and ctx.state, TTL, atomic incr from many workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import actorflow as af
from actorflow.store import _keys as K


def bump(ctx: Any) -> int:
    total = 0
    for _ in range(25):
        total = ctx.state.incr("hits")
    return total


def remember(ctx: Any) -> Any:
    ctx.state.set("seen:" + ctx.payload["user"], ctx.payload, ttl=ctx.payload.get("ttl"))
    ctx.state.mset({"a": 1, "b": [2, 3]})
    return {
        "got": ctx.state.get("seen:" + ctx.payload["user"]),
        "missing": ctx.state.get("nope", "fallback"),
        "keys": ctx.state.keys("seen:"),
        "many": ctx.state.mget(["a", "b", "zzz"]),
        "exists": ctx.state.exists("a"),
    }


def bad_incr(ctx: Any) -> int:
    ctx.state.set("name", "ada")
    return ctx.state.incr("name")


def test_engine_state_operations(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock, workers=1)
    state = engine.state
    with pytest.raises(af.EngineNotRunning):
        state.get("x")
    with engine:
        assert state.get("x") is None
        assert state.get("x", 7) == 7
        state.set("x", {"deep": [1, 2]})
        assert state.get("x") == {"deep": [1, 2]}
        assert state.incr("n") == 1
        assert state.incr("n", 41) == 42
        assert state.exists("n") and not state.exists("nope")
        state.mset({"p:1": "a", "p:2": "b", "q": "c"})
        assert state.keys("p:") == ["p:1", "p:2"]
        assert state.mget(["p:2", "nope", "q"]) == ["b", None, "c"]
        assert state.delete("q") is True
        assert state.delete("q") is False
        assert state.clear("p:") == 2
        assert state.keys() == ["n", "x"]
        # Workflow scopes are separate from the global one.
        assert state.of("orders").get("x") is None
        state.of("orders").set("x", 1)
        assert state.get("x") == {"deep": [1, 2]}
        with pytest.raises(af.ClientError, match="state key"):
            state.set("", 1)
        with pytest.raises(af.ClientError, match="ttl"):
            state.set("k", 1, ttl="soon")
        with pytest.raises(af.ClientError, match="incr expected an integer"):
            state.incr("x")
    # Durable: a new engine on the same store reads it.
    engine2 = make_engine(clock=clock, workers=1)
    with engine2:
        assert engine2.state.get("n") == 42
        assert engine2.state.of("orders").get("x") == 1


def test_ttl_on_read_and_sweep(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock, workers=1, sweep_interval=3600)
    with engine:
        engine.state.set("short", 1, ttl="10s")
        engine.state.set("long", 2, ttl="1h")
        engine.state.set("forever", 3)
        assert engine.state.incr("short") == 2  # keeps its expiry
        clock.advance(11)
        assert engine.state.get("short") is None
        assert not engine.state.exists("short")
        assert engine.state.keys() == ["forever", "long"]
        store = engine._store
        assert store is not None
        # Still stored until swept...
        assert store.get(K.STATE, K.state_key("", "short")) is not None
        # ...and the background sweep (every sweep_interval on the engine's clock) removes it.
        clock.advance(3600)
        from tests.conftest import wait_until

        wait_until(lambda: store.get(K.STATE, K.state_key("", "short")) is None)
        wait_until(lambda: store.get(K.STATE, K.state_key("", "long")) is None)
        assert engine.state.get("forever") == 3
        assert [k for k, _ in store.scan(K.STATE, b"x")] == []


def test_concurrent_incr_from_worker_processes_is_exact(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine(workers=4)
    engine.define("bump").for_each("many", items=lambda ctx: range(40), body=bump)
    with engine:
        runs = [engine.trigger("bump") for _ in range(3)]
        for run in runs:
            run.result(timeout=120)
        # 3 runs x 40 items x 25 increments, from 4 processes at once: none lost.
        assert engine.state.of("bump").get("hits") == 3 * 40 * 25


def test_ctx_state_in_steps(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    engine.define("mem").step("remember", remember)
    engine.define("bad").step("bad", bad_incr)
    with engine:
        out = engine.trigger("mem", {"user": "ada", "ttl": "1h"}).result(timeout=30)
        assert out == {
            "got": {"user": "ada", "ttl": "1h"},
            "missing": "fallback",
            "keys": ["seen:ada"],
            "many": [1, [2, 3], None],
            "exists": True,
        }
        # What a step wrote is durable and in its workflow's scope.
        assert engine.state.of("mem").get("a") == 1
        assert engine.state.get("a") is None
        # A state error inside a step is a ClientError naming the problem.
        with pytest.raises(af.StepFailed) as info:
            engine.trigger("bad").result(timeout=30)
        assert "incr expected an integer" in str(info.value)


def test_state_in_engine_side_predicates(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(workers=1)
    (
        engine.define("gate")
        .if_("open", lambda ctx: ctx.state.get("open", False))
        .step("in", lambda ctx: "in")
        .else_()
        .step("out", lambda ctx: "out")
        .endif()
    )
    with engine:
        assert engine.trigger("gate").result(timeout=30) == "out"
        engine.state.of("gate").set("open", True)
        assert engine.trigger("gate").result(timeout=30) == "in"
