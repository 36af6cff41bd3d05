"""A failure's traceback as its author can read it: ``user_traceback`` (the error record's
``traceback`` without the engine's frames) wherever errors are recorded and read, and code
sent by value (a script run as ``__main__``) keeping its file name and source lines."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import actorflow as af
from actorflow._tracebacks import format_error
from tests.conftest import wait_until
from tests.serving import serve

MakeEngine = Callable[..., af.Engine]

PACKAGE = str(Path(af.__file__).resolve().parent)
HERE = str(Path(__file__).resolve())
HEADER = "Traceback (most recent call last):\n"
CAUSE = "The above exception was the direct cause of the following exception:"
CONTEXT = "During handling of the above exception, another exception occurred:"


def files(text: str) -> list[str]:
    """The file of each frame of a formatted traceback, in order."""
    return re.findall(r'^  File "([^"]+)", line \d+', text, re.M)


def assert_users(user: str, full: str, last_line: str) -> None:
    """``user`` is ``full`` without the engine's frames, starting in this file."""
    # (a chain can start with a step's traceback, re-raised in the engine: its text)
    assert user.startswith((HEADER, f"{af.RemoteTraceback.__module__}.RemoteTraceback: {HEADER}"))
    assert user.rstrip().endswith(last_line), user
    assert files(user) and files(user)[0] == HERE, user
    assert not [f for f in files(user) if f.startswith(PACKAGE)], user
    assert "asyncio" not in user, user
    assert [f for f in files(full) if f.startswith(PACKAGE)], full  # the full one: unchanged
    assert full.rstrip().endswith(last_line)


def lookup(ctx: Any) -> None:
    raise KeyError("account 42")


def charge(ctx: Any) -> None:
    try:
        lookup(ctx)
    except KeyError as exc:
        raise ValueError("no such account: 42") from exc


def refund(ctx: Any) -> None:
    try:
        lookup(ctx)
    except KeyError:
        raise RuntimeError("refund failed")  # noqa: B904 (the context is the point)


async def notify(ctx: Any) -> None:
    await asyncio.sleep(0)
    raise ConnectionError("mail server down")


def fetch(n: int) -> int:
    raise LookupError(f"no item {n}")


def double(n: int) -> int:
    return 2 * n


