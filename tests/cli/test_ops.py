"""Operations from the command line: trigger/cancel/retry/resume through a running engine's
API (a real uvicorn server on loopback), and store check/backup/compact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn

import actorflow as af
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from tests import steps
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, data_dir: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    pre = ["--data-dir", str(data_dir)] if data_dir else []
    return subprocess.run(
        [sys.executable, "-m", "actorflow", *pre, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


@pytest.fixture
def served(make_engine: Callable[..., af.Engine]) -> Iterator[tuple[af.Engine, str]]:
    engine = make_engine(workers=1)
    engine.define("double").step("x2", lambda ctx: ctx.payload["n"] * 2)
    engine.define("boom").step("fail", steps.fail_always)
    engine.define("slow").step("wait", steps.slow)
    engine.define("approve").human_in_the_loop("ok").step("done", lambda ctx: ctx.last)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    srv = uvicorn.Server(
        uvicorn.Config(engine.asgi(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started)
    try:
        yield engine, f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(30)


def test_trigger_cancel_retry_resume_through_the_api(served: tuple[af.Engine, str]) -> None:
    engine, url = served
    out = cli("trigger", "double", '{"n": 21}', "--key", "k-1", "--json", ACTORFLOW_URL=url)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    assert engine.run(run_id).result(timeout=30) == 42
    again = cli("trigger", "double", '{"n": 21}', "--key", "k-1", "--json", ACTORFLOW_URL=url)
    assert json.loads(again.stdout)["run_id"] == run_id  # same key, same run

    failed = engine.trigger("boom", {})
    with pytest.raises(af.StepFailed):
        failed.result(timeout=30)
    retried = cli("retry", failed.id, "--url", url)
    assert retried.returncode == 0, retried.stderr
    new_id = retried.stdout.split()[-1]
    assert new_id != failed.id
    with pytest.raises(af.StepFailed):
        engine.run(new_id).result(timeout=30)
    refused = cli("retry", run_id, "--url", url)  # a completed run is not retried
    assert refused.returncode == 1 and "only a failed or cancelled run" in refused.stderr

    slow = engine.trigger("slow", {"sleep": 30})
    cancelled = cli("cancel", slow.id, "--reason", "deploy", "--url", url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert engine.inspect(slow.id).status == af.RunStatus.CANCELLED
    assert engine.inspect(slow.id).cancel_reason == "deploy"
    assert cli("cancel", slow.id, "--url", url).returncode == 4  # already ended

    waiting = engine.trigger("approve", {})
    wait_until(lambda: bool(engine.approvals(run_id=waiting.id)))
    resumed = cli("resume", waiting.id, '{"by": "grace"}', "--url", url)  # by run id
    assert resumed.returncode == 0, resumed.stderr
    assert waiting.result(timeout=30) == {"by": "grace"}

    missing = cli("trigger", "nope", "--url", url)
    assert missing.returncode == 1 and "404" in missing.stderr
    bad_json = cli("trigger", "double", "{not json", "--url", url)
    assert bad_json.returncode == 2 and "payload: expected JSON" in bad_json.stderr


def test_nothing_listening_says_what_to_do() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = cli("cancel", "r-1", "--url", f"http://127.0.0.1:{port}")
    assert out.returncode == 1 and "no engine answers" in out.stderr
    assert "actorflow serve" in out.stderr


def test_store_check_backup_and_compact(
    make_engine: Callable[..., af.Engine], data_dir: Path, tmp_path: Path
) -> None:
    engine = make_engine()
    engine.define("double").step("x2", lambda ctx: ctx.payload["n"] * 2)
    with engine:
        ids = [engine.trigger("double", {"n": i}).id for i in range(20)]
        for run_id in ids:
            engine.run(run_id).result(timeout=30)
        check = cli("store", "check", "--json", data_dir=data_dir)  # while it runs
        assert check.returncode == 0, check.stdout + check.stderr
        report = json.loads(check.stdout)
        assert report["ok"] and report["counts"]["runs"] == 20 and report["counts"]["steps"] == 20
        copy = tmp_path / "backup"
        backed = cli("store", "backup", str(copy), data_dir=data_dir)  # while it runs
        assert backed.returncode == 0, backed.stderr
        refused = cli("store", "compact", data_dir=data_dir)
        assert refused.returncode == 1 and "an engine holds" in refused.stderr
    restored = af.Engine(data_dir=copy)
    restored.define("double").step("x2", lambda ctx: ctx.payload["n"] * 2)
    assert [restored.run(i).result(timeout=5) for i in ids] == [2 * i for i in range(20)]
    compacted = cli("store", "compact", data_dir=data_dir)
    assert compacted.returncode == 0, compacted.stderr
    assert cli("store", "check", data_dir=data_dir).returncode == 0
    store = LmdbStore(data_dir)  # break an index entry: check names it
    store.write([(K.INDEX, K.status_index_key("failed", ids[0]), b"")])
    store.close()
    broken = cli("store", "check", data_dir=data_dir)
    assert broken.returncode == 4  # it found a problem
    assert f"run {ids[0]} is indexed as 'failed' but its record says 'completed'" in broken.stdout
