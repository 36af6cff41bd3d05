"""Both evaluator twins, checked against each other and against the rules."""

from __future__ import annotations

import os
from array import array
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actorflow as af
from actorflow.graph import NATIVE, RunState, _codes, _evaluator_py, compile_plan, load_evaluator
from actorflow.graph._codes import (
    EV_FAILED,
    EV_SKIPPED,
    EV_SUCCEEDED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SUCCEEDED,
    RUN_ACTIVE,
    RUN_COMPLETED,
    RUN_FAILED,
)
from tests import steps

try:
    from actorflow.graph import _evaluator_c
except ImportError:  # pragma: no cover - the pure twin is tested regardless
    _evaluator_c = None  # type: ignore[assignment]

TWINS = [pytest.param(_evaluator_py, id="python")]
if _evaluator_c is not None:
    TWINS.append(pytest.param(_evaluator_c, id="cython"))


def test_compiled_evaluator_loaded_when_required() -> None:
    """`make test` builds the extension and sets ACTORFLOW_REQUIRE_NATIVE=1: it must load."""
    if os.environ.get("ACTORFLOW_NO_EXTENSIONS") == "1":
        assert not NATIVE
        assert load_evaluator() is _evaluator_py
        return
    if os.environ.get("ACTORFLOW_REQUIRE_NATIVE") == "1":
        assert _evaluator_c is not None, "the Cython evaluator was expected but did not load"
        assert NATIVE and load_evaluator() is _evaluator_c
        assert _evaluator_c.IMPLEMENTATION == "cython"


def test_forcing_pure_python() -> None:
    assert load_evaluator(native=False) is _evaluator_py


def test_twins_share_codes() -> None:
    if _evaluator_c is None:
        pytest.skip("compiled evaluator not built")
    for name, value in _evaluator_c.CODES.items():
        assert getattr(_codes, name) == value, name


def _plan(kinds: str) -> af.Workflow:
    wf = af.Workflow("w")
    for i, k in enumerate(kinds):
        (wf.action if k == "a" else wf.step)(f"n{i}", steps.noop)
    return wf


@pytest.mark.parametrize("ev", TWINS)
def test_sequence_runs_in_order(ev: ModuleType) -> None:
    plan = compile_plan(_plan("ssas").build())
    state = RunState(plan)
    assert ev.start(plan.roots, state.status, state.counters) == [0]
    assert state.status[0] == NODE_RUNNING
    order = [0]
    node = 0
    while True:
        ready, outcome = ev.advance(
            plan.succ_start,
            plan.succ,
            state.status,
            state.waiting,
            state.counters,
            node,
            EV_SUCCEEDED,
        )
        if outcome == RUN_COMPLETED:
            assert ready == []
            break
        assert outcome == RUN_ACTIVE and len(ready) == 1
        node = ready[0]
        order.append(node)
    assert order == [0, 1, 2, 3]
    assert list(plan.last_source) == [-1, 0, 1, 1]  # the action (2) is skipped for ctx.last
    assert plan.result_node == 3


@pytest.mark.parametrize("ev", TWINS)
def test_failure_ends_the_run_and_finished_nodes_refuse_events(ev: ModuleType) -> None:
    plan = compile_plan(_plan("sss").build())
    state = RunState(plan)
    ev.start(plan.roots, state.status, state.counters)
    args = (plan.succ_start, plan.succ, state.status, state.waiting, state.counters)
    assert ev.advance(*args, 0, EV_FAILED) == ([], RUN_FAILED)
    with pytest.raises(ValueError, match="already finished"):
        ev.advance(*args, 0, EV_SUCCEEDED)
    with pytest.raises(ValueError, match="unknown event"):
        ev.advance(*args, 1, 99)


@pytest.mark.parametrize("ev", TWINS)
def test_rebuild_after_restart(ev: ModuleType) -> None:
    plan = compile_plan(_plan("ssss").build())
    state = RunState(plan)
    state.status[0] = NODE_SUCCEEDED
    state.status[1] = NODE_SUCCEEDED  # recorded done; node 2's dispatch was never recorded
    ready = ev.rebuild(
        plan.succ_start, plan.succ, plan.pred_count, state.status, state.waiting, state.counters
    )
    assert ready == [2]
    assert state.counters[0] == 2
    assert list(state.waiting) == [0, 0, 0, 1]


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.text(alphabet="sa", min_size=1, max_size=40),
    events=st.lists(st.sampled_from([EV_SUCCEEDED, EV_SKIPPED, EV_FAILED]), max_size=60),
    restart_at=st.integers(min_value=0, max_value=60),
)
def test_twins_agree(kinds: str, events: list[int], restart_at: int) -> None:
    """Random plans and event orders: both twins choose the same steps, outcomes and states."""
    if _evaluator_c is None:
        pytest.skip("compiled evaluator not built")
    plan = compile_plan(_plan(kinds).build())
    results = []
    for ev in (_evaluator_py, _evaluator_c):
        state = RunState(plan)
        trace: list[object] = [ev.start(plan.roots, state.status, state.counters)]
        running = list(trace[0])  # type: ignore[arg-type]
        for i, event in enumerate(events):
            if i == restart_at:  # a restart: rebuild from the node states alone
                trace.append(
                    ev.rebuild(
                        plan.succ_start,
                        plan.succ,
                        plan.pred_count,
                        state.status,
                        state.waiting,
                        state.counters,
                    )
                )
            if not running:
                break
            node = running.pop(0)
            ready, outcome = ev.advance(
                plan.succ_start, plan.succ, state.status, state.waiting, state.counters, node, event
            )
            running.extend(ready)
            trace.append((node, event, ready, outcome))
            if outcome != RUN_ACTIVE:
                break
        trace.append((bytes(state.status), list(state.waiting), state.counters[0]))
        results.append(trace)
    assert results[0] == results[1]


@pytest.mark.parametrize("ev", TWINS)
def test_work_per_event_does_not_grow_with_the_run(ev: ModuleType) -> None:
    """A 100,000-step plan: each event touches only the node's successors."""
    plan = compile_plan(_plan("s" * 100_000).build())
    state = RunState(plan)
    ev.start(plan.roots, state.status, state.counters)
    args = (plan.succ_start, plan.succ, state.status, state.waiting, state.counters)
    node = 0
    for _ in range(99_999):
        node = ev.advance(*args, node, EV_SUCCEEDED)[0][0]
    assert ev.advance(*args, node, EV_SUCCEEDED) == ([], RUN_COMPLETED)
    assert state.status.count(NODE_SUCCEEDED) == 100_000
    assert NODE_PENDING not in state.status
    assert isinstance(plan.succ, array)
