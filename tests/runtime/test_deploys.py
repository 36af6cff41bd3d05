"""Deploys that keep runs alive: a graph run goes on on the plan it started with.

Each test runs engines in sequence on one data_dir, as a redeployed service does: V1 starts
runs that wait (for an event, or behind a concurrency limit), the engine stops (cleanly, or
SIGKILLed in a child process), and V2, a changed definition, starts on the same store. Every
step execution appends a marker line, so "ran once" is counted across processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests.conftest import executions, wait_until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def mark(ctx: af.StepContext) -> str:
    """A step: one marker line per execution; its output is its name."""
    with open(ctx.payload["log"], "a") as log:
        log.write(f"{ctx.run.step} {ctx.run.id}\n")
    return ctx.run.step


def mark_item(item: Any, ctx: af.StepContext) -> int:
    with open(ctx.payload["log"], "a") as log:
        log.write(f"item {ctx.run.id} {item}\n")
    return int(item) * 10


renamed_item = mark_item  # the same body under another name (a refactor)


def _items(ctx: Any) -> list[int]:
    return [1, 2, 3, 4, 5]


def _key(ctx: Any) -> str:
    return str(ctx.payload["k"])


def _v1(engine: af.Engine, **options: Any) -> None:
    (
        engine.define("deploy", **options)
        .step("a", mark)
        .wait_for_event("go", name="gate", key=_key)
        .step("b", mark)
    )


def _v2_appended(engine: af.Engine, **options: Any) -> None:
    """V2: V1 with a step ``c`` appended."""
    (
        engine.define("deploy", **options)
        .step("a", mark)
        .wait_for_event("go", name="gate", key=_key)
        .step("b", mark)
        .step("c", mark)
    )


def _started(engine: af.Engine, log: Path, n: int, first: int = 0) -> list[str]:
    """n runs of "deploy", each waiting at its gate (step a done)."""
    runs = [
        engine.trigger("deploy", {"log": str(log), "k": f"k{i}"}).id
        for i in range(first, first + n)
    ]
    wait_until(lambda: sum(executions(log).values()) >= n + first, timeout=60)
    return runs


def _at_gate(engine: af.Engine, run_id: str) -> bool:
    try:
        return engine.inspect(run_id).step("gate").status == "running"
    except KeyError:
        return False


def _go(engine: af.Engine, keys: list[str]) -> None:
    for key in keys:
        engine.publish("go", None, key=key)


def _by_run(log: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        step, run_id = line.split()[:2]
        out.setdefault(run_id, []).append(step)
    return out


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "markers.log"
    path.touch()
    return path


def test_an_appended_step_applies_to_runs_started_after_the_deploy(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    _v1(v1)
    with v1:
        old = _started(v1, log, 3)
    v2 = make_engine(durability="fast")
    # V2 appends a step, inserts one before the gate (where the old runs are), and retimes b.
    (
        v2.define("deploy")
        .step("early", mark)
        .step("a", mark)
        .wait_for_event("go", name="gate", key=_key)
        .step("b", mark, timeout=30)
        .step("c", mark)
    )
    with v2:
        _go(v2, ["k0", "k1", "k2"])
        assert [v2.run(r).result(timeout=60) for r in old] == ["b"] * 3
        new = v2.trigger("deploy", {"log": str(log), "k": "new"})
        wait_until(lambda: new.id in _by_run(log), timeout=60)
        _go(v2, ["new"])
        assert new.result(timeout=60) == "c"
        details = v2.inspect(old[0])
        drawn = [n["name"] for n in v2.graph("deploy", old[0])["nodes"]]
        now = [n["name"] for n in v2.graph("deploy")["nodes"]]
    ran = _by_run(log)
    assert all(ran[r] == ["a", "b"] for r in old)  # on their own plan: no early, no c
    assert ran[new.id] == ["early", "a", "b", "c"]
    assert [s.name for s in details.steps] == ["a", "gate", "b"]  # shown through its plan
    assert "early" not in drawn and "c" not in drawn and {"early", "c"} <= set(now)


def test_removed_steps_a_run_has_passed_change_nothing_and_one_it_reaches_holds_it(
    make_engine: Callable[..., af.Engine], log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = make_engine(durability="fast")
    _v1(v1)
    with v1:
        old = _started(v1, log, 2)
    # V2 drops a (passed) and b (not reached yet).
    v2 = make_engine(durability="fast")
    v2.define("deploy").wait_for_event("go", name="gate", key=_key).step("c", mark)
    held = af.RunStatus.WAITING_FOR_DEFINITION
    with caplog.at_level(logging.WARNING, logger="actorflow.engine"), v2:
        _go(v2, ["k0", "k1"])
        wait_until(lambda: all(v2.run(r).status() is held for r in old), timeout=60)
        assert "step 'b' of this run's plan is not defined" in caplog.text
        reason = v2.inspect(old[0]).held
        assert reason is not None and "step 'b' of this run's plan is not defined" in reason
        assert v2.statistics()["waiting_for_definition"] == 2
        assert [r.id for r in v2.runs("deploy", status=held)] == sorted(old, reverse=True)
    # The code comes back: the held runs take step b up and finish.
    v3 = make_engine(durability="fast")
    _v1(v3)
    with v3:
        assert [v3.run(r).result(timeout=60) for r in old] == ["b", "b"]
    assert all(_by_run(log)[r] == ["a", "b"] for r in old)


def test_for_each_concurrency_and_body_name_are_not_the_runs_business(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    def define(engine: af.Engine, body: Any, concurrency: int) -> None:
        (
            engine.define("fan")
            .wait_for_event("go", name="gate", key=_key)
            .for_each("items", _items, body, concurrency=concurrency)
        )

    v1 = make_engine(durability="fast")
    define(v1, mark_item, 2)
    with v1:
        run = v1.trigger("fan", {"log": str(log), "k": "f"})
        wait_until(lambda: _at_gate(v1, run.id), timeout=60)
    v2 = make_engine(durability="fast")
    define(v2, renamed_item, 4)
    with v2:
        _go(v2, ["f"])
        assert run.id and v2.run(run.id).result(timeout=60) == [10, 20, 30, 40, 50]
    assert sorted(line.split()[2] for line in log.read_text().splitlines()) == list("12345")


def test_queued_runs_take_the_definition_current_when_they_start(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    _v1(v1, concurrency=1)
    with v1:
        first = _started(v1, log, 1)[0]
        queued = [v1.trigger("deploy", {"log": str(log), "k": f"q{i}"}).id for i in range(2)]
        assert all(v1.run(r).status() is af.RunStatus.QUEUED for r in queued)
    v2 = make_engine(durability="fast")
    (
        v2.define("deploy", concurrency=1)
        .step("a", mark)
        .wait_for_event("go", name="gate", key=_key)
        .step("b", mark)
        .step("c", mark)
    )
    with v2:
        _go(v2, ["k0"])
        assert v2.run(first).result(timeout=60) == "b"  # started under V1: its plan
        for key, run_id in zip(["q0", "q1"], queued, strict=True):
            wait_until(lambda run_id=run_id: run_id in _by_run(log), timeout=60)
            _go(v2, [key])
            assert v2.run(run_id).result(timeout=60) == "c"  # started under V2
    ran = _by_run(log)
    assert ran[first] == ["a", "b"] and all(ran[r] == ["a", "b", "c"] for r in queued)


_V1_PROCESS = """
import sys, time
import actorflow as af
from tests.runtime.test_deploys import _at_gate, _v1
engine = af.Engine(data_dir=sys.argv[1], workers=1, durability="sync")
_v1(engine)
engine.start()
runs = [engine.trigger("deploy", {"log": sys.argv[2], "k": f"k{i}"}).id for i in range(3)]
while not all(_at_gate(engine, r) for r in runs):  # step a recorded: killed at the gate
    time.sleep(0.05)
