"""The garbage collector while engines run (engine/_collector.py).

Two halves of one promise, that a full collection does not stall the event loop for tens of
milliseconds when thousands of runs are in flight: what a run allocates forms no reference
cycles (so reference counting frees it all and nothing is lost by freezing), and the policy
freezes the survivors of each full collection, thaws to collect the cycles it deferred, and
leaves the process as it found it.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from actorflow.engine import _collector
from actorflow.engine._collector import CollectorPolicy


def _double(ctx: af.StepContext) -> int:
    return int(ctx.payload["n"]) * 2


# Run in a fresh interpreter: the test process holds other tests' engines, whose own
# structures (stopped engines' cores, a session server's threads) turn to garbage at times
# of their choosing. What is checked is what runs leave behind.
_WORKLOAD = r"""
import asyncio, gc, json, sys
import actorflow as af

def double(ctx):
    return int(ctx.payload["n"]) * 2

def twice(n):
    return n * 2

def garbage():
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    ours = []
    for obj in found:
        code = getattr(obj, "__code__", None) or getattr(obj, "cr_code", None)
        if code is not None and "/actorflow/" in code.co_filename:
            ours.append(obj.__qualname__)
        elif type(obj).__module__.startswith("actorflow."):
            ours.append(type(obj).__qualname__)
    return ours

engine = af.Engine(data_dir=sys.argv[1], workers=1, durability="fast", collector="python")
engine.define("double").step("n", double)

@engine.workflow("code")
async def code(ctx, n):
    return int(await ctx.step("twice", twice, n))

async def waits():
    runs = [await engine.trigger_async("double", {"n": i}) for i in range(20)]
    runs += [await engine.trigger_async("code", i) for i in range(20)]
    out = await asyncio.gather(*(r.result_async(timeout=60) for r in runs))
    again = [await r.result_async(timeout=60) for r in runs[:3]]  # already finished
    return [*out, *again]

with engine:
    engine.trigger("double", {"n": 0}).result(timeout=60)  # warm every path up
    asyncio.run(waits())
    garbage()  # what starting and warming up left
    runs = [engine.trigger("double", {"n": i}) for i in range(20)]
    runs += [engine.trigger("code", i) for i in range(20)]
    assert [r.result(timeout=60) for r in runs] == [2 * (i % 20) for i in range(40)]
    assert asyncio.run(waits())[:40] == [2 * (i % 20) for i in range(40)]
    print(json.dumps(garbage()))
"""


def test_runs_leave_no_cyclic_garbage(tmp_path: Path) -> None:
    """Graph and code runs, waited for in both APIs: nothing of ours needs the collector."""
    done = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    cyclic = json.loads(done.stdout.strip().splitlines()[-1])
    assert not cyclic, f"{len(cyclic)} objects of actorflow in cycles: {sorted(set(cyclic))}"


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> _Node:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a


def test_policy_freezes_survivors_and_thaws_deferred_cycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    policy = CollectorPolicy(clock=lambda: now[0])
    monkeypatch.setattr(_collector, "_SLACK", 10**9)  # always "quiet": the clock decides
    if gc.get_freeze_count() > _collector.BASELINE:
        pytest.skip("something in this process froze objects already")
    alive: _Node | None = _cycle()
    held = weakref.ref(alive)
    policy.acquire()
    try:
        gc.collect()  # a full collection: its survivors (the cycle among them) are frozen
        assert gc.get_freeze_count() > _collector.BASELINE and policy.freezes == 1
        alive = None
        # Dropped now, but frozen: a full collection does not walk it.
        gc.collect()
        assert held() is not None
        now[0] += _collector.THAW_AFTER  # a thaw is due: at the end of the next full collection
        gc.collect()
        assert policy.thaws == 1 and gc.get_freeze_count() <= _collector.BASELINE
        gc.collect()  # walks everything once: the deferred cycle is freed
        assert held() is None
        assert gc.get_freeze_count() > _collector.BASELINE  # and freezing resumes
    finally:
        policy.release()
    assert gc.get_freeze_count() <= _collector.BASELINE  # left as it was found
    assert _collector.policy is not policy


def test_policy_thaws_when_never_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    policy = CollectorPolicy(clock=lambda: now[0])
    monkeypatch.setattr(_collector, "_SLACK", -(10**9))  # never "quiet"
    if gc.get_freeze_count() > _collector.BASELINE:
        pytest.skip("something in this process froze objects already")
    policy.acquire()
    try:
        gc.collect()
        now[0] += _collector.THAW_AFTER
        gc.collect()
        assert policy.thaws == 0  # not quiet: it waits
        now[0] += _collector.THAW_AT_MOST
        gc.collect()
        assert policy.thaws == 1
    finally:
        policy.release()


def test_engine_holds_the_policy_while_running(make_engine: Callable[..., af.Engine]) -> None:
    users = _collector.policy._users
    engine = make_engine()
    engine.define("double").step("n", _double)
    with engine:
        assert _collector.policy._users == users + 1
        gc.collect()
        seen = engine.health()["checks"]["collector"]
        assert seen["ok"] and seen["policy"] == "freeze" and seen["frozen"] > _collector.BASELINE
        assert engine.trigger("double", {"n": 4}).result(timeout=60) == 8
    assert _collector.policy._users == users
    if users == 0:
        assert gc.get_freeze_count() <= _collector.BASELINE


def test_collector_python_leaves_it_alone(
    make_engine: Callable[..., af.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTORFLOW_COLLECTOR", "python")
    users = _collector.policy._users
    engine = make_engine()
    assert engine.config.collector == "python"
    with engine:
        assert _collector.policy._users == users
        assert engine.health()["checks"]["collector"] == {"ok": True, "policy": "python"}
    with pytest.raises(af.ConfigError, match="collector: expected 'freeze' or 'python'"):
        af.Engine(collector="off")
