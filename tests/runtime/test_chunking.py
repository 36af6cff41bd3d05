"""Tiny item steps travel to the pool in chunks, and stay recorded, retried and recovered
one item at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import actorflow as af
from actorflow.definition import function_ref
from actorflow.runtime.supervision._chunking import chunk_size
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from tests import steps
from tests.conftest import executions


def _chunk_records(data_dir: Path) -> list[bytes]:
    store = LmdbStore(data_dir, read_only=True)
    try:
        return [key for key, _ in store.scan(K.VALUES) if b"#chunk/" in key]
    finally:
        store.close()


def _fan(engine: af.Engine, body: Any) -> None:
    engine.define("fan").for_each("items", lambda ctx: list(range(ctx.payload["n"])), body)


def test_chunk_size_adapts_to_cost_and_leaves_work_for_every_worker() -> None:
    assert chunk_size(0.005, 10_000, 2) == 1  # 5 ms steps: sent one by one
    assert chunk_size(0.002, 10_000, 2) == 10  # 2 ms: ~20 ms of work per chunk
    assert 195 <= chunk_size(0.0001, 100_000, 2) <= 200  # 100 us
    assert chunk_size(0.00001, 100_000, 2) == 512  # capped
    assert chunk_size(0.00001, 40, 2) == 10  # two chunks per worker
    assert chunk_size(0.00001, 3, 2) == 1


def test_tiny_items_travel_in_chunks_and_are_recorded_one_by_one(
    make_engine: Callable[..., af.Engine], data_dir: Path
) -> None:
    engine = make_engine()
    _fan(engine, steps.tiny_double)
    with engine:
        engine.trigger("fan", {"n": 20}).result(timeout=60)  # the step's cost is learnt
        before = engine.statistics()["pool"]["dispatched"]
        run = engine.trigger("fan", {"n": 5000})
        assert run.result(timeout=120) == [2 * i for i in range(5000)]
        tasks = engine.statistics()["pool"]["dispatched"] - before
        d = run.inspect()
    assert tasks <= 250, tasks  # not 5,000
    assert d.step("items").items == {
        "total": 5000, "succeeded": 5000, "failed": 0, "cancelled": 0, "pending": 0
    }  # fmt: skip
    item = d.step("items[4321]/tiny_double")
    assert item.output == "8642" and item.attempt == 1
    assert [a.status for a in item.attempts] == ["succeeded"]
    assert _chunk_records(data_dir) == []  # a chunk's dispatch record goes with its last item


def test_an_estimate_left_too_high_is_corrected_before_the_fan_out_is_sent(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    _fan(engine, steps.tiny_double)
    with engine:
        assert engine._core is not None
        # What one preempted probe can leave: 5 ms per item, above the chunking bound.
        engine._core.costs.set(function_ref(steps.tiny_double).key, 0.005)
        run = engine.trigger("fan", {"n": 5000})
        assert run.result(timeout=120) == [2 * i for i in range(5000)]
        tasks = engine.statistics()["pool"]["dispatched"]
    assert tasks <= 250, tasks  # not one task per item


def test_the_first_items_go_alone_until_the_cost_is_known(engine: af.Engine) -> None:
    _fan(engine, steps.tiny_double)
    with engine:
        run = engine.trigger("fan", {"n": 2000})
        assert run.result(timeout=120) == [2 * i for i in range(2000)]
        tasks = engine.statistics()["pool"]["dispatched"]
    assert 2 <= tasks <= 250, tasks  # one probe per worker, then chunks


def test_a_chunk_whose_worker_dies_is_split_and_the_culprit_retried_alone(
    engine: af.Engine, tmp_path: Path
) -> None:
    def body(item: Any, flow: af.Flow) -> None:
        flow.step("tiny", steps.tiny_crash_twice, retry=af.Retry(attempts=2, delay=0))

    _fan(engine, body)
    marker = tmp_path / "crashes"
    with engine:
        # The step is known to be tiny, so its items go out in chunks from the start. (Taught
        # by a warm-up run instead, a loaded machine can measure it slower than the 1 ms
        # chunking bound, and then item 7 would never run in a chunk.)
        assert engine._core is not None
        engine._core.costs.set(function_ref(steps.tiny_crash_twice).key, 1e-5)
        run = engine.trigger("fan", {"n": 400, "marker": str(marker)})
        assert run.result(timeout=120) == [2 * i for i in range(400)]
        d = run.inspect()
    assert marker.read_text() == "xx"  # in its chunk, then alone
    culprit = d.step("items[7]/tiny")
    assert [(a.status, a.kind) for a in culprit.attempts] == [
        ("interrupted", "chunk"),
        ("failed", "crash"),
        ("succeeded", None),
    ]
    # Its chunk-mates ran again alone, once; items of other chunks ran once.
    statuses = [[a.status for a in d.step(f"items[{i}]/tiny").attempts] for i in range(400)]
    split = [i for i, s in enumerate(statuses) if s == ["interrupted", "succeeded"]]
    assert 7 not in split and len(split) >= 1
    assert all(s == ["succeeded"] for i, s in enumerate(statuses) if i not in split and i != 7)


def test_item_errors_in_a_chunk_retry_and_fall_back_one_by_one(
    engine: af.Engine, counter_file: Path
) -> None:
    def body(item: Any, flow: af.Flow) -> None:
        flow.step("tiny", steps.tiny_fail_some, retry=af.Retry(attempts=2, delay=0)).on_error(
            lambda ctx: -1
        )

    _fan(engine, body)
    with engine:
        engine.trigger("fan", {"n": 4}).result(timeout=60)
        counter_file.write_text("")
        run = engine.trigger("fan", {"n": 1000, "log": str(counter_file)})
        out = run.result(timeout=120)
        d = run.inspect()
    assert out == [-1 if i % 100 == 5 else 2 * i for i in range(1000)]
    counts = executions(counter_file)
    assert counts == {f"item{i}": 2 if i % 100 == 5 else 1 for i in range(1000)}
    bad = d.step("items[205]/tiny")
    assert bad.recovered and [a.status for a in bad.attempts] == ["failed", "failed", "recovered"]


def test_later_steps_of_an_item_body_see_their_own_item(engine: af.Engine) -> None:
    def body(item: Any, flow: af.Flow) -> None:
        flow.step("tiny_first", lambda ctx: steps.tiny_first(ctx.item, ctx)).step(
            "tiny_second", steps.tiny_second
        )

    _fan(engine, body)
    with engine:
        engine.trigger("fan", {"n": 4}).result(timeout=60)
        out = engine.trigger("fan", {"n": 600}).result(timeout=120)
    assert out == [[i, f"items[{i}]/tiny_first", i] for i in range(600)]
