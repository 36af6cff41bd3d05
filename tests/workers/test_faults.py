"""Worker faults with real processes: exits, segfaults, SIGKILL, endless loops past a timeout.

In each case only the step that was running on that worker fails or retries; a step running
on the other worker at the same time finishes normally, and the pool is back at full size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import steps
from tests.conftest import executions, process_gone, wait_until

NO_RETRY = af.Retry(attempts=1)


def _with_bystander(engine: af.Engine, log: Path, fn: Callable[[Any], Any], **step: Any) -> None:
    engine.define("faulty").step("bad", fn, retry=NO_RETRY, **step)
    engine.define("bystander").step("slow", steps.slow)


@pytest.mark.parametrize(
    ("fn", "exitcode", "signal_name"),
    [
        (steps.exit_hard, 3, None),
        (steps.segfault, -11, "SIGSEGV"),
        (steps.sigkill_self, -9, "SIGKILL"),
    ],
)
def test_worker_crash_fails_only_its_step(
    engine: af.Engine,
    counter_file: Path,
    fn: Callable[[Any], Any],
    exitcode: int,
    signal_name: str | None,
) -> None:
    _with_bystander(engine, counter_file, fn)
    with engine:
        bystander = engine.trigger("bystander", {"sleep": 1.0, "log": str(counter_file)})
        wait_until(lambda: executions(counter_file).get("slow") == 1)
        bad = engine.trigger("faulty", {"log": str(counter_file)})
        with pytest.raises(af.WorkerCrashed) as info:
            bad.result(timeout=30)
        assert info.value.exitcode == exitcode
        assert info.value.signal_name == signal_name
        assert info.value.step == "bad" and info.value.attempt == 1
        assert bystander.result(timeout=30) == "slow done"
        err = engine.inspect(bad.id).error
        assert err is not None and err.kind == "crash" and err.exitcode == exitcode
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 2)
        # the replacement works
        engine.define("after").step("one", steps.add_one)
        assert engine.trigger("after", {"n": 1}).result(timeout=30) == 2
    assert executions(counter_file) == {"slow": 1, "bad": 1}


def test_endless_loop_is_killed_at_its_timeout(engine: af.Engine, counter_file: Path) -> None:
    _with_bystander(engine, counter_file, steps.spin_forever, timeout="500ms")
    with engine:
        bystander = engine.trigger("bystander", {"sleep": 1.5, "log": str(counter_file)})
        wait_until(lambda: executions(counter_file).get("slow") == 1)
        bad = engine.trigger("faulty", {"log": str(counter_file)})
        wait_until(lambda: "bad" in executions(counter_file))
        pid = int(counter_file.read_text().splitlines()[-1].split()[2])
        with pytest.raises(af.StepTimeout) as info:
            bad.result(timeout=30)
        assert info.value.timeout == 0.5
        assert bystander.result(timeout=30) == "slow done"
        wait_until(lambda: process_gone(pid))
        assert engine.inspect(bad.id).error.kind == "timeout"  # type: ignore[union-attr]
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 2)


def _pids(log: Path, step: str) -> list[int]:
    """The worker pids that ran ``step``, in order (``steps.record``'s third field)."""
    lines = [line.split() for line in log.read_text().splitlines()]
    return [int(fields[2]) for fields in lines if fields[0] == step]


def test_sleeping_step_is_killed_at_its_timeout(engine: af.Engine, counter_file: Path) -> None:
    engine.define("hang").step("hang", steps.sleep_forever, timeout=0.3, retry=NO_RETRY)
    with engine:
        with pytest.raises(af.StepTimeout):
            engine.trigger("hang", {"log": str(counter_file)}).result(timeout=30)
        (pid,) = _pids(counter_file, "hang")
        wait_until(lambda: process_gone(pid))  # killed: a sleeping process never ends alone
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 2)


def test_crash_is_retried_with_the_step_policy(engine: af.Engine, counter_file: Path) -> None:
    engine.define("retry").step(
        "flaky", steps.crash_first_attempt, retry=af.Retry(attempts=2, delay=0)
    )
    with engine:
        run = engine.trigger("retry", {"log": str(counter_file)})
        assert run.result(timeout=30) == "survived on attempt 2"
        attempts = run.inspect().step("flaky").attempts
        assert [(a.status, a.kind) for a in attempts] == [("failed", "crash"), ("succeeded", None)]
    assert executions(counter_file) == {"flaky": 2}


def test_timeout_is_retried_then_fails(engine: af.Engine, counter_file: Path) -> None:
    engine.define("t").step(
        "hang", steps.sleep_forever, timeout=0.2, retry=af.Retry(attempts=3, delay=0)
    )
    with engine:
        with pytest.raises(af.StepTimeout) as info:
            engine.trigger("t", {"log": str(counter_file)}).result(timeout=30)
        assert info.value.attempt == 3
        pids = _pids(counter_file, "hang")
        assert len(set(pids)) == 3  # each attempt on a fresh worker: the last one was killed
        wait_until(lambda: all(process_gone(pid) for pid in pids))
    assert executions(counter_file) == {"hang": 3}


