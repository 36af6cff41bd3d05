"""Schedules on a ManualClock: DST, restarts without double fires, catch-up and overlap."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import actorflow as af
from actorflow.triggers._cron import next_fire
from tests.conftest import wait_until


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _fires(expr: str, tz: str, start: str, n: int) -> list[str]:
    t = _utc(start)
    out = []
    for _ in range(n):
        t = next_fire(expr, tz, t)
        out.append(datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M"))
    return out


def test_cron_across_dst_changes() -> None:
    berlin = "Europe/Berlin"
    # 09:00 local stays 09:00 local: 08:00 UTC in winter, 07:00 UTC in summer.
    assert _fires("0 9 * * *", berlin, "2026-03-27 12:00", 3) == [
        "03-28 08:00",
        "03-29 07:00",
        "03-30 07:00",
    ]
    # 02:30 does not exist on 29 March: it fires once, at 03:30 summer time.
    assert _fires("30 2 * * *", berlin, "2026-03-27 12:00", 3) == [
        "03-28 01:30",
        "03-29 01:30",
        "03-30 00:30",
    ]
    # 02:30 happens twice on 25 October: a daily job fires once.
    assert _fires("30 2 * * *", berlin, "2026-10-23 12:00", 3) == [
        "10-24 00:30",
        "10-25 00:30",
        "10-26 01:30",
    ]
    # A job with a wildcard hour runs every real half hour, through the repeated hour too.
    assert _fires("*/30 * * * *", berlin, "2026-10-24 23:10", 7) == [
        "10-24 23:30",
        "10-25 00:00",
        "10-25 00:30",
        "10-25 01:00",
        "10-25 01:30",
        "10-25 02:00",
        "10-25 02:30",
    ]


def _define(engine: af.Engine, **kw: Any) -> None:
    engine.define("report").step("run", lambda ctx: ctx.payload["scheduled_at"]).on_schedule(
        "0 * * * *", **kw
    )


def _scheduled(engine: af.Engine) -> list[str]:
    return sorted(engine.run(r.id).result(timeout=30) for r in engine.runs("report", limit=None))


def test_schedule_fires_each_slot_once_across_a_restart(
    make_engine: Callable[..., af.Engine],
) -> None:
    clock = af.ManualClock(_utc("2026-03-29 00:30"))
    engine = make_engine(clock=clock, workers=1)
    _define(engine, tz="Europe/Berlin")
    with engine:
        clock.advance(3600)  # 01:30 UTC: the 01:00 UTC slot (03:00 summer time) fired
        wait_until(lambda: len(engine.runs("report", limit=None)) == 1)
        # finished first: a slot that comes while the last run is active is skipped (overlap)
        engine.run(engine.runs("report", limit=None)[0].id).result(timeout=30)
        clock.advance(1800)  # 02:00 UTC
        wait_until(lambda: len(engine.runs("report", limit=None)) == 2)
    # Restart at the same time: nothing is fired again.
    engine2 = make_engine(clock=clock, workers=1)
    _define(engine2, tz="Europe/Berlin")
    with engine2:
        assert _scheduled(engine2) == ["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]
        info = engine2.schedules()[0]
        assert info["fired"] == 2 and info["next"] == _utc("2026-03-29 03:00")


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        ("none", []),
        ("latest", ["2026-01-01T04:00:00Z"]),
        ("all", ["2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"]),
    ],
)
def test_catch_up_policies_after_downtime(
    make_engine: Callable[..., af.Engine], catch_up: str, expected: list[str]
) -> None:
    clock = af.ManualClock(_utc("2026-01-01 01:30"))
    engine = make_engine(clock=clock, workers=1)
    _define(engine, catch_up=catch_up)
    with engine:
        pass  # records the schedule: last handled = 01:30
    clock.advance(3 * 3600)  # 04:30: slots 02:00, 03:00, 04:00 were missed
    engine2 = make_engine(clock=clock, workers=1)
    _define(engine2, catch_up=catch_up)
    with engine2:
        if expected:
            wait_until(lambda: len(engine2.runs("report", limit=None)) == len(expected))
        assert _scheduled(engine2) == expected
        # Restarting again fires none of them a second time.
    engine3 = make_engine(clock=clock, workers=1)
    _define(engine3, catch_up=catch_up)
    with engine3:
        assert _scheduled(engine3) == expected


def test_overlap_skip_and_queue(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock(_utc("2026-01-01 00:00"))
    engine = make_engine(clock=clock, workers=1)
    (
        engine.define("skip")
        .wait_for_event("go")
        .step("s", lambda ctx: ctx.payload["scheduled_at"])
        .on_interval("10m", overlap="skip")
    )
    (
        engine.define("queue")
        .wait_for_event("go")
        .step("s", lambda ctx: ctx.payload["scheduled_at"])
        .on_interval("10m", overlap="queue")
    )
    with engine:
        clock.advance(601)  # first slot: both start and wait for "go"
        wait_until(lambda: len(engine.runs(limit=None)) == 2)
        clock.advance(600)  # second slot: the first runs are still active
        clock.advance(600)  # third slot
        wait_until(lambda: engine.schedules()[0]["skipped"] == 2)
        wait_until(lambda: engine.schedules()[1]["queued"] == 2)
        assert len(engine.runs("skip", limit=None)) == 1
        assert len(engine.runs("queue", limit=None)) == 1
        engine.publish("go")  # the first queue run ends: the next queued slot starts
        wait_until(lambda: len(engine.runs("queue", limit=None)) == 2)


def test_invalid_schedules_are_definition_errors() -> None:
    wf = af.Workflow("bad").step("s", lambda ctx: 1)
    wf.on_schedule("61 * * * *").on_schedule("0 9 * *", tz="Mars/Base").on_interval("often")
    wf.on_schedule("0 9 * * *", overlap="sometimes", catch_up="maybe")
    with pytest.raises(af.DefinitionError) as info:
        wf.build()
    problems = info.value.problems
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    for part in ("not a valid cron", "5 fields", "Mars/Base", "interval", "overlap", "catch_up"):
        assert part in text
