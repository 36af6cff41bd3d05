"""A shard never leaves a write pending behind a pykka message (a regression test).

A shard gathers its runs' effects while more messages wait and sends them when its inbox is
empty; pykka's own messages (a proxy reading ``counts`` for ``engine.metrics()``, or
``live_runs`` for ``engine.statistics()``) do not go through ``on_receive``. When one of them
was the message waiting, the write stayed pending until some later ordinary message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import actorflow as af
from actorflow.runtime.supervision._shard import Shard
from tests import steps


def test_a_trigger_is_not_stuck_behind_a_statistics_call(
    make_engine: Callable[..., af.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Shard, "hold", lambda self, event: event.wait(10), raising=False)
    engine = make_engine(shards=1)
    engine.define("w").step("a", steps.add_one)
    with engine, ThreadPoolExecutor(1) as pool:
        core: Any = engine._core
        shard = core.shards[0]
        release = threading.Event()
        held = shard.proxy().hold(release)  # the shard's thread waits here
        trigger = pool.submit(engine.trigger, "w", {"n": 1})  # StartRun, queued
        while shard.actor_inbox.empty():
            pass
        live = shard.proxy().live_runs  # a pykka message, queued behind it
        release.set()
        held.get(timeout=10)
        live.get(timeout=10)
        run = trigger.result(timeout=10)  # recorded without any further message
        assert run.result(timeout=30) == 2
