"""The command line, run as a separate process (as users run it), reading the store read-only
while the test's engine is still running on it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import actorflow as af
from tests import steps

ROOT = Path(__file__).resolve().parents[2]


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorflow", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_runs_and_show_while_the_engine_runs(engine: af.Engine, data_dir: Path) -> None:
    engine.define("ok").step("one", steps.add_one).step("two", steps.add_one)
    engine.define("bad").step("boom", steps.fail_always)
    with engine:
        ok = engine.trigger("ok", {"n": 1})
        ok.result(timeout=30)
        bad = engine.trigger("bad", {})
        with contextlib.suppress(af.StepFailed):
            bad.result(timeout=30)
        listed = cli(data_dir, "runs", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(r["id"], r["status"]) for r in rows] == [(bad.id, "failed"), (ok.id, "completed")]
        table = cli(data_dir, "runs", "--status", "failed")
        assert bad.id in table.stdout and ok.id not in table.stdout
        shown = cli(data_dir, "show", ok.id[:20])  # a unique prefix is enough
        assert shown.returncode == 0, shown.stderr
        assert "completed" in shown.stdout and "one" in shown.stdout and "two" in shown.stdout
        detail = json.loads(cli(data_dir, "show", bad.id, "--json").stdout)
        assert detail["status"] == "failed"
        assert detail["error"]["type"] == "tests.steps.Boom"
        assert "fail_always" in detail["error"]["traceback"]
        assert "fail_always" in detail["error"]["user_traceback"]
        # The traceback printed is the user's frames; the engine's are one flag away.
        table = cli(data_dir, "show", bad.id)
        assert "fail_always" in table.stdout and "tests/steps.py" in table.stdout
        assert "actorflow/workers" not in table.stdout, table.stdout
        assert "--full-traceback" in table.stderr
        full = cli(data_dir, "show", bad.id, "--full-traceback")
        assert "fail_always" in full.stdout and "actorflow/workers" in full.stdout
        missing = cli(data_dir, "show", "ffffffff")
        assert missing.returncode == 1 and "no run with id" in missing.stderr


def test_runs_on_a_missing_store(tmp_path: Path) -> None:
    out = cli(tmp_path / "nowhere", "runs")
    assert out.returncode == 1 and "no actorflow store" in out.stderr


def test_demo(tmp_path: Path) -> None:
    out = cli(tmp_path / "demo-store", "demo", "--orders", "2")
    assert out.returncode == 0, out.stderr
    assert "2 runs completed" in out.stdout
    assert "failed (ConnectionError: fraud service timed out), succeeded" in out.stdout
    listed = json.loads(cli(tmp_path / "demo-store", "runs", "--json").stdout)
    assert len(listed) == 2 and all(r["status"] == "completed" for r in listed)


def test_show_tells_branches_items_and_children(engine: af.Engine, data_dir: Path) -> None:
    engine.define("child").step("total", steps.child_total)
    (
        engine.define("flow")
        .if_("big", lambda ctx: ctx.payload["n"] > 2)
        .step("shout", lambda ctx: "BIG")
        .else_()
        .step("whisper", lambda ctx: "small")
        .endif()
        .for_each("items", lambda ctx: list(range(25)), steps.double_item)
        .subflow("sub", "child", input=lambda ctx: {"values": [1, 2, 3]})
    )
    with engine:
        run = engine.trigger("flow", {"n": 5})
        assert run.result(timeout=60) == 6
        child = run.inspect().step("sub").child_run_id
        shown = cli(data_dir, "show", run.id, "--items", "3")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "took big" in out
    assert "items: 25 total, 25 succeeded" in out
    assert f"child run {child}" in out
    assert "[2] double_item" in out and "[3] double_item" not in out
    assert "(22 steps of items past the first 3 not shown" in shown.stderr
    assert "whisper" in out and "skipped" in out


def test_wait_follows_a_run_with_progress_until_it_ends(engine: af.Engine, data_dir: Path) -> None:
    engine.define("fan").for_each("items", lambda ctx: list(range(60)), steps.slow_item)
    engine.define("gated").step("wait", steps.wait_for_marker)
    with engine:
        run = engine.trigger("fan", {"log": str(data_dir.parent / "items.log")})
        waited = cli(data_dir, "wait", run.id)
        assert waited.returncode == 0, waited.stderr
        assert f"run {run.id}: completed" in waited.stdout
        assert "items (for_each)" in waited.stderr and "60/60" in waited.stderr
        gate = data_dir.parent / "gate"
        stuck = engine.trigger("gated", {"marker": str(gate)})
        timed_out = cli(data_dir, "wait", stuck.id, "--timeout", "0.5", "--no-progress")
        assert timed_out.returncode == 3 and "still running" in timed_out.stderr
        gate.touch()
        assert json.loads(cli(data_dir, "wait", stuck.id, "--json").stdout)["status"] == (
            "completed"
        )


def test_doctor_on_a_good_and_on_broken_setups(
    engine: af.Engine, data_dir: Path, tmp_path: Path
) -> None:
    import socket

    engine.define("ok").step("one", steps.add_one)
    with engine:
        engine.trigger("ok", {"n": 1}).result(timeout=30)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            good = cli(data_dir, "doctor", "--json", "--port", port)
    assert good.returncode == 0, good.stdout + good.stderr
    verdicts = {c["name"]: c["verdict"] for c in json.loads(good.stdout)["checks"]}
    assert verdicts["store format"] == "ok" and verdicts["workers"] == "ok"
    assert verdicts["shared memory"] == "ok"
    assert verdicts["store lock"] == "warn"  # the engine held it
    assert verdicts["webhook port"] == "warn"  # taken
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    broken = cli(not_a_dir / "store", "doctor")
    assert broken.returncode == 4  # a check failed
    assert "fail\tstore writable\t" in broken.stdout
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "data.mdb").write_bytes(b"not an lmdb file" * 512)
    damaged = cli(corrupt, "doctor", "--json")
    assert damaged.returncode == 4
    checks = {c["name"]: c for c in json.loads(damaged.stdout)["checks"]}
    assert checks["store format"]["verdict"] == "fail"
    assert "not a valid LMDB store" in checks["store format"]["detail"]
