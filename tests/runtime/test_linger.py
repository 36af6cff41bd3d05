"""Results that arrive one by one share a commit when waiting idles nobody.

With a few workers and items of 10-20 ms, results reach the dispatcher one at a time, and
each used to pay a whole round alone: a message to its shard, a write, an fsync, and a
message back. ``Reports`` lets a success wait a little (``linger``) for others, but only
while its run has a task per worker still queued or running. These tests pin the rule
(with explicit times, nothing measured) and show the effect through a real engine: its
commits are counted, its outputs and executions are exact. (What a held report means for a
crash is in tests/runtime/test_recovery.py: the held items run again, nothing durable does.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import actorflow as af
from actorflow.runtime.dispatch._core import LINGER_MAX, LINGER_MOST, Reports
from actorflow.runtime.kernel._messages import AttemptSucceeded
from tests import steps


class _Shard:
    """Stands in for a shard's actor ref: keeps what it is told."""

    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


def _success(run_id: str, step: str) -> AttemptSucceeded:
    return AttemptSucceeded(run_id, step, 1, b"1", 0.0, 0.0, 0)


def _reports() -> tuple[Reports, _Shard]:
    shard = _Shard()
    return Reports(lambda run_id: shard), shard  # type: ignore[arg-type,return-value]


def test_a_success_with_a_linger_waits_until_its_due_time() -> None:
    reports, shard = _reports()
    reports.add(_success("r", "a"), linger=0.005)
    assert reports.due is not None
    assert not reports.ready(reports.due - 1e-6)
    assert reports.ready(reports.due)
    reports.send()
    assert len(shard.told) == 1 and not reports and reports.due is None


def test_a_linger_is_capped_and_the_earliest_due_time_holds() -> None:
    reports, _ = _reports()
    reports.add(_success("r", "a"), linger=3600.0)
    first = reports.due
    assert first is not None
    reports.add(_success("r", "b"), linger=3600.0)
    assert reports.due == first  # a later report never pushes the first one back
    reports.add(_success("r", "c"), linger=1e-9)
    assert reports.due is not None and reports.due < first
    # capped: nothing waits longer than LINGER_MAX from when it was queued
    assert first - LINGER_MAX <= reports.due


def test_a_report_without_linger_takes_every_held_one_with_it() -> None:
    reports, shard = _reports()
    reports.add(_success("r", "a"), linger=0.01)
    reports.add(_success("r", "b"), linger=0.0)  # e.g. a failure, a run's last task
    assert reports.due is None and reports.ready(0.0)
    reports.add(_success("r", "c"), linger=0.01)
    assert reports.due is None  # still due at once: what is held goes together
    reports.send()
    (message,) = shard.told
    assert [r.step for r in message.results] == ["a", "b", "c"]


def test_past_the_most_held_reports_they_go_at_once() -> None:
    reports, _ = _reports()
    reports.most = LINGER_MOST
    for i in range(LINGER_MOST - 1):
        reports.add(_success("r", str(i)), linger=0.01)
    assert reports.due is not None
    reports.add(_success("r", "last"), linger=0.01)
    assert reports.due is None


def _commits(engine: af.Engine) -> int:
    return int(engine.statistics()["store"]["commits"])


def test_results_that_come_one_by_one_share_commits(tmp_path: Path) -> None:
    """80 items of 20 ms on 2 workers: before, ~60 commits here; now about half.

    (Slower machines only make more results wait together: the bound does not depend on
    how fast this one is.)
    """
    engine = af.Engine(data_dir=tmp_path / "s", workers=2)
    engine.define("fan").for_each("items", lambda ctx: [20] * ctx.payload, steps.napping_item)
    with engine:
        engine.trigger("fan", 8).result(timeout=60)  # workers up, the step's cost learnt
        before = _commits(engine)
        run = engine.trigger("fan", 80)
        assert run.result(timeout=120) == [20] * 80
        commits = _commits(engine) - before
        steps_done = [s for s in run.inspect().steps if s.path.startswith("items[")]
    assert len(steps_done) == 80 and all(s.attempt == 1 for s in steps_done)
    assert all(s.status == af.StepStatus.SUCCEEDED for s in steps_done)
    assert commits <= 80 // 2, commits


def test_outputs_keep_their_order_and_each_item_runs_once(tmp_path: Path) -> None:
    log = tmp_path / "exec.log"
    engine = af.Engine(data_dir=tmp_path / "s", workers=3)
    engine.define("fan").for_each("items", lambda ctx: list(range(60)), steps.item_logged_nap)
    with engine:
        out = engine.trigger("fan", {"log": str(log), "ms": 5}).result(timeout=120)
    assert out == list(range(60))
    ran = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(ran) == sorted(f"item{i}" for i in range(60))  # each exactly once


def test_a_worker_killed_with_results_unread_and_tasks_queued_loses_none(tmp_path: Path) -> None:
    """While reports are held the dispatcher reads the pipes late, and workers hold ~50 ms
    of tasks: a worker that dies then has results in its pipe and tasks it never started.

    Its results are read before its death is handled (they count once), its queued tasks go
    to other workers without counting as attempts, and only the item it was running runs
    again (a crash, then a retry).
    """
    log = tmp_path / "exec.log"
    payload = {"log": str(log), "ms": 10, "victim": 40, "marker": str(tmp_path / "marker")}
    engine = af.Engine(data_dir=tmp_path / "s", workers=2)
    engine.define("fan", retry=af.Retry(attempts=2, delay=0)).for_each(
        "items", lambda ctx: list(range(80)), steps.item_kills_its_worker
    )
    with engine:
        engine.trigger("fan", {**payload, "victim": -1}).result(timeout=60)  # costs learnt
        log.write_text("")
        run = engine.trigger("fan", payload)
        assert run.result(timeout=120) == list(range(80))
        items = {s.path: s for s in run.inspect().steps if s.path.startswith("items[")}
    ran: dict[str, int] = {}
    for line in log.read_text().splitlines():
        ran[line.split()[0]] = ran.get(line.split()[0], 0) + 1
    assert ran == {f"item{i}": 2 if i == 40 else 1 for i in range(80)}
    victim = items["items[40]/item_kills_its_worker"]
    assert [a.status for a in victim.attempts] == ["failed", "succeeded"]
    assert victim.attempts[0].kind == "crash"
    assert all(s.attempt == 1 for p, s in items.items() if p != "items[40]/item_kills_its_worker")
