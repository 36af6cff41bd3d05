"""Signal handlers take what their sender sent: zero, one or several arguments; a panic
records its exception and traceback where users look (issue 24.4)."""

from __future__ import annotations

import asyncio
import json
import logging
import operator
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
            "signals": [
                {
                    "name": "add",
                    "params": ["n"],
                    "signature": "(n: int) -> None",
                    "takes": [1, 1],
                    "doc": "Add n to the total.",
                }
            ],
            "updates": [
                {"name": "reset", "params": ["_"], "signature": "(_)", "takes": [1, 1], "doc": ""}
            ],
        }
        other = engine.trigger("handlers")
        wait_until(lambda: len(other.query("__actorflow_handlers")["signals"]) == 4)
        signals = other.query("__actorflow_handlers")["signals"]
        assert [(s["name"], s["params"], s["takes"]) for s in signals] == [
            ("exit", [], [0, 0]),
            ("one", ["object"], [1, 1]),
            ("opt", ["a", "b"], [1, 2]),  # b has a default
            ("three", ["a", "b", "c"], [3, 3]),
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
        assert answer["result"]["queries"] == [
            {"name": "total", "params": [], "signature": "()", "takes": [0, 0], "doc": ""}
        ]
        assert again.run(run.id).query("total") == 2


def test_handler_names_with_a_slash_and_a_failing_update_over_rest(
    make_engine: MakeEngine,
) -> None:
    """A handler named "a/b" is addressed over REST as a%2Fb (by the client and the
    dashboard); an update whose awaited step fails is the handler's failure (422), not the
    engine's (it was a 500)."""
    from tests.serving import serve

    engine = make_engine()

    @engine.workflow("slashes")
    async def slashes(ctx: af.WorkflowContext) -> list[Any]:
        got: list[Any] = []

        async def checked(n: Any) -> int:
            return int(await ctx.step("double", operator.mul, n, 2))

        ctx.on_signal("orders/add", got.append)
        ctx.on_query("orders/count", lambda: len(got))
        ctx.on_update("orders/checked", checked)
        await ctx.wait_for_signal("stop")
        return got

    with engine, serve(engine.asgi()) as base, af.Client(base) as client:
        run = engine.trigger("slashes")
        wait_until(lambda: bool(run.query("__actorflow_handlers")["updates"]))
        sent = httpx.post(f"{base}/api/runs/{run.id}/signals/orders%2Fadd", json=5)
        assert sent.status_code == 202, sent.text
        client.signal(run.id, "orders/add", 6)
        wait_until(lambda: client.query(run.id, "orders/count") == 2)
        assert client.update(run.id, "orders/checked", 4) == 8
        failed = httpx.post(  # its step: None * 2, a TypeError
            f"{base}/api/runs/{run.id}/updates/orders%2Fchecked",
            content=b"null",
            headers={"Content-Type": "application/json"},
        )
        assert failed.status_code == 422, failed.text
        assert failed.json()["error"] == "update_failed"
        assert failed.json()["detail"].startswith("StepFailed: ")
        with pytest.raises(af.RemoteError, match="StepFailed"):
            client.update(run.id, "orders/checked", None)
        missing = httpx.post(f"{base}/api/runs/{run.id}/updates/nope", json=1)
        assert missing.status_code == 400  # the request's error stays the engine's answer
        client.signal(run.id, "stop")
        assert run.result(timeout=30) == [5, 6]


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
    # Names no sender could address are refused too: "." and ".." (a URL path resolves
    # them), past the name limit, NUL. One with '/' is fine: REST sends it as %2F.
    for bad, why in (
        (".", "a URL path cannot address it"),
        ("x" * 300, "at most"),
        ("a\x00b", "NUL"),
    ):
        with pytest.raises(af.DefinitionError, match=why):
            af.WorkflowContext.on_signal(_bare_context(), bad, print)


def test_a_signal_handler_and_a_wait_for_the_same_name_are_refused(
    make_engine: MakeEngine,
) -> None:
    """The handler would take every signal and the wait never end (a silent hang): either
    order raises, and the run panics with the reason instead of waiting forever."""
    engine = make_engine()

    @engine.workflow("handler_first")
    async def handler_first(ctx: af.WorkflowContext) -> None:
        ctx.on_signal("stop", lambda: None)
        await ctx.wait_for_signal("stop")

    @engine.workflow("wait_first")
    async def wait_first(ctx: af.WorkflowContext) -> Any:
        waiting = asyncio.ensure_future(ctx.wait_for_signal("stop"))
        await asyncio.sleep(0)
        ctx.on_signal("stop", lambda: None)
        return await waiting

    with engine:
        for wf, why in (
            ("handler_first", "this wait would never end"),
            ("wait_first", "is waiting"),
        ):
            run = engine.trigger(wf)
            wait_until(lambda run=run: run.status() == af.RunStatus.PANICKED)
            error = run.inspect().error
            assert error is not None and why in error.message, error


def _bare_context() -> Any:
    """A context whose handler tables are plain dicts (only the name checks run)."""

    class Driver:
        signal_handlers: dict[str, Any] = {}
        signal_waits: dict[str, Any] = {}
        signals: dict[str, Any] = {}

    ctx = object.__new__(af.WorkflowContext)
    ctx._driver = Driver()  # type: ignore[attr-defined]
    return ctx


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
        assert "error: ValueError: handler cannot take 7" in shown.stdout  # not builtins.
        detail = json.loads(cli(data_dir, "show", run.id, "--json").stdout)
        assert detail["error"]["kind"] == "panic" and "in boom" in detail["error"]["traceback"]
