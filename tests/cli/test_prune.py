"""``actorflow store prune``: by hand, refused beside a running engine, dry runs, archives."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import actorflow as af
from actorflow.cli._store import check
from actorflow.store._archive import read_archive
from tests import retention_steps as rs
from tests.cli.test_ops import cli

DAY = 86400.0


def _runs(engine: af.Engine, workflow: str) -> set[str]:
    return {r.id for r in engine.runs(workflow=workflow, limit=None)}


def test_prune_by_hand_with_dry_run_workflow_and_archive(
    make_engine: Callable[..., af.Engine], data_dir: Path, tmp_path: Path
) -> None:
    # Runs that ended 40 days ago and 1 day ago (the CLI measures on the wall clock).
    clock = af.ManualClock(time.time() - 40 * DAY)
    engine = make_engine(clock=clock, workers=1, retention=0)
    rs.define(engine)
    with engine:
        old_orders = [engine.trigger("orders", {"n": i}).id for i in range(3)]
        old_failing = [engine.trigger("failing").id for _ in range(2)]
        for run_id in old_orders + old_failing:
            rs.settle(engine.run(run_id), "completed" if run_id in old_orders else "failed")
        clock.advance(39 * DAY)
        recent = engine.trigger("orders", {"n": 9}, idempotency_key="recent")
        rs.settle(recent, "completed")
        asleep = engine.trigger("gate", {"n": 1})  # unfinished, started 39 days ago
        rs.settle(asleep, "running")

        busy = cli("store", "prune", "--older-than", "30d", data_dir=data_dir)
        assert busy.returncode == 1
        assert "an engine (pid" in busy.stderr and "engine.prune()" in busy.stderr
        beside = cli("store", "prune", "--older-than", "30d", "--dry-run", data_dir=data_dir)
        assert beside.returncode == 0, beside.stderr
        assert "would prune 5 finished runs" in beside.stdout
        everything = {*old_orders, *old_failing, recent.id, asleep.id}
        assert {r.id for r in engine.runs(limit=None)} == everything  # a dry run deletes nothing

    dry = cli(
        "store", "prune", "--older-than", "30d", "--workflow", "failing", "--dry-run", "--json",
        data_dir=data_dir,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["runs"] == 2 and json.loads(dry.stdout)["dry_run"]

    archive = tmp_path / "runs.jsonl.zst"
    out = cli(
        "store", "prune", "--older-than", "30d", "--workflow", "orders", "--archive",
        str(archive), "--json", data_dir=data_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["runs"], report["workflows"]) == (3, {"orders": 3})
    lines = list(read_archive(archive))
    assert [line["run"]["id"] for line in lines] == old_orders
    first = lines[0]
    assert first["format"] == "actorflow-archive/1"
    assert first["payload"] == {"json": {"n": 0}}
    assert [s["name"] for s in first["steps"]] == ["add", "double", "echo"]
    assert [s["output"] for s in first["steps"]] == [1, 2, 2]
    assert first["run"]["result"] == 2 and first["history"]

    plain = tmp_path / "runs.jsonl"
    rest = cli(
        "store", "prune", "--older-than", str(30 * DAY), "--archive", str(plain),
        data_dir=data_dir,
    )  # fmt: skip
    assert rest.returncode == 0, rest.stderr
    assert "pruned 2 finished runs" in rest.stdout and "failing\t2\n" in rest.stdout
    failed = list(read_archive(plain))
    assert sorted(line["run"]["id"] for line in failed) == sorted(old_failing)
    assert failed[0]["run"]["error"]["message"] == "boom"
    again = cli("store", "prune", "--older-than", "30d", "--archive", str(plain), data_dir=data_dir)
    assert "pruned 0 finished runs" in again.stdout
    assert len(list(read_archive(plain))) == 2  # appended nothing

    healthy = check(data_dir)
    assert healthy["ok"], healthy["problems"]
    engine = make_engine(clock=clock, workers=1, retention=0)
    rs.define(engine)
    with engine:
        assert {r.id for r in engine.runs(limit=None)} == {recent.id, asleep.id}
        assert engine.run(recent.id).result(timeout=10) == 20
        assert _runs(engine, "gate") == {asleep.id}


def test_prune_says_what_it_needs(tmp_path: Path) -> None:
    missing = cli("store", "prune", "--older-than", "30d", data_dir=tmp_path / "nothing")
    assert missing.returncode == 1 and "no actorflow store" in missing.stderr
    no_age = cli("store", "prune", data_dir=tmp_path)
    assert no_age.returncode == 2 and "--older-than" in no_age.stderr
    bad = cli("store", "prune", "--older-than", "soon", data_dir=tmp_path)
    assert bad.returncode == 1 and "--older-than: expected a duration" in bad.stderr
