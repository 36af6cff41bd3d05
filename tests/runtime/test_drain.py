"""Graceful shutdown: SIGTERM mid-step drains, refuses new work, and recovery finishes the rest."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(path: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def _child(data_dir: Path, log: Path, seconds: float, drain: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.drain_child",
            str(data_dir),
            str(log),
            str(seconds),
            str(drain),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(data_dir: Path, slow: Callable[[Any], str] | None = None) -> tuple[str, list[str]]:
    """Start an engine on the store again (recovery) and return the run's result and steps.

    ``slow`` replaces the slow step (same name, same workflow) when given.
    """
    from tests import drain_child

    engine = af.Engine(data_dir=data_dir, workers=1)
    engine.define("deploy").step("slow", slow or drain_child.slow).step("after", drain_child.after)
    with engine:
        (summary,) = engine.runs()
        run = engine.run(summary.id)
        result = run.result(timeout=60)
        attempts = [
            f"{s.name}:" + ",".join(a.status for a in s.attempts) for s in run.inspect().steps
        ]
    return result, attempts


@pytest.mark.crash
def test_sigterm_lets_the_step_in_flight_finish_and_starts_no_new_one(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    proc = _child(data_dir, log, seconds=1.5, drain=30)
    _wait_for(log, "start slow 1")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 0, (out, err)
    assert "RESULT" not in out  # the run did not finish in this process...
    lines = log.read_text().splitlines()
    assert lines == ["start slow 1", "end slow 1"]  # ...its step finished; "after" never began
    assert took < 25  # the drain ended when the step did, not at the deadline
    result, attempts = _finish(data_dir)
    assert result == "slow done, then after"
    assert attempts[0] == "slow:succeeded"  # slow's result was kept, never run again
    # "after" was recorded as dispatched during the drain but never started: that was no
    # attempt (not an interrupted one). It ran once, after the restart, as attempt 1.
    assert attempts[1] == "after:succeeded"
    assert log.read_text().splitlines() == ["start slow 1", "end slow 1", "start after 1"]


@pytest.mark.crash
def test_a_step_past_the_drain_deadline_is_stopped_and_runs_again_after_restart(
    tmp_path: Path,
) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    proc = _child(data_dir, log, seconds=30, drain=0.5)
    _wait_for(log, "start slow 1")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "end slow" not in log.read_text()  # it did not wait for the 30 s step
    assert not _worker_pids(proc.pid)  # no worker left behind
    # The next start runs the step again (a quick version of it: 30 s is too long to wait).
    result, attempts = _finish(data_dir, _quick)
    assert result == "slow done, then after"
    assert attempts[0].startswith("slow:interrupted,") and attempts[0].endswith("succeeded")


def _worker_pids(parent: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(parent).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _quick(ctx: object) -> str:
    return "slow done"


def test_new_work_is_refused_while_draining(tmp_path: Path) -> None:
    engine = af.Engine(data_dir=tmp_path / "store", workers=1)
    from tests import steps

    engine.define("slow").step("s", steps.slow)
    engine.start()
    log = tmp_path / "exec.log"
    engine.trigger("slow", {"sleep": 1.0, "log": str(log)})
    wait_until(lambda: log.exists() and "s 1" in log.read_text())  # the step is running
    stopper = threading.Thread(target=engine.stop, kwargs={"drain": True, "timeout": 30})
    stopper.start()
    wait_until(lambda: engine._stopping)  # the drain has begun (the step still runs)
    with pytest.raises(af.EngineNotRunning, match="stopping"):
        engine.trigger("slow", {"sleep": 0})
    with pytest.raises(af.EngineNotRunning, match="stopping"):
        engine.publish("anything", 1)
    stopper.join(30)
    assert not engine.running
    engine.start()  # and it starts again, taking work
    try:
        assert engine.trigger("slow", {"sleep": 0}).result(timeout=30) == "slow done"
    finally:
        engine.stop()
