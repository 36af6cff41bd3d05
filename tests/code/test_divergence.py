"""Every path that replays a code workflow detects a divergence the same way (issue 24.2).

A "deploy" is a new engine on the same store whose function changed without ``ctx.patched``
(step "b" became "x", at history position 1). A query used to answer from the diverged
replay (``None``); now a query, a signal, an update and recovery after a SIGKILL all give
the :class:`NondeterminismError` with its position.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.code._history import read_history
from tests.code.test_replay import order_v1, order_v2, waiting_at
from tests.conftest import executions, sigkill_when, wait_until

MakeEngine = Callable[..., af.Engine]
ROOT = Path(__file__).resolve().parents[2]


def _diverged(exc: af.NondeterminismError) -> None:
    assert (exc.position, exc.expected, exc.actual) == (1, "step 'b'", "step 'x'")
    assert "history position 1" in str(exc)


def _with_query(order: Callable[..., Any]) -> Callable[..., Any]:
    async def flow(ctx: af.WorkflowContext) -> Any:
        ctx.on_query("state", lambda: "answered")
        ctx.on_update("bump", lambda n: n + 1)
        return await order(ctx)

    return flow


def test_a_query_of_a_finished_run_that_diverged_raises(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = str(tmp_path / "log")
    first = make_engine()
    first.workflow("order")(_with_query(order_v1(log)))
    with first:
        run = first.trigger("order")
        waiting_at(first, run, "go")
        run.signal("go", "yes")
        assert run.result(timeout=30) == [1, 2, "yes", 3]
        assert run.query("state") == "answered"  # the same code: replayed, it answers

    second = make_engine()
    second.workflow("order")(_with_query(order_v2(log)))
    with second:
        with pytest.raises(af.NondeterminismError) as caught:
            second.run(run.id).query("state")
        _diverged(caught.value)
        assert second.run(run.id).status() == af.RunStatus.COMPLETED  # it stays what it was
    assert executions(Path(log)) == {"a": 1, "b": 1, "c": 1}


def test_a_signal_and_an_update_to_a_diverged_run_raise(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = str(tmp_path / "log")
    first = make_engine()
    first.workflow("order")(_with_query(order_v1(log)))
    with first:
        run = first.trigger("order")
        waiting_at(first, run, "go")

    second = make_engine()
    second.workflow("order", panic=af.PanicPolicy(max_restarts=0))(_with_query(order_v2(log)))
    with second:
        handle = second.run(run.id)
        wait_until(lambda: handle.status() == af.RunStatus.PANICKED)
        before = second._read(lambda store: read_history(store, run.id))
        for call in (
            lambda: handle.signal("go", "yes"),
            lambda: handle.update("bump", 1),
            lambda: handle.query("state"),
        ):
            with pytest.raises(af.NondeterminismError) as caught:
                call()
            _diverged(caught.value)
        # The refused signal was not recorded: the history is as it was.
        after = second._read(lambda store: read_history(store, run.id))
        assert [e.r for e in after[0]] == [e.r for e in before[0]]
        error = handle.inspect().error
        assert error is not None and error.type == "actorflow.errors.NondeterminismError"
        assert "history position 1" in error.message

    # Rolled back: the run takes the signal and finishes; nothing ran twice.
    third = make_engine()
    third.workflow("order")(_with_query(order_v1(log)))
    with third:
        third.restart(run.id)
        waiting_at(third, third.run(run.id), "go")
        third.run(run.id).signal("go", "yes")
        assert third.run(run.id).result(timeout=30) == [1, 2, "yes", 3]
    assert executions(Path(log)) == {"a": 1, "b": 1, "c": 1}


@pytest.mark.crash
def test_recovery_after_sigkill_on_a_diverged_history(
    make_engine: MakeEngine, tmp_path: Path, data_dir: Path
) -> None:
    log = str(tmp_path / "log")
    run_id = sigkill_when(
        tmp_path,
        f"""
            import sys, time
            import actorflow as af
            from tests.code.test_replay import order_v1

            engine = af.Engine(data_dir={str(data_dir)!r}, workers=1)
            engine.workflow("order")(order_v1({log!r}))
            with engine:
                run = engine.trigger("order")
                while not any(s.name == "go" for s in engine.inspect(run.id).steps):
                    time.sleep(0.02)
                print("WAITING", run.id, flush=True)
                time.sleep(600)
            """,
        "WAITING",
    )

    second = make_engine()
    second.workflow("order", panic=af.PanicPolicy(max_restarts=0))(order_v2(log))
    with second:
        handle = second.run(run_id)
        wait_until(lambda: handle.status() == af.RunStatus.PANICKED)
        error = handle.inspect().error
        assert error is not None and error.kind == "panic"
        assert error.type == "actorflow.errors.NondeterminismError"
        assert "history position 1: the history has step 'b', the code issued step 'x'" in (
            error.message
        )
        with pytest.raises(af.NondeterminismError) as caught:
            handle.signal("go", "late")
        _diverged(caught.value)
    assert executions(Path(log)) == {"a": 1, "b": 1}  # nothing ran again, not even "x"
