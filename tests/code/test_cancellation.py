"""A cancel reaches the workflow's code, as in Temporal (issue 24.1).

``asyncio.CancelledError`` is raised where the function waits; the step it awaited is
stopped (its worker killed); the function may catch it and run clean-up steps, then end
cancelled (re-raising) or even complete. Real workers, real SIGKILL of the engine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import code_steps as cs
from tests.conftest import executions, sigkill_when, wait_until

MakeEngine = Callable[..., af.Engine]
ROOT = Path(__file__).resolve().parents[2]


def pid_of(log: Path, name: str) -> int:
    return next(
        int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith(name)
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is gone too: its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def cleanup_flow(log: str, reraise: bool) -> Callable[..., Any]:
    async def flow(ctx: af.WorkflowContext) -> str:
        try:
            await ctx.step("long", cs.hang, log, "long")
            return "not cancelled"
        except asyncio.CancelledError:
            await ctx.step("cleanup", cs.logged, log, "cleanup", "clean")
            if reraise:
                raise
            return "cleaned up and completed"

    return flow


def steps_of(engine: af.Engine, run_id: str) -> dict[str, af.StepDetails]:
    return {s.path: s for s in engine.inspect(run_id).steps}


def test_cancel_during_a_step_runs_cleanup_once_and_kills_the_worker(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    engine.workflow("job")(cleanup_flow(str(log), reraise=True))
    with engine:
        run = engine.trigger("job")
        wait_until(lambda: log.exists() and "long" in executions(log))
        worker = pid_of(log, "long")
        assert run.cancel("user asked") is True
        with pytest.raises(af.RunCancelled):
            run.result(timeout=30)
        assert run.status() == af.RunStatus.CANCELLED
        wait_until(lambda: gone(worker))  # the cancelled step's worker was killed
        steps = steps_of(engine, run.id)
        assert steps["long"].status == af.StepStatus.CANCELLED
        assert steps["cleanup"].status == af.StepStatus.SUCCEEDED
        assert engine.inspect(run.id).cancel_reason == "user asked"
        assert run.cancel("again") is False  # finished
    assert executions(log) == {"long": 1, "cleanup": 1}


def test_cancel_caught_and_the_run_completes(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    engine.workflow("job")(cleanup_flow(str(log), reraise=False))
    with engine:
        run = engine.trigger("job")
        wait_until(lambda: log.exists() and "long" in executions(log))
        run.cancel()
        assert run.result(timeout=30) == "cleaned up and completed"
        assert run.status() == af.RunStatus.COMPLETED
    assert executions(log) == {"long": 1, "cleanup": 1}


def test_a_second_cancel_while_cleaning_up_changes_nothing(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    gate = tmp_path / "gate"
    engine = make_engine()

    @engine.workflow("job")
    async def job(ctx: af.WorkflowContext) -> str:
        try:
            await ctx.wait_for_signal("never")
        except asyncio.CancelledError:
            await ctx.step("cleanup", cs.wait_file, str(gate))  # waits for the gate file
            await ctx.step("after", cs.logged, str(log), "after", 1)
            raise
        return "no"

    with engine:
        run = engine.trigger("job")
        wait_until(lambda: "never" in steps_of(engine, run.id))
        assert run.cancel("first") is True
        wait_until(lambda: "cleanup" in steps_of(engine, run.id))
        assert run.cancel("second") is True  # still being cancelled: not ended at once
        assert run.status() == af.RunStatus.RUNNING
        gate.write_text("go")
        with pytest.raises(af.RunCancelled):
            run.result(timeout=30)
        assert engine.inspect(run.id).cancel_reason == "first"
        assert steps_of(engine, run.id)["never"].status == af.StepStatus.CANCELLED
    assert executions(log) == {"after": 1}


def test_terminate_ends_a_run_that_is_cleaning_up(make_engine: MakeEngine, tmp_path: Path) -> None:
    log, gate = tmp_path / "log", tmp_path / "gate"
    engine = make_engine()
    engine.workflow("job")(gated_flow(str(log), str(gate)))
    with engine:
        run = engine.trigger("job")
        wait_until(lambda: log.exists() and "long" in executions(log))
        run.cancel("first")
        wait_until(lambda: "cleanup" in steps_of(engine, run.id))
        assert run.terminate("enough") is True  # its clean-up is not waited for
        with pytest.raises(af.RunCancelled):
            run.result(timeout=30)
        assert steps_of(engine, run.id)["cleanup"].status == af.StepStatus.CANCELLED
        assert run.terminate() is False
    assert "done" not in executions(log)


def test_the_code_may_cancel_a_step_itself(make_engine: MakeEngine, tmp_path: Path) -> None:
    """The same mechanism: a step future the code cancels (here, a race's loser) is stopped
    at once, while the run goes on (it used to run until the run ended)."""
    log = tmp_path / "log"
    engine = make_engine()

    @engine.workflow("race")
    async def race(ctx: af.WorkflowContext) -> str:
        slow = asyncio.ensure_future(ctx.step("slow", cs.hang, str(log), "slow"))
        gate = asyncio.ensure_future(ctx.wait_for_signal("go"))
        done, pending = await asyncio.wait({slow, gate}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await ctx.wait_for_signal("end")
        return str(next(iter(done)).result())

    with engine:
        run = engine.trigger("race")
        wait_until(lambda: log.exists() and "slow" in executions(log))
        worker = pid_of(log, "slow")
        run.signal("go", "won")
        wait_until(lambda: steps_of(engine, run.id)["slow"].status == af.StepStatus.CANCELLED)
        wait_until(lambda: gone(worker))
        assert run.status() == af.RunStatus.RUNNING
        run.signal("end")
        assert run.result(timeout=30) == "won"
    assert executions(log) == {"slow": 1}


@pytest.mark.crash
def test_cancel_survives_an_engine_sigkill_during_cleanup(
    make_engine: MakeEngine, tmp_path: Path, data_dir: Path
) -> None:
    """Cancelled, cleaning up, the engine SIGKILLed: after a restart the clean-up finishes
    once, the cancelled step never runs again, and the run ends cancelled."""
    log = tmp_path / "log"
    gate = tmp_path / "gate"
    run_id = sigkill_when(
        tmp_path,
        f"""
            import time
            from pathlib import Path
            import actorflow as af
            from tests.code.test_cancellation import gated_flow

            log = Path({str(log)!r})

            engine = af.Engine(data_dir={str(data_dir)!r}, workers=2)
            engine.workflow("job")(gated_flow({str(log)!r}, {str(gate)!r}))
            with engine:
                run = engine.trigger("job")
                while not (log.exists() and "long" in log.read_text()):
                    time.sleep(0.02)
                run.cancel("stop it")
                while not any(s.name == "cleanup" for s in engine.inspect(run.id).steps):
                    time.sleep(0.02)
                print("CLEANING", run.id, flush=True)
                time.sleep(600)
            """,
        "CLEANING",
    )

    engine = make_engine()
    engine.workflow("job")(gated_flow(str(log), str(gate)))
    with engine:
        run = engine.run(run_id)
        assert run.status() == af.RunStatus.RUNNING  # still cleaning up
        gate.write_text("go")
        with pytest.raises(af.RunCancelled):
            run.result(timeout=60)
        steps = steps_of(engine, run_id)
        assert steps["long"].status == af.StepStatus.CANCELLED
        assert steps["cleanup"].status == af.StepStatus.SUCCEEDED
        assert engine.inspect(run_id).cancel_reason == "stop it"
    counts = executions(log)
    assert counts["long"] == 1 and counts["done"] == 1, counts


def gated_flow(log: str, gate: str) -> Callable[..., Any]:
    async def flow(ctx: af.WorkflowContext) -> str:
        try:
            await ctx.step("long", cs.hang, log, "long")
        except asyncio.CancelledError:
            await ctx.step("cleanup", cs.wait_file, gate)
            await ctx.step("done", cs.logged, log, "done", 1)
            raise
        return "no"

    return flow
