"""A run leaves memory only once its latest state is durable (a regression test).

Found by the lifecycle events under load: the store writer ran the callbacks of an earlier
write of a run (which marked it "may leave memory") after the run had finished in memory but
before its final write was committed. The shard dropped the finished run; the next message
for it (a retry timer re-armed when the run had been reloaded) reloaded it from the older
stored state, and a step that had succeeded ran again. The test forces that order: the
callbacks of the write that sends attempt 2 run late, a re-armed timer reaches the shard
right after them, and the final write is slow to commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.runtime.kernel._messages import AddTimers
from actorflow.runtime.persistence._writer import StoreWriter
from actorflow.store import _keys as K
from actorflow.store._lmdb import LmdbStore
from tests import steps


def test_a_finished_run_is_not_reloaded_from_an_older_state(
    make_engine: Callable[..., af.Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver, write = StoreWriter._deliver, LmdbStore.write

    def late_callbacks(self: Any, batch: Any) -> None:
        if not any(t.step == "flaky" and t.attempt == 2 for w in batch for t in w.dispatch):
            deliver(self, batch)
            return
        held = [t for w in batch for t in w.timers]
        for w in batch:
            w.timers.clear()
        deliver(self, batch)
        time.sleep(0.3)  # attempt 2 succeeds and the run finishes, in memory, meanwhile
        targets = self._targets
        # After this write's own callbacks: the held timers go to the scheduler.
        batch[-1].then.append(lambda: targets.scheduler.tell(AddTimers(tuple(held))))

    def slow_final_commit(self: Any, ops: Any) -> None:
        if any(db == K.RUNS and b"completed" in (v or b"") for db, _, v in ops):
            time.sleep(0.3)
        write(self, ops)

    monkeypatch.setattr(StoreWriter, "_deliver", late_callbacks)
    monkeypatch.setattr(LmdbStore, "write", slow_final_commit)
    engine = make_engine(shards=1)  # the run and every message about it on one shard
    engine.define("retry").step("flaky", steps.fail_until, retry=af.Retry(attempts=3, delay="10ms"))
    finished: list[af.RunFinished] = []
    engine.subscribe(finished.append, af.RunFinished)
    log = tmp_path / "log"
    with engine:
        run = engine.trigger("retry", {"succeed_on": 2, "log": str(log)})
        assert run.result(timeout=60) == "ok on attempt 2"
        attempts = [a.status for a in run.inspect().steps[0].attempts]
        # A drained stop runs whatever is still in flight: a re-run would be in the log.
        engine.stop(drain=True, timeout=30)
    executions = [line for line in log.read_text().splitlines() if line.startswith("flaky")]
    assert len(executions) == 2, executions  # attempt 1 failed, attempt 2 succeeded: no more
    assert attempts == ["failed", "succeeded"]
    assert len(finished) == 1
