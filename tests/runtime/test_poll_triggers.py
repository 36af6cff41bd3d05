"""Poll triggers, as cronflow's (issue 24.7): ``wf.on_poll(fn, every=)``.

A run starts when ``fn`` returns a value other than the last one; the last value is kept in
the store, so a restart polls on from it (a value seen before the restart starts nothing);
a poll that raises is logged and polling goes on. Real engine, real LMDB, a ManualClock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests.conftest import wait_until

MakeEngine = Callable[..., af.Engine]

SOURCE: dict[str, Path] = {}


def latest() -> Any:
    """The value polled: the file's text (None while there is none); raises on 'boom'."""
    path = SOURCE["path"]
    if not path.exists():
        return None
    text = path.read_text()
    if text == "boom":
        raise RuntimeError("the feed is down")
    return {"version": text}


def since(last: Any) -> Any:
    """A poll given the last value: it sees only versions newer than the last one."""
    value = latest()
    if value is None or (last is not None and value["version"] <= last["version"]):
        return None
    return value


def define(engine: af.Engine, fn: Callable[..., Any] = latest) -> None:
    engine.define("feed").step("read", lambda ctx: ctx.payload["version"]).on_poll(fn, every="1m")


def put(path: Path, text: str) -> None:
    """Write the feed at once (a poll never reads half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def polls(engine: af.Engine) -> int:
    """Polls done so far (each one's next is armed by then)."""
    background = engine._background
    assert background is not None
    return sum(p["polls"] for p in background.polls.describe())


def tick(engine: af.Engine, clock: af.ManualClock) -> None:
    """Let one more poll happen: advance past the interval and wait until it is done."""
    done = polls(engine)
    clock.advance(61)
    wait_until(lambda: polls(engine) > done)


def versions(engine: af.Engine) -> list[str]:
    runs = sorted(engine.runs("feed", limit=None), key=lambda r: r.created_at)
    return [engine.run(r.id).result(timeout=60) for r in runs]


def test_a_new_value_starts_a_run_and_the_last_value_survives_a_restart(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    SOURCE["path"] = path = tmp_path / "feed"
    data_dir = tmp_path / "data"
    clock = af.ManualClock()
    put(path, "v1")
    engine = make_engine(data_dir=data_dir, clock=clock, workers=1)
    define(engine)
    with engine:
        wait_until(lambda: polls(engine) == 1)  # polled at start
        assert len(engine.runs("feed", limit=None)) == 1
        tick(engine, clock)  # the same value: nothing
        assert len(engine.runs("feed", limit=None)) == 1
        put(path, "v2")
        tick(engine, clock)
        assert versions(engine) == ["v1", "v2"]
    engine = make_engine(data_dir=data_dir, clock=clock, workers=1)
    define(engine)
    with engine:
        wait_until(lambda: polls(engine) == 1)  # polled at start: v2 is kept, so no run
        tick(engine, clock)
        assert len(engine.runs("feed", limit=None)) == 2
        put(path, "v1")  # back to an old value: a change of its own
        tick(engine, clock)
        assert versions(engine) == ["v1", "v2", "v1"]


def test_a_poll_that_raises_is_logged_and_polling_goes_on(
    make_engine: MakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SOURCE["path"] = path = tmp_path / "feed"
    clock = af.ManualClock()
    put(path, "boom")
    engine = make_engine(clock=clock, workers=1)
    define(engine, since)
    with engine:
        wait_until(lambda: polls(engine) == 1)
        assert "poll feed#0: RuntimeError: the feed is down" in caplog.text
        assert engine.runs("feed", limit=None) == []
        put(path, "v3")
        tick(engine, clock)
        assert len(engine.runs("feed", limit=None)) == 1
        put(path, "v2")  # older than the last: `since` says nothing is new
        tick(engine, clock)
        put(path, "v4")
        tick(engine, clock)
        assert versions(engine) == ["v3", "v4"]


def test_on_poll_is_checked_at_definition() -> None:
    wf = af.Workflow("w").step("s", lambda ctx: 1)
    wf.on_poll(lambda a, b: None, every="1m").on_poll(latest, every="0s").on_poll(3, every="x")
    with pytest.raises(af.DefinitionError) as info:
        wf.build()
    text = str(info.value)
    assert "expected fn() or fn(last), it takes 2 arguments" in text
    assert "every: expected a positive duration, got '0s'" in text
    assert "fn: expected a function fn() or fn(last), got 3" in text
