"""Workflow hooks, as cronflow's (issue 24.7): ``on_success`` and ``on_failure`` run as steps
once a run's outcome is decided, through the mechanism ``on_cancel`` uses; the run ends with
its outcome once the hook has ended (a failing hook changes nothing), and a crash while a
hook runs does not lose it. Real workers, real LMDB, a real SIGKILL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from tests import steps
from tests.conftest import sigkill_when

MakeEngine = Callable[..., af.Engine]


def lines(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def define(engine: af.Engine) -> None:
    engine.define("pay", on_success=steps.on_run_end, on_failure=steps.on_run_end).step(
        "charge", steps.fail_if_asked
    )


def test_on_success_runs_as_a_step_after_the_run_completed(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    define(engine)
    with engine:
        run = engine.trigger("pay", {"log": str(log)})
        assert run.result(timeout=60) == 1  # the run's result is its last step's
        d = run.inspect()
        assert d.status == af.RunStatus.COMPLETED
        hook = d.step("on_success")
        assert hook.status == af.StepStatus.SUCCEEDED
        assert json.loads(hook.output) == "after ['charge']"
        assert "on_failure" not in {s.name for s in d.steps}
    assert lines(log) == ["charge", "on_success"]


def test_on_failure_sees_the_runs_error_and_the_run_stays_failed(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    define(engine)
    with engine:
        run = engine.trigger("pay", {"log": str(log), "fail": True})
        with pytest.raises(af.StepFailed, match="card declined"):
            run.result(timeout=60)
        d = run.inspect()
        assert d.status == af.RunStatus.FAILED
        assert d.error is not None and "card declined" in d.error.message
        hook = d.step("on_failure")
        assert hook.status == af.StepStatus.SUCCEEDED
        assert "card declined" in json.loads(hook.output)
    assert lines(log) == ["charge", "on_failure"]


def test_a_failing_hook_is_recorded_and_does_not_change_the_outcome(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine()
    define(engine)
    with engine:
        run = engine.trigger("pay", {"hook_fails": True})
        assert run.result(timeout=60) == 1
        hook = run.inspect().step("on_success")
        assert hook.status == af.StepStatus.FAILED
        assert hook.error is not None and "the hook broke" in hook.error.message


def test_a_hook_cut_by_an_engine_sigkill_runs_again_and_the_run_then_ends(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    gate = tmp_path / "gate"
    data_dir = tmp_path / "data"
    run_id = sigkill_when(
        tmp_path,
        f"""
            import time
            import actorflow as af
            from tests.runtime.test_hooks import define, lines
            from pathlib import Path

            engine = af.Engine(data_dir={str(data_dir)!r}, workers=1)
            define(engine)
            with engine:
                run = engine.trigger("pay", {{"log": {str(log)!r}, "gate": {str(gate)!r}}})
                while "on_success" not in lines(Path({str(log)!r})):
                    time.sleep(0.02)
                assert run.status() == af.RunStatus.RUNNING  # until its hook has ended
                print("HOOKING", run.id, flush=True)
                time.sleep(600)
            """,
        "HOOKING",
    )
    gate.touch()
    engine = make_engine(data_dir=data_dir)
    define(engine)
    with engine:
        run = engine.run(run_id)
        assert run.result(timeout=60) == 1
        assert run.inspect().step("on_success").status == af.StepStatus.SUCCEEDED
        assert run.inspect().step("on_success").attempt == 2
    # The step ran once (it had ended); the hook twice (it was in flight at the crash).
    assert lines(log) == ["charge", "on_success", "on_success"]


def test_a_node_may_not_take_a_hooks_name() -> None:
    wf = af.Workflow("w", on_success=steps.on_run_end).step("on_success", steps.add_one)
    with pytest.raises(af.DefinitionError, match="the step its on_success hook is recorded as"):
        wf.build()


def test_an_error_handler_reads_an_exception_that_could_not_be_pickled(
    make_engine: MakeEngine,
) -> None:
    # It reaches the handler as a RemoteError, which must itself survive pickling (it did not:
    # reading ctx.error raised TypeError in the worker).
    engine = make_engine()
    engine.define("odd").step("s", steps.fail_unpicklable).on_error(steps.describe_error)
    with engine:
        out = engine.trigger("odd", {}).result(timeout=60)
    assert out == "RemoteError: tests.steps.Unpicklable: 1-2"