print(" ".join(runs), flush=True)
time.sleep(600)
"""


def sigkilled_v1(data_dir: Path, log: Path) -> list[str]:
    """V1 in a child process with three runs at their gate (step a done), SIGKILLed."""
    root = Path(__file__).resolve().parent.parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", _V1_PROCESS, str(data_dir), str(log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert child.stdout is not None
        runs = child.stdout.readline().split()
        assert len(runs) == 3
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    return runs


def test_sigkilled_v1_then_v2_with_an_appended_step(
    data_dir: Path, log: Path, make_engine: Callable[..., af.Engine]
) -> None:
    runs = sigkilled_v1(data_dir, log)
    v2 = make_engine(durability="fast")
    _v2_appended(v2)
    with v2:
        _go(v2, ["k0", "k1", "k2"])
        assert [v2.run(r).result(timeout=60) for r in runs] == ["b"] * 3
    assert all(_by_run(log)[r] == ["a", "b"] for r in runs)


def test_a_store_of_the_previous_release_keeps_its_runs_through_a_changed_definition(
    tmp_path: Path, log: Path, make_engine: Callable[..., af.Engine]
) -> None:
    """The fixture was written by the release before plans were kept (format 3): three runs
    of V1 wait at their gate. V2 appends a step; they finish on their own plan."""
    shutil.copytree(FIXTURES / "store-format3-deploy", tmp_path / "old")
    runs = (tmp_path / "old" / "runs.txt").read_text().split()
    v2 = make_engine(data_dir=tmp_path / "old" / "store", durability="fast")
    _v2_appended(v2)
    with v2:
        for r in runs:
            v2.run(r).inspect()  # readable
        _go(v2, ["k0", "k1", "k2"])
        assert [v2.run(r).result(timeout=60) for r in runs] == ["b"] * 3


def test_an_approval_in_flight_through_a_deploy_that_adds_a_branch(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    v1.define("ok").step("a", mark).human_in_the_loop("sign").step("b", mark)
    with v1:
        run = v1.trigger("ok", {"log": str(log)})
        wait_until(lambda: bool(v1.approvals(run_id=run.id)), timeout=60)
        token = v1.approvals(run_id=run.id)[0]["token"]
    v2 = make_engine(durability="fast")
    (
        v2.define("ok")
        .step("a", mark)
        .human_in_the_loop("sign")
        .if_("always", lambda ctx: True)
        .step("extra", mark)
        .endif()
        .step("b", mark)
    )
    with v2:
        v2.resume(token, {"ok": True})
        assert v2.run(run.id).result(timeout=60) == "b"
        again = v2.trigger("ok", {"log": str(log)})
        wait_until(lambda: bool(v2.approvals(run_id=again.id)), timeout=60)
        v2.resume(v2.approvals(run_id=again.id)[0]["token"], {"ok": True})
        assert again.result(timeout=60) == "b"
    ran = _by_run(log)
    assert ran[run.id] == ["a", "b"] and ran[again.id] == ["a", "extra", "b"]


def test_a_renamed_step_holds_the_runs_that_reach_its_old_name(
    make_engine: Callable[..., af.Engine], log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = make_engine(durability="fast")
    _v1(v1)
    with v1:
        old = _started(v1, log, 1)[0]
    v2 = make_engine(durability="fast")
    v2.define("deploy").step("a", mark).wait_for_event("go", name="gate", key=_key).step(
        "b_renamed", mark
    )
    with caplog.at_level(logging.WARNING, logger="actorflow.engine"), v2:
        _go(v2, ["k0"])
        held = af.RunStatus.WAITING_FOR_DEFINITION
        wait_until(lambda: v2.run(old).status() is held, timeout=60)  # not failed
        assert "step 'b' of this run's plan" in caplog.text
    assert _by_run(log)[old] == ["a"]


def test_a_for_each_body_turned_into_a_flow(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    v1.define("fan").wait_for_event("go", name="gate", key=_key).for_each(
        "items", _items, mark_item
    )
    with v1:
        run = v1.trigger("fan", {"log": str(log), "k": "f"})
        wait_until(lambda: _at_gate(v1, run.id), timeout=60)
    v2 = make_engine(durability="fast")
    body = af.Flow().step("mark_item", mark).step("after", mark)
    v2.define("fan").wait_for_event("go", name="gate", key=_key).for_each("items", _items, body)
    with v2:
        _go(v2, ["f"])
        # Its plan's body is the one step ``mark_item``: the current code by that name.
        paths = [f"items[{i}]/mark_item" for i in range(5)]
        assert v2.run(run.id).result(timeout=60) == paths
    assert sorted(_by_run(log)[run.id]) == paths  # each item's one step, once; no "after"


async def _signalled(ctx: af.WorkflowContext, n: int) -> int:
    await ctx.wait_for_signal("go")
    return n * 2


def _three(engine: af.Engine) -> None:
    """V1 of three workflows: an event wait, an approval, and a code workflow's signal."""
    _v1(engine)
    engine.define("ok").step("a", mark).human_in_the_loop("sign").step("b", mark)
    engine.workflow("code")(_signalled)


