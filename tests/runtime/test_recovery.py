"""Crash recovery with real SIGKILLs of a real engine process.

Each scenario kills the engine at a precise point of a 20-step run (fault points armed through
ACTORFLOW_CRASH_AT, or a step that kills the engine), restarts it on the same store, and checks
that every step completed exactly once in the record and executed at most twice in reality.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from actorflow.store._records import load_step
from tests.conftest import executions

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.crash


def child(
    data_dir: Path,
    log: Path,
    mode: str,
    *args: str,
    crash_at: str | None = None,
    force_portable: str = "",
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ACTORFLOW_CRASH_AT", None)
    if crash_at:
        env["ACTORFLOW_CRASH_AT"] = crash_at
    env["ACTORFLOW_FORCE_PORTABLE"] = force_portable  # the fallbacks of actorflow/_platform.py
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", str(data_dir), str(log), mode, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def result_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out
    return lines[-1][len("RESULT ") :]


def recorded_completions(data_dir: Path) -> dict[str, int]:
    """Per step, how many attempts the store records as succeeded."""
    store = LmdbStore(data_dir, read_only=True)
    try:
        counts: dict[str, int] = {}
        for key, value in store.scan(K.STEPS):
            rec = load_step(value, key.partition(b"\0")[2].decode(), "step")
            if "attempts" not in rec:
                continue  # a control-flow node, not a step
            counts[rec.get("path", rec["name"])] = sum(
                1 for a in rec["attempts"] if a["status"] == "succeeded"
            )
        return counts
    finally:
        store.close()


def assert_exactly_once(data_dir: Path, log: Path) -> None:
    assert recorded_completions(data_dir) == {f"s{i}": 1 for i in range(20)}
    counts = executions(log)
    assert set(counts) == {f"s{i}" for i in range(20)}, counts
    assert max(counts.values()) <= 2, counts


@pytest.mark.parametrize(
    "crash_at",
    [
        "dispatcher.before_send=8",  # dispatch recorded, task never sent
        "shard.before_record=5",  # result received, not yet recorded
        "writer.after_commit=12",  # result and next dispatch durable, not yet acted on
    ],
)
def test_sigkill_at_a_point_then_recover(tmp_path: Path, crash_at: str) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "twenty", crash_at=crash_at))
    assert code == -signal.SIGKILL, (out, err)
    assert "RESULT" not in out
    code, out, err = finish(child(data_dir, log, "twenty"))
    assert code == 0, err
    assert result_line(out) == "19"
    assert_exactly_once(data_dir, log)


@pytest.mark.parametrize("commit", [2, 3, 4])
def test_a_subflow_started_after_a_crash_gets_its_input(tmp_path: Path, commit: int) -> None:
    """Killed after any of the first commits (the subflow recorded, its child not yet
    started among them), the recovered parent starts its child with ``input(ctx)``, not
    with its own payload."""
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(
        child(data_dir, log, "subflow", crash_at=f"writer.after_commit={commit}")
    )
    assert code == -signal.SIGKILL, (out, err)
    code, out, err = finish(child(data_dir, log, "subflow"))
    assert code == 0, err
    assert result_line(out) == "{'from': 'input', 'first': 'first:None'}"


def test_sigkill_mid_step_then_recover(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "twenty-kill"))
    assert code == -signal.SIGKILL, (out, err)
    code, out, err = finish(child(data_dir, log, "twenty-kill"))
    assert code == 0, err
    assert result_line(out) == "19"
    assert_exactly_once(data_dir, log)
    counts = executions(log)
    assert counts["s7"] == 2  # it was running when the engine died: retried once
    assert all(n == 1 for name, n in counts.items() if name != "s7")
    engine = af.Engine(data_dir=data_dir)
    s7 = engine.inspect(engine.runs()[0].id).step("s7")
    assert [a.status for a in s7.attempts] == ["interrupted", "succeeded"]


def test_repeated_external_sigkills(tmp_path: Path) -> None:
    """SIGKILL from outside at random moments, three times, then let it finish."""
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    rng = random.Random(1234)
    for _ in range(3):
        proc = child(data_dir, log, "twenty")
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("RUN "), line
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        finish(proc)
    code, out, err = finish(child(data_dir, log, "twenty"))
    assert code == 0, err
    assert result_line(out) == "19"
    assert recorded_completions(data_dir) == {f"s{i}": 1 for i in range(20)}
    counts = executions(log)
    assert max(counts.values()) <= 4  # at most once per engine life that was running it


def test_backoff_timer_survives_sigkill(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    proc = child(data_dir, log, "retry")
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    assert lines[1].strip() == "RETRYING", lines
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    code, out, err = finish(child(data_dir, log, "retry"))
    assert code == 0, err
    assert result_line(out) == "ok on attempt 2"
    engine = af.Engine(data_dir=data_dir)
    run = engine.runs(workflow="retry")[0]
    step = engine.inspect(run.id).step("flaky")
    first, second = step.attempts
    assert first.status == "failed" and second.status == "succeeded"
    assert first.ended_at is not None and second.started_at is not None
    # woke no earlier than the 2 s backoff, though the engine was dead meanwhile
    assert second.started_at - first.ended_at >= 1.9
    assert executions(log) == {"flaky": 2}


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    proc = child(data_dir, log, "writes", "100000")
    assert proc.stdout is not None
    acked = -1
    while acked < 200:
        line = proc.stdout.readline()
        assert line.startswith("ACK "), line
        acked = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    store = LmdbStore(data_dir, read_only=True)
    try:
        for i in range(acked + 1):
            assert store.get(K.RUNS, f"key{i:06d}".encode()) == b"v" * 100, i
    finally:
        store.close()


def test_sigkill_mid_for_each_reruns_only_unfinished_items(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "foreach"))
    assert code == -signal.SIGKILL, (out, err)
    code, out, err = finish(child(data_dir, log, "foreach"))
    assert code == 0, err
    assert result_line(out) == str(list(range(40)))
    counts = executions(log)
    assert set(counts) == {f"item{i}" for i in range(40)}
    twice = sorted(name for name, n in counts.items() if n == 2)
    assert all(n in (1, 2) for n in counts.values()), counts
    assert "item5" in twice  # it was running when the engine died
    assert len(twice) <= 4 + 4, twice  # in flight: at most the concurrency (+ queued in workers)
    completions = recorded_completions(data_dir)
    assert {k: v for k, v in completions.items() if "/" in k} == {
        f"items[{i}]/item_crash_engine": 1 for i in range(40)
    }


def test_sigkill_while_successes_are_held_back_loses_none_and_reruns_no_durable_item(
    tmp_path: Path,
) -> None:
    """Results that wait to share a commit (dispatch/_core.py ``Reports``) are not durable.

    The engine dies with some held back: those items run again after recovery, exactly
    like items that were still running; an item whose result was durable never runs again,
    and every item ends with one recorded success.
    """
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "foreach-held"))
    assert code == -signal.SIGKILL, (out, err)
    durable = {k for k, n in recorded_completions(data_dir).items() if "/" in k and n}
    assert 0 < len(durable) < 200, len(durable)
    code, out, err = finish(child(data_dir, log, "foreach-held"))
    assert code == 0, err
    assert result_line(out) == "True"
    counts = executions(log)
    assert set(counts) == {f"item{i}" for i in range(200)}
    for i in range(200):
        ran = counts[f"item{i}"]
        if f"items[{i}]/item_held_crash" in durable:
            assert ran == 1, (i, ran)  # durable before the kill: never again
        else:
            assert ran <= 2, (i, ran)
    assert counts["item100"] == 2
    completions = recorded_completions(data_dir)
    assert {k: v for k, v in completions.items() if "/" in k} == {
        f"items[{i}]/item_held_crash": 1 for i in range(200)
    }


def _fan_recorded_once(data_dir: Path, log: Path, out: str, n: int) -> dict[str, dict[str, Any]]:
    """Each of the ``n`` chunked items of the run named in ``out`` recorded as succeeded once
    and run at most once per recorded attempt (at most two); no chunk dispatch record left.
    Returns the item records. (The warm-up runs have items of the same paths.)"""
    counts = executions(log)
    assert set(counts) == {f"item{i}" for i in range(n)}
    run_id = next(line.split()[1] for line in out.splitlines() if line.startswith("RUN "))
    store = LmdbStore(data_dir, read_only=True)
    try:
        records = {}
        for key, value in store.scan(K.STEPS, K.step_prefix(run_id)):
            rec = load_step(value, key.partition(b"\0")[2].decode(), "step")
            if rec.get("path", "").startswith("items[") and "attempts" in rec:
                records[rec["path"]] = rec
        leftovers = [key for key, _ in store.scan(K.VALUES) if b"#chunk/" in key]
    finally:
        store.close()
    assert leftovers == []
    rerun = 0
    for i in range(n):
        rec = records[f"items[{i}]/tiny_logged"]
        done = [a for a in rec["attempts"] if a["status"] == "succeeded"]
        assert len(done) == 1, rec  # recorded once
        # Ran at most once per recorded attempt: items whose result was durable before the
        # kill never ran again; items of chunks in flight ran again, as a new attempt.
        assert counts[f"item{i}"] <= rec["attempt"] <= 2, (i, counts[f"item{i}"], rec)
        if rec["attempt"] == 2:
            rerun += 1
            assert [a["status"] for a in rec["attempts"]] == ["interrupted", "succeeded"]
    assert rerun < n // 2, rerun  # only what was in flight
    return records


def test_sigkill_mid_chunked_for_each_reruns_only_unfinished_items(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "foreach-tiny"))
    assert code == -signal.SIGKILL, (out, err)
    code, out, err = finish(child(data_dir, log, "foreach-tiny"))
    assert code == 0, err
    assert result_line(out) == "True"
    records = _fan_recorded_once(data_dir, log, out, 3000)
    assert executions(log)["item1500"] == 2 and records["items[1500]/tiny_logged"]["attempt"] == 2


@pytest.mark.parametrize(
    "crash_at",
    [
        "writer.after_commit=10",  # a commit of results and new chunks' dispatch records
        "dispatcher.before_send=12",  # a batch of chunks recorded, its frame never sent
    ],
)
def test_sigkill_between_a_batch_commit_and_its_dispatch(tmp_path: Path, crash_at: str) -> None:
    """The engine dies once a commit holding a batch of chunk dispatches is durable but
    before (or while) the batch goes to the workers: nothing is lost, nothing ran twice
    except what a chunk in flight held, and the dispatch records are all cleared."""
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    Path(f"{log}.marker").write_text("the fault point kills, not the step")
    code, out, err = finish(child(data_dir, log, "foreach-tiny", crash_at=crash_at))
    assert code == -signal.SIGKILL, (out, err)
    assert "RUN " in out, out  # killed in the fan-out, after its start was durable
    code, out, err = finish(child(data_dir, log, "foreach-tiny"))
    assert code == 0, err
    assert result_line(out) == "True"
    _fan_recorded_once(data_dir, log, out, 3000)


def test_acknowledged_resume_and_events_survive_sigkill(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "log"
    proc = child(data_dir, log, "outside", "pause")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("TOKEN "), line + (proc.stderr.read() if proc.stderr else "")
    proc.send_signal(signal.SIGKILL)  # killed while paused: the token must survive
    proc.communicate(timeout=30)
    # Resume and publish, then die the instant both calls have returned.
    code, out, err = finish(child(data_dir, log, "outside", "publish"))
    assert code == -signal.SIGKILL, err
    assert "PUBLISHED" in out
    code, out, err = finish(child(data_dir, log, "outside", "finish"))
    assert code == 0, err
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert results == [
        "RESULT {'approved_by': 'ada', 'paid': 1}",
        "RESULT {'approved_by': 'bob', 'paid': 2}",  # the kept event, published before it waited
    ]
