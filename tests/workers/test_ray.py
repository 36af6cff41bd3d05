"""Steps on a real local Ray (``ray.init(num_cpus=2)``, real worker processes): results and
context, a large payload, a timeout that kills the step's worker, a heartbeat timeout, a
worker SIGKILLed mid-step (a recorded crash, retried by the workflow's policy), a cancel
that stops a running step, and ``executor="ray"`` by name."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

import actorflow as af
from tests import dask_steps
from tests.conftest import wait_until

ray = pytest.importorskip("ray")

MakeEngine = Callable[..., af.Engine]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        # The steps are in the tests package: the workers import it from the checkout.
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_steps_run_as_ray_tasks_with_their_context(make_engine: MakeEngine) -> None:
    engine = make_engine(executor=af.RayExecutor())
    engine.define("remote").step("where", dask_steps.where).step("add", dask_steps.add)
    with engine:
        out = engine.trigger("remote", {"n": 41}).result(timeout=120)
        again = engine.trigger("remote", {"n": 1}).result(timeout=120)
        detail = engine.inspect(engine.runs()[0].id)
        health = engine.health()
    assert out["sum"] == 42 and again["sum"] == 2
    assert os.getpid() not in {out["pid"], out["first_pid"], again["pid"]}
    assert (out["calls"], again["calls"]) == (1, 2)  # ctx.state went through the engine
    assert [s.status.value for s in detail.steps] == ["succeeded", "succeeded"]
    assert health["checks"]["workers"]["executor"] == "ray"
    assert ray.is_initialized()  # the engine did not start this Ray: it leaves it running


def test_a_large_payload_reaches_a_ray_step(make_engine: MakeEngine) -> None:
    engine = make_engine(executor="ray")
    engine.define("sum").step("sum", dask_steps.array_sum)
    payload = np.arange(1_000_000, dtype=np.float64)  # 8 MB: a blob in the engine
    with engine:
        assert engine.trigger("sum", payload).result(timeout=120) == float(payload.sum())


def test_a_step_past_its_timeout_fails_and_its_worker_is_killed(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine(executor=af.RayExecutor())
    engine.define("slow").step("slow", dask_steps.slow, timeout=2)
    pids = tmp_path / "pid"
    with engine:
        run = engine.trigger("slow", {"pids": str(pids)})
        with pytest.raises(af.StepTimeout):
            run.result(timeout=120)
        pid = int(pids.read_text())
        wait_until(lambda: _gone(pid), timeout=60)  # ray.cancel(force=True) killed it
        [attempt] = engine.inspect(run.id).steps[0].attempts
    assert attempt.kind == "timeout"
    assert attempt.error is not None and "Ray worker killed" in attempt.error


def test_a_silent_step_fails_its_heartbeat_timeout(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine(executor=af.RayExecutor())
    engine.define("beat").step("beat", dask_steps.beating, heartbeat_timeout=1.5)
    pids = tmp_path / "pid"
    with engine:
        run = engine.trigger("beat", {"pids": str(pids)})
        with pytest.raises(af.HeartbeatTimeout):
            run.result(timeout=120)
        wait_until(lambda: _gone(int(pids.read_text())), timeout=60)
        [attempt] = engine.inspect(run.id).steps[0].attempts
    assert attempt.kind == "timeout"
    assert attempt.error is not None and "no heartbeat for 1.5s" in attempt.error


def test_a_worker_killed_mid_step_is_a_crash_the_retry_policy_retries(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine(executor=af.RayExecutor())
    engine.define("victim").step(
        "victim", dask_steps.crash_once, retry=af.Retry(attempts=2, backoff="fixed", delay=0)
    )
    log = tmp_path / "executions"
    log.touch()
    with engine:
        run = engine.trigger("victim", {"log": str(log)})
        wait_until(lambda: bool(log.read_text().split()), timeout=60)
        first = int(log.read_text().split()[0])
        os.kill(first, signal.SIGKILL)
        out = run.result(timeout=120)
        attempts = engine.inspect(run.id).steps[0].attempts
    assert out["attempt"] == 2 and out["pid"] != first
    # Ray did not run it again on its own (max_retries=0): each execution is an attempt.
    assert [line.split()[1] for line in log.read_text().splitlines()] == ["1", "2"]
    assert [a.kind for a in attempts] == ["crash", None]
    assert attempts[0].error is not None and "the Ray task failed" in attempts[0].error


def test_cancelling_a_run_kills_its_running_step(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine(executor=af.RayExecutor())
    engine.define("slow").step("slow", dask_steps.slow)
    pids = tmp_path / "pid"
    with engine:
        run = engine.trigger("slow", {"pids": str(pids)})
        wait_until(pids.exists, timeout=60)
        pid = int(pids.read_text())
        run.cancel()
        with pytest.raises(af.RunCancelled):
            run.result(timeout=60)
        wait_until(lambda: _gone(pid), timeout=60)


def test_bad_ray_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="num_cpus"):
        af.RayExecutor(num_cpus=-1)
    with pytest.raises(ValueError, match="max_retries"):
        af.RayExecutor(max_retries=True)  # type: ignore[arg-type]
    with pytest.raises(af.ConfigError, match="executor"):
        af.Engine(store="memory", executor="rey")
