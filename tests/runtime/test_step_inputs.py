"""What each step was given (``StepDetails.input``), as Temporal shows an activity's input: a
code step's arguments, a graph step's ``ctx.last`` (a for_each item's item), a subflow's
payload; cut and bounded as outputs are, pickles as placeholders, never unpickled, and
recorded in the record its dispatch writes. Real workers, real LMDB."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import actorflow as af
from actorflow.store import _keys as K
from actorflow.store._lmdb import LmdbStore
from tests import code_steps, steps
from tests.cli.test_cli import cli
from tests.serving import serve


def ident(value: Any) -> str:
    """A code step that takes anything and returns its type's name."""
    return type(value).__name__


def big_text(ctx: Any) -> str:
    return "x" * 100_000  # over 64 KiB: the next step's ctx.last travels as a reference


def length(ctx: Any) -> int:
    return len(ctx.last)


def _records(data_dir: Path, run_id: str) -> dict[str, bytes]:
    """The raw step records of a run, by path (read after the engine stopped)."""
    store = LmdbStore(data_dir, read_only=True)
    try:
        prefix = K.step_prefix(run_id)
        return {k[len(prefix) :].decode(): v for k, v in store.scan(K.STEPS, prefix)}
    finally:
        store.close()


def test_a_code_steps_input_is_its_arguments_and_a_map_items_its_item(
    engine: af.Engine,
) -> None:
    engine.define("child").step("total", steps.child_total)

    @engine.workflow("code")
    async def code(ctx: af.WorkflowContext, n: int) -> Any:
        pair = await ctx.step("pair", code_steps.add, "a", "b")
        total = await ctx.step("total", code_steps.add, n, 2)
        squares = await ctx.map("squares", code_steps.square, [1, 2, 3])
        child = await ctx.child("sub", "child", {"values": [1, 2]})
        return [pair, total, squares, child]

    with engine:
        run = engine.trigger("code", 5)
        assert run.result(timeout=60) == ["ab", 7, [1, 4, 9], 3]
        d = run.inspect()
    assert d.step("pair").input == '["a","b"]' and d.step("pair").output == '"ab"'
    assert d.step("total").input == "[5,2]"
    assert [d.step(f"squares[{i}]").input for i in range(3)] == ["[1]", "[2]", "[3]"]
    assert d.step("sub").input == '{"values":[1,2]}'


def test_a_graph_steps_input_is_ctx_last_a_for_each_items_its_item_a_subflows_its_payload(
    engine: af.Engine,
) -> None:
    engine.define("child").step("total", steps.child_total)
    (
        engine.define("flow")
        .step("one", steps.add_one)
        .step("two", steps.add_one)
        .for_each(
            "lines",
            lambda ctx: [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}],
            lambda item, flow: flow.step("qty", lambda ctx: ctx.last["qty"]).step(
                "double", lambda ctx: 2 * ctx.last
            ),
        )
        .subflow("sub", "child", input=lambda ctx: {"values": ctx.last})
    )
    with engine:
        run = engine.trigger("flow", {"n": 1})
        assert run.result(timeout=60) == 10
        d = run.inspect()
    assert d.step("one").input == "null"  # the first step's ctx.last (it reads the payload)
    assert (d.step("two").input, d.step("two").output) == ("2", "3")
    assert d.step("lines[0]/qty").input == '{"sku":"a","qty":2}'  # the item
    assert d.step("lines[1]/qty").input == '{"sku":"b","qty":3}'
    assert d.step("lines[1]/double").input == "3"  # ctx.last inside the body
    assert d.step("sub").input == '{"values":[4,6]}'  # the child's payload
    assert d.step("lines").input is None  # a fan-out itself takes no input