def test_restart_breaker_opens_after_a_storm(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(workers=1, restart_limit=2, restart_window=60, breaker_cooldown=1.0)
    engine.define("storm").step("crash", steps.exit_hard, retry=af.Retry(attempts=6, delay=0))
    engine.define("fine").step("one", steps.add_one)
    with engine:
        with pytest.raises(af.StepFailed) as info:
            engine.trigger("storm", {}).result(timeout=30)
        assert isinstance(info.value.__cause__, af.PoolUnavailable)
        assert "restart breaker is open" in str(info.value.__cause__)
        stats = engine.statistics()["pool"]
        assert stats["breaker_opened"] == 1 and stats["crashes"] == 3
        # while the breaker is open, new work fails fast with the same clear error
        with pytest.raises(af.StepFailed, match="restart breaker is open"):
            engine.trigger("fine", {"n": 1}).result(timeout=30)
        # after the cooldown the pool comes back
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 1)
        assert engine.trigger("fine", {"n": 1}).result(timeout=30) == 2


def test_no_task_waits_behind_a_long_one(engine: af.Engine, tmp_path: Path) -> None:
    """Prefetching never queues work behind a long task while another worker could run it."""
    marker = tmp_path / "release"
    engine.define("long").step("block", steps.wait_for_marker)
    engine.define("short").step("one", steps.add_one)
    with engine:
        for i in range(5):  # the short step's duration becomes known: it may be prefetched
            assert engine.trigger("short", {"n": i}).result(timeout=30) == i + 1
        blocked = engine.trigger("long", {"marker": str(marker)})
        handles = engine.trigger_many("short", [{"n": i} for i in range(200)])
        # all complete on the other worker while the long one still blocks its own
        assert [h.result(timeout=60) for h in handles] == [i + 1 for i in range(200)]
        assert blocked.status() == af.RunStatus.RUNNING
        marker.touch()
        assert blocked.result(timeout=30) == "released"


def test_sigterm_is_followed_by_sigkill(
    make_engine: Callable[..., af.Engine], counter_file: Path
) -> None:
    engine = make_engine(kill_grace=0.3)
    engine.define("stubborn").step("hang", steps.ignore_sigterm_and_hang, timeout=0.3)
    with engine:
        run = engine.trigger("stubborn", {"log": str(counter_file)})
        with pytest.raises(af.StepTimeout):
            run.result(timeout=30)
        pid = int(counter_file.read_text().split()[2])
        wait_until(lambda: process_gone(pid))
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 2)


def test_functions_by_value_are_sent_once_per_worker(engine: af.Engine, tmp_path: Path) -> None:
    log = tmp_path / "unpickled.log"
    counter = steps.UnpickleCounter(str(log))

    def closure(ctx: af.StepContext) -> str:  # not importable: travels by cloudpickle
        return type(counter).__name__

    engine.define("byvalue").step("c", closure)
    with engine:
        handles = engine.trigger_many("byvalue", [None] * 30)
        assert {h.result(timeout=30) for h in handles} == {"UnpickleCounter"}
    lines = log.read_text().splitlines()
    assert 1 <= len(lines) <= 2  # once per worker that ran it, not once per task
    assert len({line.split()[1] for line in lines}) == len(lines)


def test_workers_that_cannot_start_fail_start_fast(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(preload=("a_module_that_does_not_exist",), worker_start_timeout=60)
    engine.define("w").step("one", steps.add_one)
    with pytest.raises(af.PoolUnavailable, match="exit while starting"):
        engine.start()
    assert not engine.running


def test_memory_blow_up_is_killed_at_twice_the_limit(
    make_engine: Callable[..., af.Engine], counter_file: Path
) -> None:
    engine = make_engine(max_memory_per_worker="100MB")
    _with_bystander(engine, counter_file, steps.blow_up_memory)
    with engine:
        bystander = engine.trigger("bystander", {"sleep": 1.0, "log": str(counter_file)})
        bad = engine.trigger("faulty", {"log": str(counter_file)})
        with pytest.raises(af.WorkerCrashed, match="passed twice max_memory_per_worker") as info:
            bad.result(timeout=60)
        assert info.value.exitcode == -9 and info.value.step == "bad"
        (pid,) = _pids(counter_file, "bad")
        wait_until(lambda: process_gone(pid))
        assert bystander.result(timeout=30) == "slow done"
        stats = engine.statistics()["pool"]
        assert stats["crashes"] == 1
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 2)
        engine.define("after").step("one", steps.add_one)
        assert engine.trigger("after", {"n": 1}).result(timeout=30) == 2
    assert executions(counter_file) == {"slow": 1, "bad": 1}


def test_a_worker_that_stops_reading_its_pipe_stalls_nothing(
    make_engine: Callable[..., af.Engine], counter_file: Path
) -> None:
    """A worker busy in a step does not read its pipe. The engine sends it far more queued
    work than a pipe holds (32 prefetched tasks of 30 KB); the dispatcher must not block on
    that write, or the step's timeout could never kill it and the engine would hang."""
    engine = make_engine(workers=1)
    engine.define("t").step("x", steps.tiny_or_hang, timeout=2.0, retry=NO_RETRY)
    with engine:
        for _ in range(5):  # its duration becomes known as short: tasks may queue behind it
            assert engine.trigger("t", {}).result(timeout=30) == 0
        hung = engine.trigger("t", {"hang": True, "log": str(counter_file)})
        wait_until(lambda: executions(counter_file).get("x") == 1)
        pad = "p" * 30_000
        handles = engine.trigger_many("t", [{"pad": pad} for _ in range(40)])
        with pytest.raises(af.StepTimeout):
            hung.result(timeout=30)
        (pid,) = _pids(counter_file, "x")
        wait_until(lambda: process_gone(pid))  # the hung worker was killed at its timeout
        assert [h.result(timeout=60) for h in handles] == [30_000] * 40
        assert engine.statistics()["pool"]["timeouts"] == 1
