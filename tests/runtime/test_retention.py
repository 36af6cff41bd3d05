"""Retention: finished runs past their retention are deleted with everything they own.

Real engines, real workers, real LMDB; time moves on a ManualClock, so a 30-day retention
passes at once and the engine's own ``prune`` timer fires as it would.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.cli._store import check
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from tests import retention_steps as rs
from tests.conftest import wait_until

MakeEngine = Callable[..., af.Engine]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-format2"
UNFINISHED = ("sleeping", "queued", "waiting")


def _gone(engine: af.Engine, run_id: str) -> bool:
    try:
        engine.run(run_id)
    except af.RunNotFound:
        return True
    return False


def _keys_naming(data_dir: Path, run_ids: set[str]) -> list[tuple[str, bytes]]:
    """Every key, in every database, that contains one of ``run_ids``."""
    store = LmdbStore(data_dir, read_only=True)
    try:
        found = []
        for db in K.ALL_DBS:
            for key, _ in store.scan(db):
                if any(rid.encode() in key for rid in run_ids):
                    found.append((db, key))
        return found
    finally:
        store.close()


def _blob_files(data_dir: Path) -> set[str]:
    folder = data_dir / "blobs"
    return (
        {f.name for f in folder.iterdir() if not f.name.startswith(".")}
        if folder.is_dir()
        else set()
    )


def _at(engine: af.Engine, run_id: str, step: str) -> bool:
    """The run's step ``step`` is running (a sleep: asleep)."""
    return any(s.name == step and s.status == "running" for s in engine.inspect(run_id).steps)


def _finished(engine: af.Engine) -> set[str]:
    return {r.id for r in engine.runs(limit=None) if r.status.terminal}


@pytest.mark.parametrize("store", ["lmdb", "memory"])
def test_retention_per_workflow_and_engine_wide_prunes_only_finished_runs(
    make_engine: MakeEngine, store: str
) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock, retention="1h", store=store)
    engine.define("short", retention="10m").step("add", rs.add_one)
    engine.define("default").step("add", rs.add_one)
    engine.define("kept", retention="forever").step("add", rs.add_one)
    engine.define("failing", retention="10m").step("boom", rs.boom)
    engine.define("sleepy", retention="10m").step("add", rs.add_one).sleep("nap", "30d")

    @engine.workflow("panics", retention="10m", panic=af.PanicPolicy(max_restarts=0))
    async def panics(ctx: af.WorkflowContext) -> None:
        raise TypeError("a bug: the run panics, and a panicked run is not finished")

    with engine:
        short = [engine.trigger("short", {"n": i}, idempotency_key=f"s{i}") for i in range(3)]
        default, kept = engine.trigger("default", {}), engine.trigger("kept", {})
        failed, sleepy, panicked = (
            engine.trigger("failing"),
            engine.trigger("sleepy", {}),
            engine.trigger("panics"),
        )
        for run in short:
            assert run.result(timeout=30) == 1 + short.index(run)
        for run, status in ((failed, "failed"), (panicked, "panicked"), (kept, "completed")):
            rs.settle(run, status)
        rs.settle(default, "completed")
        wait_until(lambda: _at(engine, sleepy.id, "nap"))

        clock.advance(5 * 60)  # inside every retention: a pass prunes nothing
        assert engine.prune().runs == 0
        clock.advance(6 * 60)  # past "10m": the engine's own prune timer fires
        wait_until(lambda: all(_gone(engine, r.id) for r in [*short, failed]))
        assert default.status() == af.RunStatus.COMPLETED
        assert kept.status() == af.RunStatus.COMPLETED
        assert sleepy.status() == af.RunStatus.RUNNING  # unfinished: never pruned
        assert panicked.status() == af.RunStatus.PANICKED
        with pytest.raises(af.RunNotFound):
            short[0].result(timeout=5)

        # The idempotency key went with its run: the same key starts a new run.
        again = engine.trigger("short", {"n": 0}, idempotency_key="s0")
        assert again.id != short[0].id
        assert again.result(timeout=30) == 1

        clock.advance(3600)  # past the engine's "1h"
        wait_until(lambda: _gone(engine, default.id) and _gone(engine, again.id))
        assert kept.status() == af.RunStatus.COMPLETED  # "forever"
        assert sleepy.status() == af.RunStatus.RUNNING
        assert panicked.status() == af.RunStatus.PANICKED
        assert {r.workflow_id for r in engine.runs(limit=None)} == {"kept", "sleepy", "panics"}


def test_pruning_leaves_no_record_and_no_blob_file_of_a_pruned_run(
    make_engine: MakeEngine, data_dir: Path
) -> None:
    clock = af.ManualClock()
    engine = make_engine(
        clock=clock, retention=0, shm_threshold=4096, blob_write_delay=0, workers=1
    )
    rs.define(engine)
    with engine:
        ids = rs.populate(engine, clock)
        finished = _finished(engine)
        child = engine.inspect(ids["parent"]).step("sub").child_run_id
        assert (
            child in finished and len(finished) == len(ids) - len(UNFINISHED) + 2
        )  # +child, +link
        wait_until(lambda: len(_blob_files(data_dir)) == 2)  # a large result, a failed run's
        report = engine.prune(older_than=0)
        assert (report.runs, report.blobs, report.kept) == (len(finished), 2, 0)
        assert report.bytes > 16384  # the two 8 KiB blobs and the records
        assert not _finished(engine)
        # The unfinished runs are intact and carry on.
        for name in UNFINISHED:
            assert engine.inspect(ids[name]).status in (af.RunStatus.RUNNING, af.RunStatus.QUEUED)
        engine.resume(engine.approvals(status="waiting")[0]["token"], {"ok": 1})
        rs.settle(engine.run(ids["waiting"]), "completed")
        clock.advance(3601)
        rs.settle(engine.run(ids["sleeping"]), "completed")
        wait_until(lambda: _at(engine, ids["queued"], "nap"))
        clock.advance(3601)
        rs.settle(engine.run(ids["queued"]), "completed")
    assert _keys_naming(data_dir, finished) == []
    assert _blob_files(data_dir) == set()
    report = check(data_dir)
    assert report["ok"], report["problems"]
    assert report["counts"]["runs"] == len(UNFINISHED)


