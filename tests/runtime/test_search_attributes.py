"""Search attributes and memos, as Temporal's visibility (issue 24.8): set at the trigger
and by ``ctx.upsert_search_attributes``, indexed, filtered by ``engine.runs(where=...)``
newest first, kept across a restart, carried by continue_as_new, deleted with a pruned run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from actorflow.store import _keys as K
from tests.conftest import wait_until

MakeEngine = Callable[..., af.Engine]


async def order(ctx: af.WorkflowContext, customer: str) -> str:
    ctx.upsert_search_attributes({"stage": "paid"})
    await ctx.wait_for_signal("ship")
    ctx.upsert_search_attributes({"stage": "shipped", "express": None})
    return f"shipped for {customer}"


async def chain(ctx: af.WorkflowContext, n: int) -> int:
    if n > 0:
        ctx.continue_as_new(n - 1)
    return n


def define(engine: af.Engine) -> None:
    engine.define("invoice").step("bill", lambda ctx: ctx.payload)
    engine.workflow("order")(order)
    engine.workflow("chain")(chain)


def ids(runs: list[af.RunSummary]) -> list[str]:
    return [r.id for r in runs]


def test_runs_filtered_by_equality_and_ranges_newest_first(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    define(engine)
    with engine:
        made = [
            engine.trigger(
                "invoice",
                {"i": i},
                search_attributes={"customer": f"c-{i % 3}", "amount": i * 10, "vip": i == 4},
                memo={"note": f"invoice {i}"},
            )
            for i in range(9)
        ]
        for r in made:
            r.result(timeout=60)
        c1 = [r.id for r in made if int(r.inspect().search_attributes["customer"][2:]) == 1]
        assert ids(engine.runs(where={"customer": "c-1"})) == c1[::-1]
        assert ids(engine.runs(where={"customer": "c-1", "amount>": 10})) == c1[:0:-1]
        assert ids(engine.runs(where={"amount>=": 50, "amount<": 80})) == [
            made[7].id,
            made[6].id,
            made[5].id,
        ]
        assert ids(engine.runs(where={"amount<=": 10})) == [made[1].id, made[0].id]
        assert ids(engine.runs(where={"vip": True})) == [made[4].id]
        assert ids(engine.runs(where={"customer": "c-0", "amount!=": 30})) == [
            made[6].id,
            made[0].id,
        ]
        # Pages: a cursor and a limit, as without a filter.
        page = engine.runs(where={"amount>": 0}, limit=3)
        assert ids(page) == [made[8].id, made[7].id, made[6].id]
        nxt = engine.runs(where={"amount>": 0}, limit=3, before=page[-1].id)
        assert ids(nxt) == [made[5].id, made[4].id, made[3].id]
        assert engine.runs(where={"amount>": "10"}) == []  # a string is not a number
        d = made[2].inspect()
        assert d.search_attributes == {"customer": "c-2", "amount": 20, "vip": False}
        assert d.memo == {"note": "invoice 2"}
        assert engine.runs(where={"customer": "c-2"})[0].search_attributes["amount"] == 80


def test_bad_attributes_and_filters_are_refused_naming_them(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    define(engine)
    with engine:
        with pytest.raises(af.ClientError, match=r"search_attributes\['x'\]: expected a string"):
            engine.trigger("invoice", {}, search_attributes={"x": [1, 2]})
        with pytest.raises(af.ClientError, match="may not end with an operator"):
            engine.trigger("invoice", {}, search_attributes={"amount>": 1})
        with pytest.raises(af.ClientError, match="memo: expected JSON values"):
            engine.trigger("invoice", {}, memo={"x": object()})
        with pytest.raises(af.ClientError, match=r"where\['a>'\]: expected a string"):
            engine.runs(where={"a>": None})
        with pytest.raises(af.ClientError, match="valid Unicode text"):
            engine.trigger("invoice", {}, search_attributes={"x": "\ud800"})
        with pytest.raises(af.ClientError, match="'!=' alone is not searchable"):
            engine.runs(where={"a!=": 1})
        assert engine.runs(limit=None) == []  # nothing was recorded


def test_upserted_attributes_are_indexed_and_survive_a_restart(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    engine = make_engine(data_dir=data_dir, workers=1)
    define(engine)
    with engine:
        run = engine.trigger("order", "ada", search_attributes={"express": True})
        wait_until(lambda: bool(engine.runs(where={"stage": "paid"})))
        assert ids(engine.runs(where={"stage": "paid"})) == [run.id]
        assert ids(engine.runs(where={"express": True})) == [run.id]
    engine = make_engine(data_dir=data_dir, workers=1)
    define(engine)
    with engine:
        assert ids(engine.runs(where={"stage": "paid", "express": True})) == [run.id]
        engine.run(run.id).signal("ship")
        assert engine.run(run.id).result(timeout=60) == "shipped for ada"
        assert ids(engine.runs(where={"stage": "shipped"})) == [run.id]
        assert engine.runs(where={"stage": "paid"}) == []  # its old entry was replaced
        assert engine.runs(where={"express": True}) == []  # removed by the upsert
        assert engine.inspect(run.id).search_attributes == {"stage": "shipped"}


def test_continue_as_new_keeps_them_and_a_pruned_run_leaves_no_entry(
    make_engine: MakeEngine,
) -> None:
    clock = af.ManualClock()
    engine = make_engine(workers=1, clock=clock, retention="1h")
    define(engine)
    with engine:
        first = engine.trigger("chain", 2, search_attributes={"batch": "b-7"}, memo={"n": 2})
        assert first.result(timeout=60) == 0
        chained = engine.runs(where={"batch": "b-7"}, limit=None)
        assert len(chained) == 3  # every run of the chain has it
        assert all(engine.inspect(r.id).memo == {"n": 2} for r in chained)
        clock.advance(7200)
        engine.prune()
        assert engine.runs(where={"batch": "b-7"}) == []
        store = engine._store
        assert store is not None
        assert store.scan(K.INDEX, b"sa\x00") == []


def test_the_longest_name_and_value_fit_the_index(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    define(engine)
    name, value = "n" * K.MAX_NAME, "\u00e9" * 128  # 256 bytes of UTF-8
    with engine:
        run = engine.trigger("invoice", {}, search_attributes={name: value})
        run.result(timeout=60)
        assert [r.id for r in engine.runs(where={name: value})] == [run.id]
        with pytest.raises(af.ClientError, match="at most 256 bytes"):
            engine.trigger("invoice", {}, search_attributes={name: value + "x"})
