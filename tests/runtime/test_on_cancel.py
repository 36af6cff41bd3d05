"""A graph workflow's ``on_cancel`` handler runs as the step ``on_cancel`` of a cancelled run
(issue 24.1): the running steps are stopped first (their workers killed), the run ends
cancelled once the handler has ended, and a crash meanwhile does not lose it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from tests import steps
from tests.code.test_cancellation import gone
from tests.conftest import sigkill_when, wait_until

MakeEngine = Callable[..., af.Engine]
ROOT = Path(__file__).resolve().parents[2]


def lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def define(engine: af.Engine) -> None:
    engine.define("job", on_cancel=steps.on_cancel_cleanup).step("first", steps.add_one).step(
        "long", steps.sleep_forever
    )


def test_on_cancel_runs_once_after_the_steps_are_stopped(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    define(engine)
    with engine:
        run = engine.trigger("job", {"n": 1, "log": str(log)})
        wait_until(lambda: any(parts[0] == "long" for parts in lines(log)))
        worker = int(next(p for p in lines(log) if p[0] == "long")[2])
        assert run.cancel("no longer needed") is True
        with pytest.raises(af.RunCancelled):
            run.result(timeout=30)
        wait_until(lambda: gone(worker))  # the cancelled step's worker was killed
        d = run.inspect()
        assert d.status == af.RunStatus.CANCELLED and d.cancel_reason == "no longer needed"
        assert d.step("long").status == af.StepStatus.CANCELLED
        handler = d.step("on_cancel")
        assert handler.status == af.StepStatus.SUCCEEDED
        # It saw the run's recorded steps (the cancelled one has no output).
        assert handler.output == "\"cleaned up after ['first']\""
    assert [p[0] for p in lines(log)] == ["first", "long", "on_cancel"]


def test_without_on_cancel_a_cancel_ends_the_run_at_once(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("plain").step("long", steps.sleep_forever)
    with engine:
        run = engine.trigger("plain", {})
        wait_until(lambda: run.inspect().step("long").status == af.StepStatus.RUNNING)
        run.cancel()
        assert run.status() == af.RunStatus.CANCELLED
        assert all(s.name != "on_cancel" for s in run.inspect().steps)


def test_a_failing_on_cancel_still_ends_the_run_cancelled(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("bad", on_cancel=steps.fail_always).step("long", steps.sleep_forever)
    with engine:
        run = engine.trigger("bad", {})
        wait_until(lambda: run.inspect().step("long").status == af.StepStatus.RUNNING)
        run.cancel("stop")
        with pytest.raises(af.RunCancelled):
            run.result(timeout=30)
        handler = run.inspect().step("on_cancel")
        assert handler.status == af.StepStatus.FAILED
        assert handler.error is not None and handler.error.type == "tests.steps.Boom"


def test_a_node_named_on_cancel_is_refused(make_engine: MakeEngine) -> None:
    engine = make_engine()
    wf = engine.define("clash", on_cancel=steps.noop).step("on_cancel", steps.noop)
    with pytest.raises(af.DefinitionError, match="named 'on_cancel'"):
        wf.build()


@pytest.mark.crash
def test_on_cancel_survives_an_engine_sigkill(
    make_engine: MakeEngine, tmp_path: Path, data_dir: Path
) -> None:
    log, gate = tmp_path / "log", tmp_path / "gate"
    run_id = sigkill_when(
        tmp_path,
        f"""
            import time
            from pathlib import Path
            import actorflow as af
            from tests.runtime.test_on_cancel import define, lines

            log = Path({str(log)!r})
            engine = af.Engine(data_dir={str(data_dir)!r}, workers=2)
            define(engine)
            with engine:
                run = engine.trigger("job", {{"n": 1, "log": str(log), "gate": {str(gate)!r}}})
                while not any(p[0] == "long" for p in lines(log)):
                    time.sleep(0.02)
                run.cancel("shutting down")
                while not any(p[0] == "on_cancel" for p in lines(log)):
                    time.sleep(0.02)
                print("HANDLING", run.id, flush=True)
                time.sleep(600)
            """,
        "HANDLING",
    )

    engine = make_engine()
    define(engine)
    with engine:
        run = engine.run(run_id)
        assert run.status() == af.RunStatus.RUNNING  # its handler had not ended
        gate.write_text("go")
        with pytest.raises(af.RunCancelled):
            run.result(timeout=60)
        d = run.inspect()
        assert d.cancel_reason == "shutting down"
        assert d.step("on_cancel").status == af.StepStatus.SUCCEEDED
        assert d.step("long").status == af.StepStatus.CANCELLED
    # The handler in flight at the kill ran again (at least once); the long step never did.
    assert [p[0] for p in lines(log)] == ["first", "long", "on_cancel", "on_cancel"]