def test_a_finished_child_is_kept_while_its_parent_is_unfinished(make_engine: MakeEngine) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock, retention="1h")
    engine.define("child").step("add", rs.add_one)
    engine.define("parent").subflow("sub", "child").sleep("nap", "1d").step("echo", rs.echo)
    with engine:
        parent = engine.trigger("parent", {"n": 1})  # the child gets the same payload
        wait_until(lambda: _at(engine, parent.id, "nap"))
        child = parent.inspect().step("sub").child_run_id
        assert child is not None and engine.run(child).result(timeout=30) == 2
        clock.advance(2 * 3600)  # the child is past its retention; its parent sleeps
        report = engine.prune()
        assert (report.runs, report.kept) == (0, 1)
        assert engine.run(child).status() == af.RunStatus.COMPLETED
        clock.advance(86400)  # the parent wakes and ends
        assert parent.result(timeout=30) == 2
        clock.advance(2 * 3600)  # both past retention: the prune timer takes both
        wait_until(lambda: _gone(engine, child) and _gone(engine, parent.id))


def test_pruning_in_batches_lets_triggers_through(make_engine: MakeEngine) -> None:
    engine = make_engine(retention=0)
    engine.define("tiny").step("add", rs.add_one)
    engine.define("other").step("add", rs.add_one)
    with engine:
        for run in engine.trigger_many("tiny", [{"n": i} for i in range(1500)]):
            run.result(timeout=60)
        pruner = engine._background.pruner  # type: ignore[union-attr]
        submit = pruner._submit
        between: list[Any] = []

        def submit_then_trigger(ops: list[Any]) -> Callable[[], None]:
            wait = submit(ops)
            # On the pruner's own thread, mid-pass: a whole run goes through meanwhile.
            between.append(engine.trigger("other", {"n": 1}).result(timeout=30))
            return wait

        pruner._submit = submit_then_trigger  # type: ignore[method-assign]
        stop = threading.Event()
        beside: list[Any] = []

        def keep_triggering() -> None:
            while not stop.is_set():
                beside.append(engine.trigger("other", {"n": 2}).result(timeout=30))

        thread = threading.Thread(target=keep_triggering)
        thread.start()
        try:
            report = engine.prune(older_than=0, workflow="tiny")
        finally:
            stop.set()
            thread.join(60)
        assert report.runs == 1500
        assert report.batches >= 1500 // 64
        assert between == [2] * report.batches
        assert beside and set(beside) == {3}
        assert not engine.runs(workflow="tiny")


def test_a_store_of_the_previous_format_is_migrated_then_pruned(
    make_engine: MakeEngine, data_dir: Path
) -> None:
    shutil.copytree(FIXTURE, data_dir)
    ids = dict(line.split() for line in (FIXTURE / "runs.txt").read_text().splitlines())
    old = check(data_dir)  # read-only: reads format 2 as it is
    assert old["ok"] and old["format"] == 2, old["problems"]
    clock = af.ManualClock(1_700_000_000.0 + 3600)
    engine = make_engine(clock=clock, retention="30m", workers=1)
    rs.define(engine)
    with engine:
        finished = _finished(engine)
        assert len(finished) == len(ids) - len(UNFINISHED) + 2  # the child, the chain's link
        # The migration keyed approvals by their token's hash: no key holds a token now.
        approvals = engine._store.scan(K.APPROVALS)  # type: ignore[union-attr]
        assert approvals and all(key.startswith(b"sha256:") for key, _ in approvals)
        report = engine.prune(dry_run=True)  # the migration indexed every finished run
        assert (report.runs, report.blobs, report.dry_run) == (len(finished), 2, True)
        report = engine.prune()
        assert (report.runs, report.blobs) == (len(finished), 2)
        assert not _finished(engine)
        engine.resume(engine.approvals(status="waiting")[0]["token"], {"ok": 1})
        rs.settle(engine.run(ids["waiting"]), "completed")
    assert _keys_naming(data_dir, finished) == []
    assert _blob_files(data_dir) == set()
    new = check(data_dir)
    assert new["ok"] and new["format"] == K.FORMAT_VERSION, new["problems"]


def test_retention_is_validated_where_it_is_given(make_engine: MakeEngine) -> None:
    with pytest.raises(af.ConfigError, match="retention: expected a duration"):
        af.EngineConfig(retention="soon")
    assert af.EngineConfig(retention="forever").retention == 0.0
    assert af.EngineConfig(retention=None).retention == 0.0
    assert af.EngineConfig().retention == 30 * 86400
    env = {"ACTORFLOW_RETENTION": "7d"}
    assert af.EngineConfig.from_sources(env=env, pyproject=False).retention == 7 * 86400
    engine = make_engine()
    engine.define("bad", retention="soon").step("add", rs.add_one)
    with pytest.raises(af.DefinitionError, match="retention: expected a duration"):
        engine.start()
    engine2 = make_engine()
    engine2.define("w").step("add", rs.add_one)
    with engine2:
        with pytest.raises(af.ClientError, match="older_than"):
            engine2.prune(older_than="soon")
        with pytest.raises(af.ClientError, match="workflow"):
            engine2.prune(workflow=3)  # type: ignore[arg-type]
