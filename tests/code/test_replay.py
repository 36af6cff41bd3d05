"""Replay against changed code: nondeterminism caught at its position, patches, panics.

A "deploy" here is a new engine on the same store whose workflow function has changed; its
runs are rebuilt by replay at start, exactly as after a crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.views import read_run
from tests import code_steps as cs
from tests.conftest import executions, wait_until

MakeEngine = Callable[..., af.Engine]
ROOT = Path(__file__).resolve().parents[2]


def record(engine: af.Engine, run_id: str) -> dict[str, Any]:
    return engine._read(read_run, run_id)


def waiting_at(engine: af.Engine, run: af.RunHandle, name: str) -> None:
    wait_until(lambda: any(s.name == name for s in engine.inspect(run.id).steps))


def order_v1(log: str) -> Callable[..., Any]:
    async def order(ctx: af.WorkflowContext) -> list[Any]:
        a = await ctx.step("a", cs.logged, log, "a", 1)
        b = await ctx.step("b", cs.logged, log, "b", 2)
        go = await ctx.wait_for_signal("go")
        c = await ctx.step("c", cs.logged, log, "c", 3)
        return [a, b, go, c]

    return order


def order_v2(log: str) -> Callable[..., Any]:
    async def order(ctx: af.WorkflowContext) -> list[Any]:
        a = await ctx.step("a", cs.logged, log, "a", 1)
        x = await ctx.step("x", cs.logged, log, "x", 2)  # was "b": not deterministic
        go = await ctx.wait_for_signal("go")
        return [a, x, go]

    return order


def test_nondeterministic_change_is_caught_with_its_position(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = str(tmp_path / "log")
    first = make_engine()
    first.workflow("order")(order_v1(log))
    with first:
        run = first.trigger("order")
        waiting_at(first, run, "go")
        doc = first.export_history(run.id)

    # The changed code, checked offline before the deploy: the divergence and where.
    check = af.testing.replay(doc, order_v2(log))
    assert not check.ok
    assert (check.position, check.expected, check.actual) == (1, "step 'b'", "step 'x'")
    assert af.testing.replay(doc, order_v1(log)).ok

    # Deployed anyway: the run panics at start (it is replayed), history intact.
    second = make_engine()
    second.workflow("order", panic=af.PanicPolicy(max_restarts=0))(order_v2(log))
    with second:
        wait_until(lambda: second.run(run.id).status() == af.RunStatus.PANICKED)
        panic = record(second, run.id)["panic"]
        assert panic["type"] == "actorflow.errors.NondeterminismError"
        assert (panic["position"], panic["expected"], panic["actual"]) == (
            1, "step 'b'", "step 'x'",
        )  # fmt: skip
        with pytest.raises(af.NondeterminismError, match="history position 1"):
            second.run(run.id).query("anything")  # its state is not the one it had

    # Rolled back: a restart by hand replays it and it finishes; a and b never ran again.
    third = make_engine()
    third.workflow("order")(order_v1(log))
    with third:
        assert third.run(run.id).status() == af.RunStatus.PANICKED
        third.restart(run.id)
        waiting_at(third, third.run(run.id), "go")
        third.run(run.id).signal("go", "yes")
        assert third.run(run.id).result(timeout=30) == [1, 2, "yes", 3]
    assert executions(Path(log)) == {"a": 1, "b": 1, "c": 1}


def test_patched_takes_old_and_new_paths(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = str(tmp_path / "log")

    def v1() -> Callable[..., Any]:
        async def flow(ctx: af.WorkflowContext) -> list[Any]:
            a = await ctx.step("a", cs.logged, log, "a", "a")
            b = await ctx.step("old", cs.logged, log, "old", "old")
            await ctx.wait_for_signal("go")
            return [a, b]

        return flow

    def v2() -> Callable[..., Any]:
        async def flow(ctx: af.WorkflowContext) -> list[Any]:
            a = await ctx.step("a", cs.logged, log, "a", "a")
            if ctx.patched("use-new"):
                b = await ctx.step("new", cs.logged, log, "new", "new")
            else:
                b = await ctx.step("old", cs.logged, log, "old", "old")
            await ctx.wait_for_signal("go")
            return [a, b]

        return flow

    def v3() -> Callable[..., Any]:
        async def flow(ctx: af.WorkflowContext) -> list[Any]:
            a = await ctx.step("a", cs.logged, log, "a", "a")
            ctx.deprecate_patch("use-new")
            b = await ctx.step("new", cs.logged, log, "new", "new")
            await ctx.wait_for_signal("go")
            return [a, b]

        return flow

    first = make_engine()
    first.workflow("flow")(v1())
    with first:
        old_run = first.trigger("flow")
        waiting_at(first, old_run, "go")

    second = make_engine()
    second.workflow("flow")(v2())
    with second:
        new_run = second.trigger("flow")
        waiting_at(second, new_run, "go")
        for run in (old_run, new_run):
            second.run(run.id).signal("go")
        assert second.run(old_run.id).result(timeout=30) == ["a", "old"]  # started before
        assert second.run(new_run.id).result(timeout=30) == ["a", "new"]
        old_doc = second.export_history(old_run.id)
        new_doc = second.export_history(new_run.id)
    assert executions(Path(log)) == {"a": 2, "old": 1, "new": 1}
    assert af.testing.replay(old_doc, v2()).ok
    assert af.testing.replay(new_doc, v2()).ok
    # The patch marker is a command: the old code does not take the new run's path...
    check = af.testing.replay(new_doc, v1())
    assert (check.ok, check.position, check.expected) == (False, 1, "patch 'use-new'")
    # ...and once no old run is left, the deprecated patch still replays the new runs.
    assert af.testing.replay(new_doc, v3()).ok


PANICS = {"left": 0}


def test_panic_restart_by_policy_then_by_hand(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    engine = make_engine()
    PANICS["left"] = 99

    @engine.workflow("buggy", panic=af.PanicPolicy(max_restarts=2, delay="50ms"))
    async def buggy(ctx: af.WorkflowContext) -> str:
        done = await ctx.step("before", cs.logged, log, "before", "ok")
        if PANICS["left"] > 0:
            PANICS["left"] -= 1
            raise TypeError("a bug in the workflow code")
        return done + " after the fix"

    with engine:
        run = engine.trigger("buggy")
        # One panic, then two automatic restarts that panic again: it waits for a hand.
        wait_until(lambda: record(engine, run.id).get("restarts") == 2)
        wait_until(lambda: run.status() == af.RunStatus.PANICKED and PANICS["left"] == 96)
        rec = record(engine, run.id)
        assert rec["panic"]["type"] == "builtins.TypeError"
        assert "a bug in the workflow code" in rec["panic"]["message"]
        assert "restart_at" not in rec  # no automatic restart left
        with pytest.raises(af.ResultTimeout):
            run.result(timeout=0.2)
        PANICS["left"] = 0  # "deploy the fix"
        engine.restart(run.id)
        assert run.result(timeout=30) == "ok after the fix"
        assert record(engine, run.id)["restarts"] == 0
    assert executions(Path(log)) == {"before": 1}  # recorded once, replayed after each panic


def test_replay_tool_cli_and_history_files(make_engine: MakeEngine, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "import actorflow as af\n"
        "from tests import code_steps as cs\n"
        f"engine = af.Engine(data_dir={str(tmp_path / 'store')!r}, workers=1)\n"
        "@engine.workflow('sum')\n"
        "async def total(ctx, n):\n"
        "    values = [await ctx.step(f's{i}', cs.add, i, 1) for i in range(n)]\n"
        "    return sum(values)\n"
    )
    changed = tmp_path / "changed.py"
    changed.write_text(app.read_text().replace("f's{i}'", "f't{i}'"))
    sys.path.insert(0, str(tmp_path))
    try:
        import app as module  # type: ignore[import-not-found]

        with module.engine:
            run = module.engine.trigger("sum", 30)
            assert run.result(timeout=60) == sum(range(1, 31))
        exported = tmp_path / "history.json"
        module.engine.export_history(run.id, exported)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("app", None)
    env = {"PYTHONPATH": f"{ROOT}:{tmp_path}"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actorflow", "replay", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    ok = cli(run.id, "--app", "app:engine", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["outcome"] == "completed"
    assert report["result"] == sum(range(1, 31)) and report["commands"] == 30

    bad = cli("--history", str(exported), "--app", "changed:engine", "--json")
    assert bad.returncode == 4, bad.stderr  # diverged
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert (report["position"], report["expected"], report["actual"]) == (
        0,
        "step 's0'",
        "step 't0'",
    )

    text = cli("--history", str(exported), "--app", "changed:engine")
    assert text.returncode == 4
    assert "nondeterminism at history position 0" in text.stdout

    missing = cli("--history", str(tmp_path / "nope.json"), "--app", "app:engine")
    assert missing.returncode == 1  # an error, not a usage mistake
    assert "cannot read" in missing.stderr

    # Without --app: the function the stored definition names (app:total) is imported.
    found = cli(run.id[:10], "--data-dir", str(tmp_path / "store"))
    assert found.returncode == 0, found.stderr
    assert f"run {run.id} (sum): deterministic; 31 activations, 30 commands" in found.stdout
    exported_again = tmp_path / "again.json"
    both = cli(run.id, "--data-dir", str(tmp_path / "store"), "--export", str(exported_again))
    assert both.returncode == 0 and exported_again.exists(), both.stderr


def test_replay_of_a_long_history_runs_nothing(make_engine: MakeEngine) -> None:
    engine = make_engine(durability="fast")

    @engine.workflow("long")
    async def long(ctx: af.WorkflowContext, n: int) -> int:
        total = 0
        for i in range(n):
            total += await ctx.step("s", cs.add, i, 0)
        return total

    with engine:
        run = engine.trigger("long", 1000)
        assert run.result(timeout=120) == sum(range(1000))
        doc = engine.export_history(run.id)
    result = af.testing.replay(doc, long)
    assert result.ok and result.commands == 1000 and result.result == sum(range(1000))
    assert result.events == 2000  # a command and a resolution per step
    assert json.loads(json.dumps(doc)) == doc  # an exported history is plain JSON
