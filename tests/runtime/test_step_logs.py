"""Steps' ``ctx.log`` records kept with their run: per attempt, bounded, pruned with the run.

Real engines, worker processes and LMDB stores (``make_engine``); the inline executor for a
step on a thread of the engine. The REST route and the clients are tested in
tests/client/test_logs.py, a follower in tests/runtime/test_sharing.py, Dask in
tests/workers/test_dask.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import actorflow as af
from actorflow.cli._store import check
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from actorflow.store._archive import read_archive
from actorflow.store._logs import MAX_MESSAGE, MAX_RECORDS
from actorflow.store._sealing import is_sealed
from tests import log_steps
from tests.fixtures import make_store_format4 as format4

MakeEngine = Callable[..., af.Engine]
ROOT = Path(__file__).resolve().parents[2]
FORMAT4 = ROOT / "tests" / "fixtures" / "store-format4"
NOTHING: dict[str, Any] = {"records": [], "dropped": []}


def _said(found: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(r["step"], r["attempt"], r["message"]) for r in found["records"]]


def _log_keys(data_dir: Path, run_id: str) -> list[bytes]:
    store = LmdbStore(data_dir, read_only=True)
    try:
        return [k for k, _ in store.scan(K.LOGS, K.log_prefix(run_id))]
    finally:
        store.close()


def test_a_retried_step_keeps_each_attempts_records_under_that_attempt(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    retry = af.Retry(attempts=2, delay=0.01)
    engine.define("flaky").step("flaky", log_steps.flaky, retry=retry).step("q", log_steps.quiet)
    with engine:
        before = time.time()
        run = engine.trigger("flaky")
        assert run.result(timeout=60) == 1
        after = time.time()
        found = engine.logs(run.id)
    assert _said(found) == [
        ("flaky", 1, "try 1 begins"),
        ("flaky", 1, "try 1 fails"),
        ("flaky", 2, "try 2 begins"),
        ("flaky", 2, "try 2 ends"),
    ]
    assert [r["level"] for r in found["records"]] == ["INFO", "WARNING", "INFO", "INFO"]
    times = [r["time"] for r in found["records"]]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after
    assert found["dropped"] == []
    # The engine is stopped: read from the store.
    assert engine.logs(run.id) == found
    assert run.logs() == found and run.logs("flaky", attempt=2) == engine.logs(
        run.id, "flaky", attempt=2
    )
    assert _said(engine.logs(run.id, "flaky", attempt=2)) == _said(found)[2:]
    assert _said(engine.logs(run.id, attempt=1)) == _said(found)[:2]
    assert engine.logs(run.id, "q") == NOTHING  # it logged nothing
    assert engine.logs(run.id, "no-such-step") == NOTHING


def test_code_workflow_steps_and_for_each_items_keep_their_records_under_their_paths(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()

    @engine.workflow("coded")
    async def coded(ctx: af.WorkflowContext, n: int) -> int:
        a = await ctx.step("add", log_steps.code_step, n)
        b = await ctx.step("add", log_steps.code_step, a)  # recorded as add#2
        retry = af.Retry(attempts=2, delay=0.01)
        return int(await ctx.step("flaky", log_steps.code_flaky, b, retry=retry))

    engine.define("fan").for_each("items", items=lambda ctx: [10, 20], body=log_steps.item)
    with engine:
        coded_run = engine.trigger("coded", 1)
        assert coded_run.result(timeout=60) == 3
        fan = engine.trigger("fan")
        assert fan.result(timeout=60) == [10, 20]
        prefix = K.step_prefix(fan.id)
        store = engine._store
        assert store is not None
        paths = {k[len(prefix) :].decode() for k, _ in store.scan(K.STEPS, prefix)}
        found_fan = engine.logs(fan.id)
        assert _said(engine.logs(coded_run.id)) == [
            ("add", 1, "code step got 1"),
            ("add#2", 1, "code step got 2"),
            ("flaky", 1, "code try 1"),
            ("flaky", 2, "code try 2"),
        ]
    by_step = {r["step"]: r["message"] for r in found_fan["records"]}
    assert sorted(by_step.values()) == ["item 10", "item 20"]
    assert set(by_step) <= paths  # each item under the path its step record has (its key)
    (one,) = [p for p, m in by_step.items() if m == "item 10"]
    assert _said(engine.logs(fan.id, one)) == [(one, 1, "item 10")]


def test_a_step_on_an_inline_thread_keeps_its_records_too(make_engine: MakeEngine) -> None:
    engine = make_engine(executor="inline")

    def local(ctx: Any) -> str:  # not importable: the inline executor calls it as it is
        ctx.log.info("inline %s", ctx.run.step)
        af.step_context().log.warning("twice")
        return "done"

    retry = af.Retry(attempts=2, delay=0.01)
    engine.define("here").step("local", local).step("flaky", log_steps.flaky, retry=retry)
    with engine:
        run = engine.trigger("here")
        assert run.result(timeout=60) == "ok"
        assert _said(engine.logs(run.id)) == [
            ("local", 1, "inline local"),
            ("local", 1, "twice"),
            ("flaky", 1, "try 1 begins"),
            ("flaky", 1, "try 1 fails"),
            ("flaky", 2, "try 2 begins"),
            ("flaky", 2, "try 2 ends"),
        ]


@pytest.mark.parametrize(
    ("setting", "kept"),
    [
        ("INFO", ["an info line", "a warning line", "it broke"]),
        ("debug", ["a debug line", "an info line", "a warning line", "it broke"]),
        ("ERROR", ["it broke"]),
        ("off", []),
    ],
)
def test_records_are_kept_from_the_configured_level_up_with_their_tracebacks(
    make_engine: MakeEngine, setting: str, kept: list[str]
) -> None:
    engine = make_engine(workers=1, step_logs=setting)
    engine.define("levels").step("levels", log_steps.levels)
    with engine:
        run = engine.trigger("levels")
        run.result(timeout=60)
        found = engine.logs(run.id)
    assert [r["message"].splitlines()[0] for r in found["records"]] == kept
    if kept:
        broke = found["records"][-1]
        assert broke["level"] == "ERROR" and "ValueError: bad value" in broke["message"]


def test_records_past_the_bound_are_counted_and_long_messages_cut(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(workers=1)
    engine.define("chatty").step("talk", log_steps.chatty)
    count = MAX_RECORDS + 500  # and the long message first
    with engine:
        run = engine.trigger("chatty", {"count": count})
        assert run.result(timeout=60) == count
        found = engine.logs(run.id)
    records = found["records"]
    assert len(records) == MAX_RECORDS
    assert records[0]["message"] == "x" * MAX_MESSAGE + "... [truncated: 20000 bytes]"
    assert [r["message"] for r in records[1:3]] == ["line 0", "line 1"]
    assert records[-1]["message"] == f"line {MAX_RECORDS - 2}"
    assert found["dropped"] == [{"step": "talk", "attempt": 1, "count": 501}]
    assert engine.logs(run.id, "talk", attempt=1)["dropped"] == found["dropped"]
    assert engine.logs(run.id, attempt=2) == NOTHING


def test_a_run_that_logs_nothing_writes_nothing_and_pruning_takes_the_records(
    make_engine: MakeEngine, data_dir: Path, tmp_path: Path
) -> None:
    engine = make_engine(workers=1)
    engine.define("flaky").step("flaky", log_steps.flaky, retry=af.Retry(attempts=2, delay=0.01))
    engine.define("quiet").step("q", log_steps.quiet)
    archive = tmp_path / "runs.jsonl"
    with engine:
        loud = engine.trigger("flaky")
        quiet = engine.trigger("quiet")
        assert loud.result(timeout=60) == "ok" and quiet.result(timeout=60) == 1
        kept = engine.logs(loud.id)
        assert len(kept["records"]) == 4
        report = engine.prune(older_than=0, archive=archive)
        assert report.runs == 2
        with pytest.raises(af.RunNotFound):
            engine.logs(loud.id)
    assert _log_keys(data_dir, loud.id) == [] and _log_keys(data_dir, quiet.id) == []
    lines = {line["run"]["id"]: line for line in read_archive(archive)}
    assert lines[loud.id]["logs"] == kept
    assert "logs" not in lines[quiet.id]
    report_check = check(data_dir)
    assert report_check["ok"], report_check["problems"]


def test_unknown_runs_and_bad_arguments_are_refused(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    engine.define("quiet").step("q", log_steps.quiet)
    with engine:
        run = engine.trigger("quiet")
        run.result(timeout=60)
        with pytest.raises(af.RunNotFound):
            engine.logs("0" * 24)
        for bad in (0, -1, "1", True, 1.0):
            with pytest.raises(af.ClientError, match="attempt: expected an integer"):
                engine.logs(run.id, attempt=bad)  # type: ignore[arg-type]
        for step in ("", "a\x00b", 3):
            with pytest.raises(af.ClientError, match="step"):
                engine.logs(run.id, step)  # type: ignore[arg-type]


def test_the_rest_route_reads_them_and_refuses_a_bad_attempt(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    engine.define("flaky").step("flaky", log_steps.flaky, retry=af.Retry(attempts=2, delay=0.01))
    app = engine.asgi(dashboard=False)

    async def get(path: str, **params: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            return await c.get(path, params=params)

    with engine:
        run = engine.trigger("flaky")
        run.result(timeout=60)
        url = f"/api/runs/{run.id}/logs"
        everything = asyncio.run(get(url))
        assert everything.status_code == 200 and everything.json() == engine.logs(run.id)
        second = asyncio.run(get(url, step="flaky", attempt="2")).json()
        assert [r["message"] for r in second["records"]] == ["try 2 begins", "try 2 ends"]
        for bad in ("0", "two", "-1", "1.5", "9" * 40):
            refused = asyncio.run(get(url, attempt=bad))
            assert refused.status_code == 400 and "attempt" in refused.json()["detail"], bad
        missing = asyncio.run(get(f"/api/runs/{'0' * 24}/logs"))
        assert missing.status_code == 404


def test_records_are_sealed_at_rest(make_engine: MakeEngine, data_dir: Path) -> None:
    engine = make_engine(workers=1, codecs=("gzip",))
    engine.define("flaky").step("flaky", log_steps.flaky, retry=af.Retry(attempts=2, delay=0.01))
    with engine:
        run = engine.trigger("flaky")
        run.result(timeout=60)
    assert _said(engine.logs(run.id))[0] == ("flaky", 1, "try 1 begins")
    store = LmdbStore(data_dir, read_only=True)  # not unsealed: the bytes on disk
    try:
        raw = store.scan(K.LOGS, K.log_prefix(run.id))
    finally:
        store.close()
    assert len(raw) == 4 and all(is_sealed(value) for _, value in raw)
    assert not any(b"try 1" in value for _, value in raw)


def test_a_store_of_the_previous_format_opens_unchanged_and_keeps_new_records(
    tmp_path: Path, make_engine: MakeEngine
) -> None:
    shutil.copytree(FORMAT4, tmp_path / "old")
    data_dir = tmp_path / "old" / "store"
    then = json.loads((tmp_path / "old" / "inspect.json").read_text())
    engine = make_engine(data_dir=data_dir, workers=1)
    format4.define(engine)
    engine.define("loud").step("flaky", log_steps.flaky, retry=af.Retry(attempts=2, delay=0.01))
    old_run = then["runs"]["flaky"]
    assert engine.logs(old_run) == NOTHING  # stopped: read-only, no logs database yet
    with engine:
        assert engine.logs(old_run) == NOTHING
        run = engine.trigger("loud")
        assert run.result(timeout=60) == "ok"
        assert len(engine.logs(run.id)["records"]) == 4
        gate = engine.run(then["runs"]["gate"])
        engine.publish("go", None, key="k")
        assert gate.result(timeout=60) == "b"
        assert engine.logs(gate.id) == NOTHING
    report = check(data_dir)
    assert report["ok"] and report["format"] == K.FORMAT_VERSION, report["problems"]


def test_a_reader_opened_before_the_logs_database_existed_reads_it_once_it_does(
    tmp_path: Path,
) -> None:
    """A follower may open the store before its leader (a newer release) adds ``logs``."""
    shutil.copytree(FORMAT4 / "store", tmp_path / "store")
    reader = LmdbStore(tmp_path / "store", read_only=True)
    try:
        assert reader.scan(K.LOGS) == []
        key = K.log_key("r" * 24, "s", 1, 0)
        code = (
            "import sys; from actorflow.store import LmdbStore; from actorflow.store import "
            "_keys as K; s = LmdbStore(sys.argv[1]); "
            f"s.write([(K.LOGS, {key!r}, b'{{}}')]); s.close()"
        )
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], check=True, cwd=ROOT)
        assert reader.scan(K.LOGS) == [(key, b"{}")]
    finally:
        reader.close()
