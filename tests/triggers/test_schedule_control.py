"""Pausing, resuming and triggering schedules: on the engine, across restarts and a SIGKILL,
from a follower, over REST (read-only, 404, 400, URL-encoded names) and both clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import actorflow as af
from tests.conftest import sigkill_when, wait_until
from tests.serving import JSON, serve

ROOT = Path(__file__).resolve().parents[2]


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def slot_of(ctx: Any) -> str:
    return str(ctx.payload["scheduled_at"])


def define_report(engine: af.Engine, workflow: str = "report", **kw: Any) -> af.Engine:
    """An hourly schedule whose runs answer their slot (imported by the child processes)."""
    engine.define(workflow).step("run", slot_of).on_schedule("0 * * * *", **kw)
    return engine


def _slots(engine: af.Engine, workflow: str = "report") -> list[str]:
    runs = engine.runs(workflow, limit=None)
    return sorted(engine.run(r.id).result(timeout=30) for r in runs)


def _info(engine: af.Engine, name: str = "report#0") -> dict[str, Any]:
    (found,) = [s for s in engine.schedules() if s["name"] == name]
    return found


def test_pause_stops_firing_and_resume_skips_the_missed_slots(
    make_engine: Callable[..., af.Engine],
) -> None:
    clock = af.ManualClock(_utc("2026-01-01 00:30"))
    engine = define_report(make_engine(clock=clock, workers=1))
    with engine:
        clock.advance(3600)  # 01:30: the 01:00 slot fires
        wait_until(lambda: len(engine.runs("report", limit=None)) == 1)
        assert _slots(engine) == ["2026-01-01T01:00:00Z"]
        engine.pause_schedule("report#0", note="warehouse migration")
        info = _info(engine)
        assert info["paused"] is True and info["note"] == "warehouse migration"
        assert info["next"] is None
        clock.advance(3 * 3600)  # 04:30: the slots of 02:00, 03:00 and 04:00 come, paused
        wait_until(lambda: _info(engine)["skipped"] == 3)
        assert len(engine.runs("report", limit=None)) == 1
        engine.resume_schedule("report#0")
        info = _info(engine)
        assert (info["paused"], info["note"], info["skipped"]) == (False, None, 3)
        assert info["next"] == _utc("2026-01-01 05:00")  # the first slot after now
        assert info["last"] == _utc("2026-01-01 04:00") and info["fired"] == 1
        engine.resume_schedule("report#0")  # not paused: nothing changes
        clock.advance(3600)  # 05:30
        wait_until(lambda: len(engine.runs("report", limit=None)) == 2)
        assert _slots(engine) == ["2026-01-01T01:00:00Z", "2026-01-01T05:00:00Z"]


def test_a_pause_survives_a_restart_and_beats_catch_up(
    make_engine: Callable[..., af.Engine],
) -> None:
    clock = af.ManualClock(_utc("2026-01-01 00:30"))
    with define_report(make_engine(clock=clock, workers=1), catch_up="all") as engine:
        engine.pause_schedule("report#0", note="until the fix")
    clock.advance(3 * 3600)  # 03:30: 01:00, 02:00 and 03:00 missed while stopped
    with define_report(make_engine(clock=clock, workers=1), catch_up="all") as engine:
        info = _info(engine)
        assert (info["paused"], info["note"], info["skipped"]) == (True, "until the fix", 3)
        assert engine.runs("report", limit=None) == []
        engine.resume_schedule("report#0")
        assert _info(engine)["next"] == _utc("2026-01-01 04:00")
        clock.advance(3600)
        wait_until(lambda: len(engine.runs("report", limit=None)) == 1)
        assert _slots(engine) == ["2026-01-01T04:00:00Z"]
    with define_report(make_engine(clock=clock, workers=1), catch_up="all") as engine:
        assert _info(engine)["paused"] is False  # the resume was kept too


def test_a_pause_survives_a_sigkill(
    make_engine: Callable[..., af.Engine], data_dir: Path, tmp_path: Path
) -> None:
    start = _utc("2026-01-01 00:30")
    code = f"""
        import time
        import actorflow as af
        from tests.triggers.test_schedule_control import define_report

        engine = af.Engine(data_dir={str(data_dir)!r}, clock=af.ManualClock({start!r}), workers=1)
        define_report(engine).start()
        engine.pause_schedule("report#0", note="killed")
        print("PAUSED report#0", flush=True)
        time.sleep(600)
    """
    assert sigkill_when(tmp_path, code, "PAUSED") == "report#0"
    clock = af.ManualClock(start)
    with define_report(make_engine(clock=clock, workers=1)) as engine:
        info = _info(engine)
        assert (info["paused"], info["note"], info["next"]) == (True, "killed", None)
        clock.advance(2 * 3600)
        wait_until(lambda: _info(engine)["skipped"] == 2)
        assert engine.runs("report", limit=None) == []


def test_trigger_now_runs_while_paused_and_leaves_the_cursor(
    make_engine: Callable[..., af.Engine],
) -> None:
    clock = af.ManualClock(_utc("2026-01-01 00:00"))
    engine = make_engine(clock=clock, workers=1)
    engine.define("gate").wait_for_event("go").step("s", slot_of).on_interval("10m")
    with engine:
        before = _info(engine, "gate#0")
        engine.pause_schedule("gate#0")
        run = engine.trigger_schedule("gate#0")
        assert isinstance(run, af.RunHandle) and run.workflow_id == "gate"
        assert engine.trigger_schedule("gate#0").id == run.id  # the same instant: one run
        key = f"schedule:0:now:{round(clock.now() * 1000)}"
        assert [r.id for r in engine.runs("gate", idempotency_key=key)] == [run.id]
        info = _info(engine, "gate#0")
        assert (info["triggered"], info["fired"], info["last"]) == (1, 0, before["last"])
        assert info["paused"] is True
        engine.resume_schedule("gate#0")
        clock.advance(601)  # 00:10: the triggered run is still active (overlap "skip")
        wait_until(lambda: _info(engine, "gate#0")["skipped"] == 1)
        assert len(engine.runs("gate", limit=None)) == 1
        engine.publish("go")
        assert run.result(timeout=30) == "2026-01-01T00:00:00Z"
        clock.advance(600)  # 00:20: fires
        wait_until(lambda: len(engine.runs("gate", limit=None)) == 2)
        clock.advance(1)
        assert engine.trigger_schedule("gate#0").id != run.id  # another instant


def test_unknown_names_bad_arguments_and_the_async_twins(
    make_engine: Callable[..., af.Engine],
) -> None:
    clock = af.ManualClock(_utc("2026-01-01 00:30"))
    engine = define_report(make_engine(clock=clock, workers=1))
    with pytest.raises(af.EngineNotRunning):
        engine.pause_schedule("report#0")
    with engine:
        for call in (engine.pause_schedule, engine.resume_schedule, engine.trigger_schedule):
            with pytest.raises(af.ScheduleNotFound, match=r"'report#1'.*report#0") as info:
                call("report#1")
            assert isinstance(info.value, af.ClientError) and isinstance(info.value, KeyError)
            assert info.value.name == "report#1" and info.value.known == ("report#0",)
        with pytest.raises(af.ClientError, match="note:"):
            engine.pause_schedule("report#0", note=3)  # type: ignore[arg-type]
        with pytest.raises(af.ClientError, match="note:"):
            engine.pause_schedule("report#0", note="x" * 1001)
        with pytest.raises(af.ClientError, match="name:"):
            engine.trigger_schedule(None)  # type: ignore[arg-type]
        assert _info(engine)["paused"] is False

        async def twins() -> str:
            await engine.pause_schedule_async("report#0", note="async")
            assert _info(engine)["note"] == "async"
            run = await engine.trigger_schedule_async("report#0")
            await engine.resume_schedule_async("report#0")
            with pytest.raises(af.ScheduleNotFound):
                await engine.pause_schedule_async("nope")
            return str(await run.result_async(timeout=30))

        assert asyncio.run(twins()) == _iso(clock.now())
        assert _info(engine)["paused"] is False and _info(engine)["triggered"] == 1


def test_a_follower_forwards_them_to_the_leader(
    make_engine: Callable[..., af.Engine], data_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "leader.py"
    script.write_text(
        "import sys\n"
        "import actorflow as af\n"
        "from tests.triggers.test_schedule_control import define_report\n"
        "engine = define_report(af.Engine(data_dir=sys.argv[1], role='leader', workers=1))\n"
        "engine.start()\n"
        "print('READY', flush=True)\n"
        "sys.stdin.read()\n"
        "engine.stop()\n"
    )
    leader = subprocess.Popen(
        [sys.executable, str(script), str(data_dir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert leader.stdout is not None and leader.stdout.readline().strip() == "READY"
        engine = define_report(make_engine(role="follower", workers=1)).start()
        assert engine.role == "follower"
        wait_until(lambda: engine.health()["ready"])
        engine.pause_schedule("report#0", note="from a follower")
        info = _info(engine)  # the leader's schedules, forwarded
        assert (info["paused"], info["note"]) == (True, "from a follower")
        run = engine.trigger_schedule("report#0")
        assert run.result(timeout=60).endswith("Z") and _info(engine)["triggered"] == 1
        with pytest.raises(af.ScheduleNotFound, match="report#0") as error:
            engine.resume_schedule("report#9")
        assert error.value.name == "report#9"
        engine.resume_schedule("report#0")
        assert _info(engine)["paused"] is False

        async def twins() -> str:
            await engine.pause_schedule_async("report#0")
            handle = await engine.trigger_schedule_async("report#0")
            return str(await handle.result_async(timeout=60))

        assert asyncio.run(twins()).endswith("Z")
        assert _info(engine)["paused"] is True and _info(engine)["triggered"] == 2
        engine.stop()
    finally:
        assert leader.stdin is not None
        leader.stdin.close()
        try:
            leader.wait(60)
        except subprocess.TimeoutExpired:
            leader.kill()
            leader.wait(30)


# -- REST and the clients ---------------------------------------------------------------------

NAME = "daily report?#0"  # workflow "daily report?": every character but the letters encoded
PATH = "/api/schedules/daily%20report%3F%230"


@pytest.fixture
def served(
    make_engine: Callable[..., af.Engine],
) -> Iterator[tuple[af.Engine, af.ManualClock, str, str]]:
    clock = af.ManualClock(_utc("2026-01-01 00:30"))
    engine = define_report(make_engine(clock=clock, workers=1), workflow="daily report?")
    with engine, serve(engine.asgi()) as url, serve(engine.asgi(read_only=True)) as read_only:
        yield engine, clock, url, read_only


def test_rest_pause_trigger_resume_and_their_errors(
    served: tuple[af.Engine, af.ManualClock, str, str],
) -> None:
    engine, clock, url, read_only = served
    with httpx.Client(base_url=url, timeout=30, headers=JSON) as http:
        listed = http.get("/api/schedules").json()
        assert [s["name"] for s in listed] == [NAME] and listed[0]["paused"] is False
        r = http.post(f"{PATH}/pause", content=b'{"note": "audit"}')
        assert r.status_code == 200, r.text
        assert r.json() == {"name": NAME, "paused": True, "note": "audit"}
        (info,) = http.get("/api/schedules").json()
        assert (info["paused"], info["note"], info["next"]) == (True, "audit", None)
        r = http.post(f"{PATH}/trigger")
        assert r.status_code == 202, r.text
        assert r.json()["workflow"] == "daily report?"
        assert engine.run(r.json()["run_id"]).result(timeout=30) == _iso(clock.now())
        r = http.post(f"{PATH}/resume", content=b"{}")
        assert r.status_code == 200 and engine.schedules()[0]["paused"] is False, r.text
        assert http.post(f"{PATH}/pause").status_code == 200  # no body: no note
        assert engine.schedules()[0]["note"] is None

        for path, status, text in [
            ("/api/schedules/report%230/pause", 404, f"no schedule 'report#0'; schedules: {NAME}"),
            ("/api/schedules/a%2Fb/trigger", 404, "no schedule 'a/b'"),
            ("/api/schedules/a%2Fb%2Fc/resume", 404, "no schedule 'a/b/c'"),
        ]:
            r = http.post(path)
            assert r.status_code == status, (path, r.text)
            assert r.json()["error"] == "not_found" and text in r.json()["detail"], r.text
        for action, body, text in [
            ("pause", b"{not json", "not valid JSON"),
            ("pause", b'{"note": 3}', "note: expected a str or null"),
            ("pause", b"[1]", "body: expected"),
            ("pause", b'{"notes": "x"}', "unknown fields ['notes']"),
            ("resume", b'{"note": "x"}', "unknown fields ['note']"),
            ("trigger", b'"now"', "body: expected"),
        ]:
            r = http.post(f"{PATH}/{action}", content=body)
            assert r.status_code == 400, (action, body, r.text)
            assert text in r.json()["detail"], r.text
        assert len(engine.runs("daily report?", limit=None)) == 1  # no bad request started one

    with httpx.Client(base_url=read_only, timeout=30, headers=JSON) as http:
        assert http.get("/api/schedules").json()[0]["paused"] is True  # reads still work
        for action in ("pause", "resume", "trigger"):
            r = http.post(f"{PATH}/{action}", content=b"{}")
            assert r.status_code == 403 and r.json()["error"] == "read_only", r.text
    assert engine.schedules()[0]["paused"] is True
    assert len(engine.runs("daily report?", limit=None)) == 1


def test_both_clients_pause_trigger_and_resume(
    served: tuple[af.Engine, af.ManualClock, str, str],
) -> None:
    engine, clock, url, read_only = served
    with af.Client(url) as client:
        assert [s["name"] for s in client.schedules()] == [NAME]
        client.pause_schedule(NAME, note="sync")
        assert client.schedules()[0]["note"] == "sync"
        run = client.trigger_schedule(NAME)
        assert run.workflow_id == "daily report?"
        assert run.result(timeout=30) == _iso(clock.now())
        client.resume_schedule(NAME)
        assert engine.schedules()[0]["paused"] is False
        with pytest.raises(af.ScheduleNotFound, match="report#0") as info:
            client.pause_schedule("report#0")
        assert info.value.name == "report#0" and info.value.http.status == 404  # type: ignore[attr-defined]
        with pytest.raises(af.ClientError, match="note:"):
            client.pause_schedule(NAME, note=["x"])  # type: ignore[arg-type]
    with af.Client(read_only) as client, pytest.raises(af.AccessDenied):
        client.trigger_schedule(NAME)

    async def twins() -> str:
        async with af.AsyncClient(url) as client:
            assert (await client.schedules())[0]["paused"] is False
            await client.pause_schedule(NAME, note="async")
            assert engine.schedules()[0]["note"] == "async"
            handle = await client.trigger_schedule(NAME)
            await client.resume_schedule(NAME)
            with pytest.raises(af.ScheduleNotFound):
                await client.resume_schedule("nope#0")
            return str(await handle.result_async(timeout=30))

    clock.advance(1)  # another instant: another run
    assert asyncio.run(twins()) == _iso(clock.now())
    assert engine.schedules()[0]["triggered"] == 2 and engine.schedules()[0]["paused"] is False
