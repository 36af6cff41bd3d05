"""Code workflows survive real SIGKILLs: replay returns recorded steps without running them.

Each scenario kills the engine process at a precise point (fault points armed through
ACTORFLOW_CRASH_AT, or a step that kills the engine), restarts it on the same store, and
counts real executions: every step completed exactly once in the record, and only the step
in flight at the kill ran twice.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

import actorflow as af
from tests.conftest import executions
from tests.runtime.test_recovery import child, finish, recorded_completions, result_line

pytestmark = pytest.mark.crash

STEPS = {f"s{i}" for i in range(20)}


def assert_exactly_once(data_dir: Path, log: Path) -> dict[str, int]:
    assert recorded_completions(data_dir) == {name: 1 for name in STEPS}
    counts = executions(log)
    assert set(counts) == STEPS, counts
    return counts


@pytest.mark.parametrize(
    ("crash_at", "rerun"),
    [
        ("dispatcher.before_send=8", set()),  # s7's dispatch recorded, never sent: sent again
        ("shard.before_record=5", {"s4"}),  # s4 ran, its result not recorded: runs again
        ("writer.after_commit=12", set()),  # result + next dispatch durable, not acted on
    ],
)
def test_sigkill_at_a_point_replays_without_rerunning(
    tmp_path: Path, crash_at: str, rerun: set[str]
) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "code", crash_at=crash_at))
    assert code == -signal.SIGKILL, (out, err)
    assert "RESULT" not in out
    code, out, err = finish(child(data_dir, log, "code"))
    assert code == 0, err
    assert result_line(out) == str(sum(range(20)))
    counts = assert_exactly_once(data_dir, log)
    assert {name for name, n in counts.items() if n > 1} == rerun, counts
    assert all(n <= 2 for n in counts.values()), counts


def test_sigkill_mid_step_reruns_only_that_step(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "code-kill"))
    assert code == -signal.SIGKILL, (out, err)
    code, out, err = finish(child(data_dir, log, "code-kill"))
    assert code == 0, err
    assert result_line(out) == str(sum(range(20)))
    counts = assert_exactly_once(data_dir, log)
    assert counts["s7"] == 2
    assert all(n == 1 for name, n in counts.items() if name != "s7"), counts
    engine = af.Engine(data_dir=data_dir)
    s7 = engine.inspect(engine.runs()[0].id).step("s7")
    assert [a.status for a in s7.attempts] == ["interrupted", "succeeded"]


def test_sigkill_while_sleeping_then_signal(tmp_path: Path) -> None:
    """A run killed in a durable sleep wakes after the restart, takes a signal, finishes;
    the steps before the sleep never run again and ctx.uuid4() replays identically."""
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    proc = child(data_dir, log, "code-sleep", "start")
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("SLEEPING"):
            break
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    code, out, err = finish(child(data_dir, log, "code-sleep", "finish"))
    assert code == 0, err
    got, value, uid = eval(result_line(out))
    assert got == [0, 1, 2, 0, 1, 2]
    assert value == "green"
    counts = executions(log)
    assert counts == {"a0": 1, "a1": 1, "a2": 1, "b0": 1, "b1": 1, "b2": 1}
    # The run's id seeds ctx.uuid4(): replaying the history gives the same value again.
    from tests.crash_child import _code_engine

    engine = _code_engine(str(data_dir), str(log), False)
    run = engine.runs()[0]
    assert run.status == af.RunStatus.COMPLETED
    replayed = af.testing.replay(engine.export_history(run.id), engine._definitions["napper"])
    assert replayed.ok, replayed
    assert replayed.outcome == "completed"
    assert replayed.result == [[0, 1, 2, 0, 1, 2], "green", uid]
    assert executions(log) == counts  # replaying ran nothing