def test_a_failed_steps_user_traceback_starts_in_the_users_code(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("charge").step("charge", charge)
    engine.define("refund").step("refund", refund)
    engine.define("notify").step("notify", notify)
    with engine:
        with pytest.raises(af.StepFailed) as raised:
            engine.trigger("charge").result(timeout=30)
        run = engine.run(raised.value.run_id or "")
        err = run.inspect().error
        assert err is not None and err.kind == "error"
        assert_users(err.user_traceback, err.traceback, "ValueError: no such account: 42")
        # The chain keeps both parts, each without the engine's frames.
        before, _, after = err.user_traceback.partition(CAUSE)
        assert "KeyError: 'account 42'" in before and files(before) == [HERE, HERE]
        assert after.strip().startswith(HEADER.strip()) and files(after) == [HERE]
        assert 'raise ValueError("no such account: 42") from exc' in after
        assert run.inspect().step("charge").error == err
        assert raised.value.user_traceback == err.user_traceback
        assert raised.value.traceback == err.traceback

        with pytest.raises(af.StepFailed):  # raised while handling: "During handling of..."
            engine.trigger("refund").result(timeout=30)
        err = engine.runs(workflow="refund")[0]
        got = engine.inspect(err.id).error
        assert got is not None and CONTEXT in got.user_traceback
        assert_users(got.user_traceback, got.traceback, "RuntimeError: refund failed")
        assert got.user_traceback.count(HEADER) == 2

        with pytest.raises(af.StepFailed):  # async: the event loop's frames are the engine's
            engine.trigger("notify").result(timeout=30)
        got = engine.inspect(engine.runs(workflow="notify")[0].id).error
        assert got is not None and "asyncio" in got.traceback
        assert_users(got.user_traceback, got.traceback, "ConnectionError: mail server down")


def test_the_rest_api_and_the_client_give_the_user_traceback(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("charge").step("charge", charge)
    with engine, serve(engine.asgi()) as base, af.Client(base) as client:
        run = engine.trigger("charge")
        with pytest.raises(af.StepFailed):
            run.result(timeout=30)
        error = engine.inspect(run.id).error
        assert error is not None
        detail = httpx.get(f"{base}/api/runs/{run.id}").json()
        assert detail["error"]["user_traceback"] == error.user_traceback
        assert detail["steps"][0]["error"]["user_traceback"] == error.user_traceback
        assert detail["error"]["traceback"] == error.traceback != error.user_traceback
        remote = client.run(run.id)
        assert client.inspect(run.id).error == error
        with pytest.raises(af.StepFailed) as raised:
            remote.result(timeout=30)
        assert raised.value.user_traceback == error.user_traceback


def test_code_workflows_steps_and_functions_give_the_user_traceback(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()

    @engine.workflow("steps")
    async def steps(ctx: af.WorkflowContext) -> None:
        await ctx.step("fetch", fetch, 3)

    @engine.workflow("own", failure_types=[ArithmeticError])
    async def own(ctx: af.WorkflowContext) -> None:
        try:
            await ctx.step("fetch", fetch, 4)
        except af.StepFailed as exc:
            raise ArithmeticError("cannot total the order") from exc

    @engine.workflow("panics", panic=af.PanicPolicy(max_restarts=0))
    async def panics(ctx: af.WorkflowContext) -> None:
        await ctx.step("double", double, 5)
        raise TypeError("not a failure type")

    with engine:
        with pytest.raises(af.StepFailed):
            engine.trigger("steps").result(timeout=30)
        err = engine.inspect(engine.runs(workflow="steps")[0].id).error
        assert err is not None and err.step == "fetch"
        assert_users(err.user_traceback, err.traceback, "LookupError: no item 3")

        with pytest.raises(af.WorkflowFailed):  # the function itself raised
            engine.trigger("own").result(timeout=30)
        err = engine.inspect(engine.runs(workflow="own")[0].id).error
        assert err is not None and err.kind == "workflow"
        assert_users(err.user_traceback, err.traceback, "ArithmeticError: cannot total the order")
        assert CAUSE in err.user_traceback and "in own" in err.user_traceback
        assert 'raise ArithmeticError("cannot total the order") from exc' in err.user_traceback

        run = engine.trigger("panics")
        wait_until(lambda: run.status() == af.RunStatus.PANICKED)
        err = run.inspect().error
        assert err is not None and err.kind == "panic"
        assert_users(err.user_traceback, err.traceback, "TypeError: not a failure type")
        assert "in panics" in err.user_traceback


def test_code_the_engine_runs_gives_the_user_traceback(make_engine: MakeEngine) -> None:
    def too_big(ctx: Any) -> bool:
        return bool(ctx.last["amount"] > 100)  # KeyError: no amount

    engine = make_engine()
    engine.define("route").step("start", lambda ctx: {}).if_("big", too_big).step(
        "review", lambda ctx: 1
    ).endif()
    with engine:
        with pytest.raises(af.StepFailed):
            engine.trigger("route").result(timeout=30)
        err = engine.inspect(engine.runs(workflow="route")[0].id).error
        assert err is not None and err.step == "big"
        assert_users(err.user_traceback, err.traceback, "KeyError: 'amount'")


def test_an_engine_error_keeps_its_whole_traceback() -> None:
    try:
        af.views.parse_status("done")
    except af.ActorflowError as exc:
        error = exc.with_traceback(exc.__traceback__.tb_next if exc.__traceback__ else None)
    assert files("".join(traceback.format_exception(error)))[0].startswith(PACKAGE)
    full, user = format_error(error)
    assert user == full and full.startswith(HEADER)


SCRIPT = """
import json
import sys

import actorflow as af


def parse(text):
    return int(text)  # the failing line


def total(ctx):
    return parse(ctx.payload)


if __name__ == "__main__":
    engine = af.Engine(data_dir=sys.argv[1], workers=1)
    engine.define("total").step("total", total)
    with engine:
        run = engine.trigger("total", "forty-two")
        try:
            run.result(timeout=60)
        except af.StepFailed:
            pass
        error = run.inspect().error
    print(json.dumps({"traceback": error.traceback, "user_traceback": error.user_traceback}))
"""


def test_a_step_of_a_script_run_as_main_names_the_script_and_its_lines(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    where = str(script.resolve())
    lines = script.read_text().splitlines()
    at_total = lines.index("    return parse(ctx.payload)") + 1
    at_parse = lines.index("    return int(text)  # the failing line") + 1
    for text in got.values():
        assert "<dynamic-code>" not in text, text
        assert f'File "{where}", line {at_total}, in total' in text, text
        assert f'File "{where}", line {at_parse}, in parse' in text, text
        assert "    return int(text)  # the failing line\n" in text, text
    assert files(got["user_traceback"]) == [where, where]
    assert (
        got["user_traceback"]
        .rstrip()
        .endswith("ValueError: invalid literal for int() with base 10: 'forty-two'")
    )
