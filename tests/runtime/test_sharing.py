"""Engines in several processes on one data_dir: one leads, the others follow, one takes over.

Real processes throughout: the leader (or a second follower) is a child process running
``tests.sharing_app``; the test process is a follower, or starts the leader later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import sharing_app
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A ``tests.sharing_app`` process; ``stop()`` closes its stdin (a clean stop)."""

    def __init__(self, data_dir: Path, role: str = "auto", variant: str = "v1") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sharing_app", str(data_dir), role, variant],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.proc.kill()
            raise AssertionError(f"child did not start: {line} {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.role, self.pid = line[1], int(line[2])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(60)


@pytest.fixture
def children(data_dir: Path) -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(30)


@pytest.fixture
def engines() -> Iterator[list[af.Engine]]:
    made: list[af.Engine] = []
    yield made
    for engine in made:
        engine.stop(drain=False)


def _follower(
    data_dir: Path, engines: list[af.Engine], role: str = "auto", variant: str = "v1"
) -> af.Engine:
    engine = sharing_app.make(str(data_dir), role, variant, leader_wait=60.0)
    engines.append(engine)
    return engine.start()


def test_a_follower_forwards_every_call_and_reads_the_store(
    data_dir: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    children.append(leader := Child(data_dir))
    assert leader.role == "leader"
    engine = _follower(data_dir, engines)
    assert engine.role == "follower" and engine.running
    wait_until(lambda: engine.health()["ready"])
    health = engine.health()
    assert health["role"] == "follower" and health["checks"]["leader"]["pid"] == leader.pid

    run = engine.trigger("double", {"n": 21})
    assert run.result(timeout=60) == {"n": 42}
    assert engine.inspect(run.id).status == af.RunStatus.COMPLETED
    assert [r.id for r in engine.runs()] == [run.id]
    ids = [h.id for h in engine.trigger_many("double", [{"n": 1}, {"n": 2}])]
    assert [engine.run(i).result(timeout=60) for i in ids] == [{"n": 2}, {"n": 4}]
    again = engine.trigger("double", {"n": 5}, idempotency_key="k-1")
    assert engine.trigger("double", {"n": 6}, idempotency_key="k-1").id == again.id

    # Waits: an approval resumed and an event published from the follower.
    approval = engine.trigger("approve")
    wait_until(lambda: engine.approvals(run_id=approval.id))
    (pending,) = engine.approvals(run_id=approval.id)
    engine.resume(pending["token"], "yes")
    assert approval.result(timeout=60) == {"approved": "yes"}
    paid = engine.trigger("event", {"order": "o-1"})
    wait_until(lambda: engine.publish("paid", {"sum": 3}, key="o-1") == 1)
    assert paid.result(timeout=60) == {"sum": 3}

    # A code workflow: signals, queries, cancel.
    counter = engine.trigger("counter")
    assert counter.signal("add", 1) is True
    wait_until(lambda: counter.query("seen") == 1)
    counter.signal("stop")
    assert counter.result(timeout=60) == 1
    stuck = engine.trigger("approve")
    assert stuck.cancel("not needed") is True
    with pytest.raises(af.RunCancelled):
        stuck.result(timeout=60)

    # Errors come back as the leader raised them.
    with pytest.raises(af.WorkflowNotFound, match="nope"):
        engine.trigger("nope")
    with pytest.raises(af.ApprovalNotFound):
        engine.resume("no-such-token")
    # What only the leader knows, asked through it.
    assert engine.statistics()["workers"] == 1
    assert {s["workflow"] for s in engine.schedules()} == set()
    assert engine.graph("double")["nodes"]


def test_a_follower_reads_the_logs_its_leader_kept(
    data_dir: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    children.append(Child(data_dir))
    engine = _follower(data_dir, engines)
    assert engine.role == "follower"
    run = engine.trigger("chatty")
    assert run.result(timeout=60) == "said"
    found = engine.logs(run.id)
    assert [(r["step"], r["attempt"], r["message"]) for r in found["records"]] == [
        ("talk", 1, "said on talk")
    ]
    assert engine.logs(run.id, "talk", attempt=1) == found
    with pytest.raises(af.RunNotFound):
        engine.logs("0" * 24)


def test_the_async_api_works_on_a_follower(
    data_dir: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    children.append(Child(data_dir))
    engine = _follower(data_dir, engines)

    async def main() -> list[Any]:
        runs = await asyncio.gather(*(engine.trigger_async("double", {"n": i}) for i in range(50)))
        return list(await asyncio.gather(*(r.result_async(timeout=60) for r in runs)))

    assert asyncio.run(main()) == [{"n": 2 * i} for i in range(50)]


def test_a_follower_started_before_the_leader_waits_for_it(
    data_dir: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    data_dir.mkdir(parents=True)
    engine = _follower(data_dir, engines, role="follower")  # never leads itself
    assert engine.role == "follower"
    assert engine.health()["ready"] is False
    got: list[Any] = []
    thread = threading.Thread(
        target=lambda: got.append(engine.trigger("double", {"n": 4}).result(timeout=60))
    )
    thread.start()
    time.sleep(0.5)
    assert not got  # no leader yet: the call waits
    children.append(Child(data_dir))
    thread.join(60)
    assert got == [{"n": 8}]
    assert engine.health()["ready"] is True


def test_a_second_process_with_role_leader_is_refused(
    data_dir: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    children.append(Child(data_dir))
    engine = sharing_app.make(str(data_dir), "leader")
    with pytest.raises(af.StoreInUse, match="in use by another engine"):
        engine.start()
    assert engine.role == "stopped"


def test_a_second_engine_in_one_process_is_refused(
    data_dir: Path, engines: list[af.Engine]
) -> None:
    first = sharing_app.make(str(data_dir))
    engines.append(first.start())
    second = sharing_app.make(str(data_dir))
    with pytest.raises(af.StoreInUse, match="another engine in this process"):
        second.start()
    assert first.role == "leader"


def test_the_leader_sigkilled_a_follower_takes_over_and_no_run_is_lost_or_doubled(
    data_dir: Path, tmp_path: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    children.append(leader := Child(data_dir))
    engine = _follower(data_dir, engines)
    log = tmp_path / "executions.log"
    runs = [engine.trigger("double", {"n": i, "sleep": 0.3, "log": str(log)}) for i in range(6)]
    # Triggers keep coming from another thread while the leader dies.
    late: list[af.RunHandle] = []
    stop = threading.Event()

    def keep_triggering() -> None:
        i = 100
        while not stop.is_set():
            late.append(engine.trigger("double", {"n": i}))
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=keep_triggering)
    thread.start()
    wait_until(lambda: len(late) >= 5, timeout=30)  # triggering through the old leader
    leader.kill()
    wait_until(lambda: engine.role == "leader", timeout=30)
    taken_over = len(late)
    wait_until(lambda: len(late) >= taken_over + 5, timeout=30)  # and through the new one
    stop.set()
    thread.join(30)
    assert [r.result(timeout=60) for r in runs] == [{"n": 2 * i} for i in range(6)]
    assert [r.result(timeout=60)["n"] for r in late] == [2 * (100 + i) for i in range(len(late))]
    stored = _runs_by_id_live(engine)
    acknowledged = {r.id for r in runs + late}
    assert acknowledged <= set(stored), "an acknowledged run was lost"
    assert len(stored) == len(acknowledged), "a run was recorded twice"
    assert engine.health()["role"] == "leader"


def _runs_by_id_live(engine: af.Engine) -> dict[str, str]:
    return {r.id: str(r.status) for r in engine.runs(limit=None)}


def test_a_follower_waiting_for_a_result_carries_on_across_a_failover(
    data_dir: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    children.append(leader := Child(data_dir))
    children.append(second := Child(data_dir))  # takes over when the leader dies
    assert second.role == "follower"
    engine = _follower(data_dir, engines, role="follower")  # this one never leads
    run = engine.trigger("double", {"n": 7, "sleep": 1.0})
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(run.result(timeout=60)))
    thread.start()
    wait_until(lambda: run.status() == af.RunStatus.RUNNING, timeout=30)  # on the leader
    leader.kill()
    thread.join(60)
    assert got == [{"n": 14}]
    assert engine.health()["checks"]["leader"]["pid"] == second.pid
    assert engine.trigger("double", {"n": 1}).result(timeout=60) == {"n": 2}


def test_a_clean_stop_of_the_leader_hands_over_too(
    data_dir: Path, children: list[Child], engines: list[af.Engine]
) -> None:
    children.append(leader := Child(data_dir))
    engine = _follower(data_dir, engines)
    run = engine.trigger("approve")
    leader.stop()
    wait_until(lambda: engine.role == "leader", timeout=30)
    wait_until(lambda: engine.approvals(run_id=run.id))
    engine.resume(engine.approvals(run_id=run.id)[0]["token"], "later")
    assert run.result(timeout=60) == {"approved": "later"}


def test_a_follower_with_other_definitions_says_which(
    data_dir: Path,
    children: list[Child],
    engines: list[af.Engine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    children.append(Child(data_dir, variant="v1"))
    with caplog.at_level(logging.WARNING, logger="actorflow.engine"):
        engine = _follower(data_dir, engines, variant="v2")
        wait_until(lambda: engine.health()["ready"])
    assert "workflow 'double': defined differently on the leader" in caplog.text
    definitions = engine.health()["checks"]["definitions"]
    assert definitions["same_as_leader"] is False
    assert definitions["differ"] == {"double": "defined differently on the leader"}
    # The leader runs its own definition (one step): the run is not silently broken.
    assert engine.trigger("double", {"n": 2}).result(timeout=60) == {"n": 4}


def test_the_socket_is_owner_only(data_dir: Path, children: list[Child]) -> None:
    from actorflow.engine._channel import socket_path

    children.append(Child(data_dir))
    path = socket_path(data_dir)
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600


def test_a_long_data_dir_puts_the_socket_in_a_private_directory(tmp_path: Path) -> None:
    from actorflow.engine._channel import socket_path

    deep = tmp_path / ("d" * 120)
    path = socket_path(deep)
    assert len(os.fsencode(path)) <= 100
    assert path.parent.stat().st_mode & 0o077 == 0
    assert socket_path(deep) == path  # every process finds the same one