def test_items_sent_in_chunks_record_their_item_too(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    engine.define("fan").for_each("items", lambda ctx: list(range(ctx.payload)), steps.tiny_double)
    with engine:
        engine.trigger("fan", 20).result(timeout=60)  # the step's cost is learnt
        before = engine.statistics()["pool"]["dispatched"]
        run = engine.trigger("fan", 2000)
        assert run.result(timeout=120) == [2 * i for i in range(2000)]
        tasks = engine.statistics()["pool"]["dispatched"] - before
        d = run.inspect()
    assert tasks < 500, tasks  # in chunks: no record of their own at dispatch
    assert d.step("items[1234]/tiny_double").input == "1234"
    assert all(s.input == s.path[6:-13] for s in d.steps if s.path.startswith("items["))


def test_an_items_record_points_at_its_item_instead_of_copying_it(
    engine: af.Engine, data_dir: Path
) -> None:
    """The for_each keeps its items (``#items``): an item's step says "my item" in a byte,
    and the reader renders it from there, as it would a copied input."""
    sku = "sku-" + "x" * 120  # an item of 125 bytes a copy would add to each record
    engine.define("fan").for_each("lines", lambda ctx: [sku, {"n": 2}, 3], steps.item_size)
    engine.define("objs").for_each("xs", lambda ctx: [Path("/a"), Path("/b")], steps.tiny_first)
    with engine:
        run = engine.trigger("fan", {})
        run.result(timeout=60)
        pickled = engine.trigger("objs", {})
        pickled.result(timeout=60)
        d = run.inspect()
        p = pickled.inspect()
    assert [d.step(f"lines[{i}]/item_size").input for i in range(3)] == [
        f'"{sku}"',
        '{"n":2}',
        "3",
    ]
    records = _records(data_dir, run.id)
    raw = records["lines[0]/item_size"]
    assert b"sku-" not in raw and len(raw) < 100, raw  # not a copy of the item
    # Items that are not JSON are never unpickled to be shown: a placeholder says so.
    assert p.step("xs[0]/tiny_first").input == "(its item, of items that are not JSON)"


def test_a_large_input_is_cut_and_its_record_stays_small(engine: af.Engine, data_dir: Path) -> None:
    engine.define("big").step("make", big_text).step("measure", length)

    @engine.workflow("code")
    async def code(ctx: af.WorkflowContext) -> list[str]:
        text = await ctx.step("text", ident, "y" * 100_000)
        raw = await ctx.step("raw", ident, bytes(2 << 20))  # pickled, its buffer out of band
        return [text, raw]

    with engine:
        graph = engine.trigger("big", None)
        assert graph.result(timeout=60) == 100_000
        run = engine.trigger("code")
        assert run.result(timeout=60) == ["str", "bytes"]
        measured = graph.inspect().step("measure")
        d = run.inspect()
    assert measured.input == '"' + "x" * 196 + "..."  # 200 characters, as outputs are cut
    assert d.step("text").input == '["' + "y" * 195 + "..."
    raw = d.step("raw").input or ""
    assert raw.startswith("<pickled object, ") and "large buffer(s), 2.0 MiB>" in raw, raw
    records = {**_records(data_dir, graph.id), **_records(data_dir, run.id)}
    for path in ("measure", "text", "raw"):
        assert len(records[path]) < 600, (path, len(records[path]))  # not the 100 KB value


def test_a_pickled_input_is_a_placeholder_and_never_unpickled(
    engine: af.Engine, tmp_path: Path
) -> None:
    log = tmp_path / "unpickled.log"
    log.touch()
    engine.define("graph").step("make", lambda ctx: steps.UnpickleCounter(ctx.payload)).step(
        "use", lambda ctx: type(ctx.last).__name__
    )

    @engine.workflow("code")
    async def code(ctx: af.WorkflowContext, path: str) -> str:
        return await ctx.step("use", ident, steps.UnpickleCounter(path))

    with engine:
        graph = engine.trigger("graph", str(log))
        assert graph.result(timeout=60) == "UnpickleCounter"
        run = engine.trigger("code", str(log))
        assert run.result(timeout=60) == "UnpickleCounter"
        used = graph.inspect().step("use").input or ""
        given = run.inspect().step("use").input or ""
    assert used.startswith("<pickled object, ") and used.endswith(" bytes>"), used
    assert given.startswith("<pickled object, ") and given.endswith(" bytes>"), given
    readers = {line.split()[1] for line in log.read_text().splitlines()}
    assert readers and str(os.getpid()) not in readers  # only workers unpickled it


def test_inputs_are_in_the_api_the_client_and_show(engine: af.Engine, data_dir: Path) -> None:
    engine.define("flow").step("one", steps.add_one).step("two", steps.add_one)
    with engine:
        run = engine.trigger("flow", {"n": 1})
        run.result(timeout=30)
        with serve(engine.asgi()) as url, httpx.Client(base_url=url, timeout=30) as http:
            detail = http.get(f"/api/runs/{run.id}").json()
            with af.Client(url) as client:
                remote = client.inspect(run.id)
        shown = cli(data_dir, "show", run.id)
        as_json = json.loads(cli(data_dir, "show", run.id, "--json").stdout)
    assert [s["input"] for s in detail["steps"]] == ["null", "2"]
    assert [s.input for s in remote.steps] == ["null", "2"]
    assert [s["input"] for s in as_json["steps"]] == ["null", "2"]
    assert shown.returncode == 0, shown.stderr
    assert "null -> 2" in shown.stdout and "2 -> 3" in shown.stdout
