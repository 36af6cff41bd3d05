"""Signal handlers take what their sender sent: zero, one or several arguments; a panic
records its exception and traceback where users look (issue 24.4)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import actorflow as af
from tests.cli.test_cli import cli
from tests.conftest import wait_until

MakeEngine = Callable[..., af.Engine]


def _handlers(engine: af.Engine) -> None:
    @engine.workflow("handlers")
    async def handlers(ctx: af.WorkflowContext) -> dict[str, Any]:
        done = asyncio.Event()
        got: dict[str, Any] = {"one": [], "three": [], "opt": []}
        ctx.on_signal("exit", lambda: done.set())  # no argument (used to panic the run)
        ctx.on_signal("one", got["one"].append)
        ctx.on_signal("three", lambda a, b, c: got["three"].append([a, b, c]))
        ctx.on_signal("opt", lambda a, b=2: got["opt"].append([a, b]))
        ctx.on_query("got", lambda: got)
        pair = await ctx.wait_for_signal("pair")
        await done.wait()
        return {**got, "pair": pair}


def test_handlers_of_zero_one_and_three_arguments(make_engine: MakeEngine) -> None:
    engine = make_engine()
    _handlers(engine)
    with engine:
        run = engine.trigger("handlers")
        run.signal("one", {"x": 1})
        run.signal("one")  # no payload: a one-argument handler gets None
        run.signal("three", args=[1, "b", [3]])
        run.signal("opt", args=[1])
        run.signal("opt", args=[1, 5])
        run.signal("pair", args=["a", "b"])  # a wait gets the list
        wait_until(lambda: len(run.query("got")["opt"]) == 2)
        run.signal("exit")
        result = run.result(timeout=30)
    assert result == {
        "one": [{"x": 1}, None],
        "three": [[1, "b", [3]]],
        "opt": [[1, 2], [1, 5]],
        "pair": ["a", "b"],
    }


def test_a_signal_that_does_not_fit_is_dropped_and_the_run_goes_on(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine()

    @engine.workflow("fits")
    async def fits(ctx: af.WorkflowContext) -> list[Any]:
        got: list[Any] = []
        ctx.on_signal("two", lambda a, b: got.append([a, b]))
        await ctx.wait_for_signal("go")
        return got

    with engine, caplog.at_level(logging.WARNING, "actorflow.workflow"):
        run = engine.trigger("fits")
        run.signal("two", 1)  # one payload for a handler of two
        run.signal("two", args=[1, 2, 3])
        run.signal("two", args=[1, 2])
        run.signal("go")
        assert run.result(timeout=30) == [[1, 2]]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2
    assert "takes (a, b)" in dropped[0] and "one payload" in dropped[0]
    assert "3 argument(s)" in dropped[1]


def test_signal_args_are_checked_at_the_boundary(make_engine: MakeEngine) -> None:
    engine = make_engine()
    _handlers(engine)
    with engine:
        run = engine.trigger("handlers")
        with pytest.raises(af.ClientError, match="payload or args, not both"):
            run.signal("three", 1, args=[1, 2, 3])
        with pytest.raises(af.ClientError, match="args: expected a list"):
            run.signal("three", args="abc")  # type: ignore[arg-type]
        run.cancel()


def test_signal_args_over_rest(make_engine: MakeEngine) -> None:
    from tests.serving import serve

    engine = make_engine()
    _handlers(engine)
    with engine, serve(engine.asgi()) as base, af.Client(base) as client:
        run = engine.trigger("handlers")
        client.signal(run.id, "three", args=[1, 2, 3])
        client.run(run.id).signal("pair", args=["x", "y"])
        bad = httpx.post(f"{base}/api/runs/{run.id}/signals/three?args=true", json={"a": 1})
        assert bad.status_code == 400 and "JSON list" in bad.text
        bad = httpx.post(f"{base}/api/runs/{run.id}/signals/three?args=maybe", json=[1])
        assert bad.status_code == 400 and "args: expected true or false" in bad.text
        client.signal(run.id, "exit")
        result = run.result(timeout=30)
    assert result["three"] == [[1, 2, 3]] and result["pair"] == ["x", "y"]


def test_a_run_answers_which_handlers_it_has(make_engine: MakeEngine) -> None:
    """The built-in query the dashboard's signal form reads: names, parameters, docstrings,
    from a running run and from a finished one (rebuilt by replay in a new engine)."""
    from tests.serving import serve

    async def documented(ctx: af.WorkflowContext) -> int:
        def add(n: int) -> None:
            """Add n to the total.

            More lines are not shown."""
            got.append(n)

        got: list[int] = []
        ctx.on_signal("add", add)
        ctx.on_update("reset", lambda _: got.clear())
        await ctx.wait_for_signal("stop")
        ctx.on_query("total", lambda: sum(got))  # registered late: answered after the end
        return sum(got)

    engine = make_engine()
    engine.workflow("documented")(documented)
    _handlers(engine)
    with engine:
        run = engine.trigger("documented")
        wait_until(lambda: run.query("__actorflow_handlers")["signals"] != [])
        assert run.query("__actorflow_handlers") == {
            "queries": [],
            "signals": [{"name": "add", "params": ["n"], "doc": "Add n to the total."}],
            "updates": [{"name": "reset", "params": ["_"], "doc": ""}],
        }
        other = engine.trigger("handlers")
        wait_until(lambda: len(other.query("__actorflow_handlers")["signals"]) == 4)
        signals = other.query("__actorflow_handlers")["signals"]
        assert [(s["name"], s["params"]) for s in signals] == [
            ("exit", []),
            ("one", ["object"]),
            ("opt", ["a", "b"]),
            ("three", ["a", "b", "c"]),
        ]
        assert all(s["doc"] == "" for s in signals)  # list.append's docstring is not the user's
        run.signal("add", 2)
        run.signal("stop")
        assert run.result(timeout=30) == 2
        other.cancel()
    again = make_engine()
    again.workflow("documented")(documented)
    _handlers(again)
    with again, serve(again.asgi()) as base:
        answer = httpx.get(f"{base}/api/runs/{run.id}/queries/__actorflow_handlers").json()
        assert answer["result"]["queries"] == [{"name": "total", "params": [], "doc": ""}]
        assert again.run(run.id).query("total") == 2


def test_handler_names_of_the_builtin_prefix_are_refused(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("squatter")
    async def squatter(ctx: af.WorkflowContext) -> None:
        ctx.on_query("__actorflow_handlers", lambda: {"fake": True})

    with engine:
        run = engine.trigger("squatter")
        wait_until(lambda: run.status() == af.RunStatus.PANICKED)
        error = run.inspect().error
        assert error is not None and "__actorflow" in error.message
        assert "kept for actorflow's built-in queries" in error.message


def test_a_panic_is_shown_by_inspect_and_show(make_engine: MakeEngine, data_dir: Path) -> None:
    engine = make_engine()

    def boom(value: Any) -> None:
        raise ValueError(f"handler cannot take {value!r}")

    @engine.workflow("panics", panic=af.PanicPolicy(max_restarts=0))
    async def panics(ctx: af.WorkflowContext) -> None:
        ctx.on_signal("bad", boom)
        await ctx.wait_for_signal("never")

    with engine:
        run = engine.trigger("panics")
        run.signal("bad", 7)
        wait_until(lambda: run.status() == af.RunStatus.PANICKED)
        error = run.inspect().error
        assert error is not None and error.kind == "panic"
        assert error.type == "builtins.ValueError"
        assert error.message == "handler cannot take 7"
        assert "in boom" in error.traceback
        shown = cli(data_dir, "show", run.id)
        assert shown.returncode == 0, shown.stderr
        assert "ValueError" in shown.stdout and "handler cannot take 7" in shown.stdout
        detail = json.loads(cli(data_dir, "show", run.id, "--json").stdout)
        assert detail["error"]["kind"] == "panic" and "in boom" in detail["error"]["traceback"]
