"""Steps on a real Dask cluster (LocalCluster with worker processes): results, context,
timeouts that stop the worker, and a worker killed in the middle of a step."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

import actorflow as af
from tests import dask_steps
from tests.conftest import wait_until

distributed = pytest.importorskip("distributed")

MakeEngine = Callable[..., af.Engine]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


def _worker_pids(cluster: Any) -> set[int]:
    with distributed.Client(cluster, set_as_default=False) as client:
        return set(client.run(os.getpid).values())


def test_steps_run_on_the_cluster_with_their_context(make_engine: MakeEngine, cluster: Any) -> None:
    engine = make_engine(executor=af.DaskExecutor(cluster=cluster))
    engine.define("remote").step("where", dask_steps.where).step("add", dask_steps.add)
    with engine:
        out = engine.trigger("remote", {"n": 41}).result(timeout=60)
        again = engine.trigger("remote", {"n": 1}).result(timeout=60)
        steps = engine.runs()[0].id
        detail = engine.inspect(steps)
    pids = _worker_pids(cluster)
    assert out["sum"] == 42 and again["sum"] == 2
    assert {out["pid"], out["first_pid"], again["pid"]} <= pids  # not the engine's workers
    assert os.getpid() not in pids
    assert (out["calls"], again["calls"]) == (1, 2)  # ctx.state went through the engine
    assert [s.status.value for s in detail.steps] == ["succeeded", "succeeded"]


def test_a_dask_steps_log_records_are_kept_with_its_run(
    make_engine: MakeEngine, cluster: Any
) -> None:
    engine = make_engine(executor=af.DaskExecutor(cluster=cluster))
    engine.define("remote").step("where", dask_steps.where).step("add", dask_steps.add)
    with engine:
        run = engine.trigger("remote", {"n": 1})
        out = run.result(timeout=60)
        found = engine.logs(run.id)
    assert [(r["step"], r["attempt"], r["level"]) for r in found["records"]] == [("add", 1, "INFO")]
    assert found["records"][0]["message"] == f"adding on {out['pid']}"


def test_a_large_payload_reaches_a_dask_step(make_engine: MakeEngine, cluster: Any) -> None:
    engine = make_engine(executor=af.DaskExecutor(cluster=cluster))
    engine.define("sum").step("sum", dask_steps.array_sum)
    payload = np.arange(1_000_000, dtype=np.float64)  # 8 MB: a blob in the engine
    with engine:
        assert engine.trigger("sum", payload).result(timeout=60) == float(payload.sum())


def test_a_step_past_its_timeout_fails_and_its_worker_is_restarted(
    make_engine: MakeEngine, cluster: Any, tmp_path: Path
) -> None:
    engine = make_engine(executor=af.DaskExecutor(cluster=cluster))
    engine.define("slow").step("slow", dask_steps.slow, timeout=1)
    pids = tmp_path / "pid"
    with engine:
        run = engine.trigger("slow", {"pids": str(pids)})
        with pytest.raises(af.StepTimeout):
            run.result(timeout=60)
        pid = int(pids.read_text())
        wait_until(lambda: not psutil.pid_exists(pid) or _zombie(pid), timeout=30)
    wait_until(lambda: len(_worker_pids(cluster)) == 2, timeout=60)  # the nanny restarted it


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_a_worker_killed_mid_step_and_the_step_runs_again(
    make_engine: MakeEngine, cluster: Any, tmp_path: Path
) -> None:
    engine = make_engine(executor=af.DaskExecutor(cluster=cluster))
    engine.define("victim").step("victim", dask_steps.killed_once)
    log = tmp_path / "executions"
    log.touch()
    with engine:
        run = engine.trigger("victim", {"log": str(log)})
        wait_until(lambda: bool(log.read_text().split()), timeout=30)
        first = int(log.read_text().split()[0])
        os.kill(first, signal.SIGKILL)
        # Dask runs the task again on a worker that is alive; the run completes.
        assert run.result(timeout=90) == 2
    second = int(log.read_text().split()[1])
    assert second != first
    wait_until(lambda: len(_worker_pids(cluster)) == 2, timeout=60)


def test_an_executor_needs_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        af.DaskExecutor()
    with pytest.raises(af.ConfigError, match="executor"):
        af.Engine(executor="dask")  # type: ignore[arg-type]