def test_a_removed_workflow_holds_its_runs_visibly_until_it_returns(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    _three(v1)
    with v1:
        waiting = _started(v1, log, 1)[0]
        signing = v1.trigger("ok", {"log": str(log)}).id
        wait_until(lambda: bool(v1.approvals(run_id=signing)), timeout=60)
        token = v1.approvals(run_id=signing)[0]["token"]
        coded = v1.trigger("code", 21).id
        wait_until(lambda: v1.inspect(coded).status is af.RunStatus.RUNNING, timeout=60)
    # V2 defines none of the three.
    v2 = make_engine(durability="fast")
    v2.define("other").step("x", mark)
    held = af.RunStatus.WAITING_FOR_DEFINITION
    with v2:
        for run_id, workflow in ((waiting, "deploy"), (signing, "ok"), (coded, "code")):
            details = v2.inspect(run_id)
            assert details.status is held
            assert details.held is not None and f"workflow {workflow!r} is not defined" in (
                details.held
            )
        assert v2.statistics()["waiting_for_definition"] == 3
        with pytest.raises(af.ClientError, match="is waiting for its definition"):
            v2.resume(token, {"ok": True})
        with pytest.raises(af.ClientError, match="is waiting for its definition"):
            v2.run(coded).signal("go")
        with pytest.raises(af.ResultTimeout):
            v2.run(waiting).result(timeout=0.2)
    # V3 brings them back: each goes on from where it was.
    v3 = make_engine(durability="fast")
    _three(v3)
    with v3:
        wait_until(lambda: v3.inspect(waiting).status is af.RunStatus.RUNNING, timeout=60)
        assert v3.inspect(waiting).held is None
        _go(v3, ["k0"])
        v3.resume(token, {"ok": True})
        v3.run(coded).signal("go")
        assert v3.run(waiting).result(timeout=60) == "b"
        assert v3.run(signing).result(timeout=60) == "b"
        assert v3.run(coded).result(timeout=60) == 42
        assert v3.statistics()["waiting_for_definition"] == 0
    ran = _by_run(log)
    assert ran[waiting] == ["a", "b"] and ran[signing] == ["a", "b"]


def _boom(ctx: af.StepContext) -> None:
    raise ValueError("boom")


def test_an_ended_run_shows_no_node_running_and_no_pending_approval(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    """Failed by its timeout while asleep or at an approval, or by a failing parallel arm."""
    clock = af.ManualClock(1000.0)
    engine = make_engine(durability="fast", clock=clock)
    engine.define("nap", timeout=60).step("a", mark).sleep("zz", 3600).step("b", mark)
    engine.define("sign", timeout=60).step("a", mark).human_in_the_loop("ok").step("b", mark)
    arms = {"x": af.Flow().step("boom", _boom), "y": af.Flow().human_in_the_loop("ok2")}
    engine.define("arms").parallel("p", arms)
    with engine:
        runs = [engine.trigger(w, {"log": str(log)}) for w in ("nap", "sign", "arms")]
        wait_until(lambda: bool(engine.approvals(run_id=runs[1].id)), timeout=60)
        wait_until(lambda: engine.inspect(runs[0].id).step("zz").status == "running", 60)
        clock.advance(120)
        for run in runs:
            with pytest.raises(af.ActorflowError):
                run.result(timeout=60)
            steps = engine.inspect(run.id).steps
            assert run.status() is af.RunStatus.FAILED
            assert not [s.path for s in steps if s.status == "running"], steps
        assert engine.approvals() == []
