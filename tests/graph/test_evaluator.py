"""Both evaluator twins: the rules, one construct at a time, and each other on random plans."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actorflow as af
from actorflow.graph import (
    NATIVE,
    NATIVE_REASON,
    _codes,
    _evaluator_py,
    compile_plan,
    load_evaluator,
)
from actorflow.graph._codes import (
    C_ABORT,
    C_CANCEL_RUN,
    C_CHILD,
    C_DECIDE,
    C_DONE,
    C_EXPAND,
    C_FRAME,
    C_FRAME_END,
    C_LOOP,
    C_NODE_FAILED,
    C_RUN,
    C_SKIP,
    C_SLEEP,
    E_CANCEL,
    E_CHOSEN,
    E_FAILED,
    E_ITEMS,
    E_LOOP,
    E_SKIPPED,
    E_SUCCEEDED,
    R_ACTIVE,
    R_CANCELLED,
    R_COMPLETED,
    R_FAILED,
    S_RUNNING,
)
from actorflow.graph._plan import Plan

try:
    from actorflow.graph import _evaluator_c
except ImportError:  # pragma: no cover - the pure twin is tested regardless
    _evaluator_c = None  # type: ignore[assignment]

TWINS = [pytest.param(_evaluator_py, id="python")]
if _evaluator_c is not None:
    TWINS.append(pytest.param(_evaluator_c, id="cython"))

NAMES = {v: k for k, v in vars(_codes).items() if k.startswith("C_")}


def test_compiled_evaluator_loaded_when_required() -> None:
    """`make test` builds the extension and sets ACTORFLOW_REQUIRE_NATIVE=1: it must load."""
    if os.environ.get("ACTORFLOW_NO_EXTENSIONS") == "1":
        assert not NATIVE
        assert load_evaluator() is _evaluator_py
        assert NATIVE_REASON == "ACTORFLOW_NO_EXTENSIONS=1 is set"
        return
    if os.environ.get("ACTORFLOW_REQUIRE_NATIVE") == "1":
        assert _evaluator_c is not None, "the Cython evaluator was expected but did not load"
        assert NATIVE and load_evaluator() is _evaluator_c
        assert _evaluator_c.IMPLEMENTATION == "cython"
        assert NATIVE_REASON == ""
        return
    # Neither variable set (a plain pytest run): whichever loaded, the choice and its
    # reason agree: the compiled one with no reason, or the pure twin with the reason.
    if _evaluator_c is not None and NATIVE:
        assert load_evaluator() is _evaluator_c and NATIVE_REASON == ""
    else:
        assert not NATIVE and load_evaluator() is _evaluator_py and NATIVE_REASON


def test_a_compiled_module_that_cannot_load_is_reported_with_its_error(tmp_path: Path) -> None:
    """Present but unloadable (built for another Python, say): the pure twin, and the reason.

    Not installed at all is the packaging test's case (tests/test_packaging.py)."""
    (tmp_path / "_evaluator_c.py").write_text(
        "raise ImportError('undefined symbol: PyUnicode_Foo')\n"
    )
    probe = (
        "import sys\n"
        "import actorflow.graph as g\n"
        "sys.modules.pop('actorflow.graph._evaluator_c', None)  # loaded with the package\n"
        f"g.__path__.insert(0, {str(tmp_path)!r})\n"
        "module, reason = g._load(None)\n"
        "print(module.IMPLEMENTATION, reason, sep='|')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ACTORFLOW_NO_EXTENSIONS"}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == (
        "python|the compiled extension failed to load: undefined symbol: PyUnicode_Foo"
    )


def test_forcing_pure_python() -> None:
    assert load_evaluator(native=False) is _evaluator_py


def test_twins_share_codes() -> None:
    if _evaluator_c is None:
        pytest.skip("compiled evaluator not built")
    for name, value in _evaluator_c.CODES.items():
        assert getattr(_codes, name) == value, name


def f(ctx: Any) -> None: ...


def g(item: Any, ctx: Any) -> None: ...


class Run:
    """Drives one twin and renders its commands readably."""

    def __init__(self, ev: ModuleType, wf: af.Workflow) -> None:
        self.ev = ev
        self.plan: Plan = compile_plan(wf.build())
        self.pp = ev.prepare(self.plan)
        self.s = ev.new_state(self.pp)

    def show(self, cmds: list[int]) -> list[tuple[str, int, str, int]]:
        return [
            (NAMES[cmds[i]], cmds[i + 1], self.plan.names[cmds[i + 2]], cmds[i + 3])
            for i in range(0, len(cmds), 4)
        ]

    def start(self) -> list[tuple[str, int, str, int]]:
        return self.show(self.ev.start(self.pp, self.s))

    def ev_(
        self, event: int, frame: int, name: str, arg: int = 0
    ) -> list[tuple[str, int, str, int]]:
        return self.show(self.ev.advance(self.pp, self.s, event, frame, self.plan.index[name], arg))

    @property
    def outcome(self) -> int:
        return int(self.ev.outcome(self.s))


@pytest.mark.parametrize("ev", TWINS)
def test_sequence(ev: ModuleType) -> None:
    r = Run(ev, af.Workflow("w").step("a", f).action("b", f).step("c", f))
    assert r.start() == [("C_RUN", 0, "a", 0)]
    assert r.ev_(E_SUCCEEDED, 0, "a") == [("C_RUN", 0, "b", 0)]
    assert r.ev_(E_SUCCEEDED, 0, "b") == [("C_RUN", 0, "c", 0)]
    assert r.outcome == R_ACTIVE
    assert r.ev_(E_SUCCEEDED, 0, "c") == []
    assert r.outcome == R_COMPLETED
    assert r.plan.last_source[r.plan.index["c"]] == r.plan.index["a"]  # the action is passed over


@pytest.mark.parametrize("ev", TWINS)
def test_branch_takes_one_arm_and_skips_the_rest(ev: ModuleType) -> None:
    wf = (
        af.Workflow("w")
        .if_("big", f).step("b1", f).step("b2", f)
        .elif_("mid", f).step("m", f)
        .else_()
        .endif()
        .step("after", f)
    )  # fmt: skip
    r = Run(ev, wf)
    assert r.start() == [("C_DECIDE", 0, "big", 0)]
    assert r.ev_(E_CHOSEN, 0, "big", 1) == [("C_SKIP", 0, "b1", 0), ("C_SKIP", 0, "b2", 0),
                                            ("C_RUN", 0, "m", 0)]  # fmt: skip
    assert r.ev_(E_SUCCEEDED, 0, "m") == [("C_DONE", 0, "big", 1), ("C_RUN", 0, "after", 0)]
    # the empty else arm, and no arm at all, pass straight through
    for arm in (2, -1):
        r = Run(ev, wf)
        r.start()
        assert r.ev_(E_CHOSEN, 0, "big", arm)[-2:] == [("C_DONE", 0, "big", arm),
                                                       ("C_RUN", 0, "after", 0)]  # fmt: skip


@pytest.mark.parametrize("ev", TWINS)
def test_parallel_waits_for_all_and_race_for_the_first(ev: ModuleType) -> None:
    r = Run(
        ev, af.Workflow("w").parallel("p", {"x": f, "y": af.Flow().step("y1", f).step("y2", f)})
    )
    assert r.start() == [("C_RUN", 0, "x", 0), ("C_RUN", 0, "y1", 0)]
    assert r.ev_(E_SUCCEEDED, 0, "x") == []
    assert r.ev_(E_SUCCEEDED, 0, "y1") == [("C_RUN", 0, "y2", 0)]
    assert r.ev_(E_SUCCEEDED, 0, "y2") == [("C_DONE", 0, "p", 2)]
    assert r.outcome == R_COMPLETED

    r = Run(ev, af.Workflow("w").race("r", {"x": f, "y": af.Flow().step("y1", f).step("y2", f)}))
    r.start()
    assert r.ev_(E_SUCCEEDED, 0, "y1") == [("C_RUN", 0, "y2", 0)]
    # x wins: y2 (running) is aborted, the race is done with winner 0
    assert r.ev_(E_SUCCEEDED, 0, "x") == [("C_ABORT", 0, "y2", 0), ("C_DONE", 0, "r", 0)]
    assert r.outcome == R_COMPLETED


@pytest.mark.parametrize("ev", TWINS)
def test_race_survives_a_failed_arm_and_fails_when_all_do(ev: ModuleType) -> None:
    wf = af.Workflow("w").race("r", {"x": f, "y": f})
    r = Run(ev, wf)
    r.start()
    assert r.ev_(E_FAILED, 0, "x") == []
    assert r.ev_(E_SUCCEEDED, 0, "y") == [("C_DONE", 0, "r", 1)]
    r = Run(ev, wf)
    r.start()
    r.ev_(E_FAILED, 0, "x")
    assert r.ev_(E_FAILED, 0, "y") == [("C_NODE_FAILED", 0, "r", 0)]
    assert r.outcome == R_FAILED


@pytest.mark.parametrize("ev", TWINS)
def test_for_each_respects_concurrency_and_reuses_frames(ev: ModuleType) -> None:
    r = Run(ev, af.Workflow("w").for_each("items", f, g, concurrency=2).step("after", f))
    assert r.start() == [("C_EXPAND", 0, "items", 0)]
    assert r.ev_(E_ITEMS, 0, "items", 3) == [
        ("C_FRAME", 1, "items", 0), ("C_RUN", 1, "g", 0),
        ("C_FRAME", 2, "items", 1), ("C_RUN", 2, "g", 0),
    ]  # fmt: skip
    # item 1 finishes first; its frame is reused for item 2
    assert r.ev_(E_SUCCEEDED, 2, "g") == [
        ("C_FRAME_END", 2, "items", 2), ("C_FRAME", 2, "items", 2), ("C_RUN", 2, "g", 0)
    ]  # fmt: skip
    assert r.ev_(E_SUCCEEDED, 1, "g") == [("C_FRAME_END", 1, "items", 2)]
    assert r.ev_(E_SUCCEEDED, 2, "g") == [
        ("C_FRAME_END", 2, "items", 2), ("C_DONE", 0, "items", 3), ("C_RUN", 0, "after", 0)
    ]  # fmt: skip
    r = Run(ev, af.Workflow("w").for_each("items", f, g).step("after", f))
    r.start()
    assert r.ev_(E_ITEMS, 0, "items", 0) == [("C_DONE", 0, "items", 0), ("C_RUN", 0, "after", 0)]


@pytest.mark.parametrize("ev", TWINS)
def test_failed_item_cancels_its_siblings(ev: ModuleType) -> None:
    r = Run(ev, af.Workflow("w").for_each("items", f, g, concurrency=3))
    r.start()
    r.ev_(E_ITEMS, 0, "items", 5)
    assert r.ev_(E_FAILED, 2, "g") == [
        ("C_FRAME_END", 2, "items", 3),
        ("C_ABORT", 3, "g", 0), ("C_FRAME_END", 3, "items", 5),
        ("C_ABORT", 1, "g", 0), ("C_FRAME_END", 1, "items", 5),
        ("C_NODE_FAILED", 0, "items", 0),
    ]  # fmt: skip
    assert r.outcome == R_FAILED


@pytest.mark.parametrize("ev", TWINS)
def test_while_batch_sleep_subflow_cancel(ev: ModuleType) -> None:
    wf = (
        af.Workflow("w")
        .while_("loop", f, f, max_iterations=5)
        .batch("chunks", f, 10, g)
        .sleep("nap", 1)
        .subflow("child", "other")
        .cancel("stop")
    )
    r = Run(ev, wf)
    assert r.start() == [("C_LOOP", 0, "loop", 0)]
    assert r.ev_(E_LOOP, 0, "loop", 1) == [("C_FRAME", 1, "loop", 0), ("C_RUN", 1, "f", 0)]
    assert r.ev_(E_SUCCEEDED, 1, "f") == [("C_FRAME_END", 1, "loop", 2), ("C_LOOP", 0, "loop", 1)]
    assert r.ev_(E_LOOP, 0, "loop", 0) == [("C_DONE", 0, "loop", 1), ("C_EXPAND", 0, "chunks", 0)]
    cmds = r.ev_(E_ITEMS, 0, "chunks", 2)  # a batch runs one chunk at a time
    assert cmds == [("C_FRAME", 2, "chunks", 0), ("C_RUN", 2, "g", 0)]
    r.ev_(E_SUCCEEDED, 2, "g")
    assert r.ev_(E_SUCCEEDED, 2, "g")[-2:] == [("C_DONE", 0, "chunks", 2), ("C_SLEEP", 0, "nap", 0)]
    assert r.ev_(E_SUCCEEDED, 0, "nap") == [("C_CHILD", 0, "child", 0)]
    assert r.ev_(E_SUCCEEDED, 0, "child") == [("C_CANCEL_RUN", 0, "cancel", 0)]
    assert r.ev_(E_CANCEL, 0, "cancel") == []
    assert r.outcome == R_CANCELLED


@pytest.mark.parametrize("ev", TWINS)
def test_cancelling_the_run_aborts_every_running_leaf(ev: ModuleType) -> None:
    wf = af.Workflow("w").parallel("p", {"x": f, "loop": af.Flow().for_each("items", f, g)})
    r = Run(ev, wf)
    r.start()
    r.ev_(E_ITEMS, 0, "items", 2)
    cmds = r.show(r.ev.advance(r.pp, r.s, E_CANCEL, 0, 0, 0))
    assert sorted(c for c in cmds if c[0] == "C_ABORT") == [
        ("C_ABORT", 0, "x", 0), ("C_ABORT", 1, "g", 0), ("C_ABORT", 2, "g", 0)
    ]  # fmt: skip
    assert r.outcome == R_CANCELLED


@pytest.mark.parametrize("ev", TWINS)
def test_stale_events_are_refused(ev: ModuleType) -> None:
    r = Run(ev, af.Workflow("w").step("a", f).step("b", f))
    r.start()
    with pytest.raises(ValueError, match="not running"):
        r.ev_(E_SUCCEEDED, 0, "b")
    with pytest.raises(ValueError, match="not alive"):
        r.ev_(E_SUCCEEDED, 7, "a")
    with pytest.raises(ValueError, match="unknown event"):
        r.ev_(99, 0, "a")
    r.ev_(E_SUCCEEDED, 0, "a")
    with pytest.raises(ValueError, match="not running"):
        r.ev_(E_SUCCEEDED, 0, "a")


# -- random plans, random events: the twins must agree -----------------------------------------

_ids = itertools.count()


def _block_strategy(depth: int) -> st.SearchStrategy[list[Any]]:
    leaf = st.sampled_from(["step", "action", "sleep", "subflow", "step"])
    if depth >= 3:
        node: st.SearchStrategy[Any] = leaf
    else:
        inner = st.deferred(lambda: _block_strategy(depth + 1))
        node = st.one_of(
            leaf,
            st.tuples(st.just("branch"), st.lists(inner, min_size=1, max_size=3), st.booleans()),
            st.tuples(
                st.sampled_from(["parallel", "race"]),
                st.lists(inner.filter(bool), min_size=1, max_size=3),
            ),
            st.tuples(st.sampled_from(["while", "batch"]), inner.filter(bool)),
            st.tuples(st.just("for_each"), inner.filter(bool), st.integers(1, 3)),
        )
    return st.lists(node, min_size=0 if depth else 1, max_size=3)


def _build(flow: af.Flow, block: list[Any]) -> af.Flow:
    for node in block:
        n = f"n{next(_ids)}"
        if node == "step":
            flow.step(n, f)
        elif node == "action":
            flow.action(n, f)
        elif node == "sleep":
            flow.sleep(n, 1)
        elif node == "subflow":
            flow.subflow(n, "other")
        elif node[0] == "branch":
            arms, has_else = node[1], node[2]
            flow.if_(n, f)
            _build(flow, arms[0])
            for i, arm in enumerate(arms[1:]):
                flow.elif_(f"{n}e{i}", f)
                _build(flow, arm)
            if has_else:
                flow.else_()
            flow.endif()
        elif node[0] in ("parallel", "race"):
            arms = {f"{n}a{i}": _build(af.Flow(), arm) for i, arm in enumerate(node[1])}
            getattr(flow, node[0])(n, arms)
        elif node[0] == "while":
            flow.while_(n, f, _build(af.Flow(), node[1]), max_iterations=3)
        elif node[0] == "batch":
            flow.batch(n, f, 2, _build(af.Flow(), node[1]))
        else:
            flow.for_each(n, f, _build(af.Flow(), node[1]), concurrency=node[2])
    return flow


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structure=_block_strategy(0), data=st.data())
def test_twins_agree(structure: list[Any], data: st.DataObject) -> None:
    if _evaluator_c is None:
        pytest.skip("compiled evaluator not built")
    wf = _build(af.Workflow("w"), structure)
    runs = [Run(_evaluator_py, wf), Run(_evaluator_c, wf)]
    plan = runs[0].plan
    cmds = [r.ev.start(r.pp, r.s) for r in runs]
    assert cmds[0] == cmds[1]
    pending: dict[tuple[int, int], int] = {}  # (frame, node) -> command awaiting an answer

    def absorb(c: list[int]) -> None:
        for i in range(0, len(c), 4):
            op, frame, node = c[i], c[i + 1], c[i + 2]
            if op in (C_RUN, C_DECIDE, C_EXPAND, C_LOOP, C_SLEEP, C_CHILD, C_CANCEL_RUN):
                pending[(frame, node)] = op
            elif op == C_ABORT:
                pending.pop((frame, node), None)
            elif op == C_FRAME_END:
                for key in [k for k in pending if k[0] == frame]:
                    del pending[key]
            else:
                assert op in (C_FRAME, C_DONE, C_NODE_FAILED, C_SKIP), op

    absorb(cmds[0])
    for _ in range(60):
        live = sorted(
            k for k in pending if runs[0].ev.status(runs[0].pp, runs[0].s, *k) == S_RUNNING
        )
        for k in list(pending):
            if k not in live:
                del pending[k]
        if not live or runs[0].ev.outcome(runs[0].s) != R_ACTIVE:
            break
        frame, node = data.draw(st.sampled_from(live))
        op = pending.pop((frame, node))
        if op == C_CANCEL_RUN:
            event, arg = E_CANCEL, 0
        elif op == C_DECIDE:
            arms = plan.arm_start[node + 1] - plan.arm_start[node]
            event, arg = E_CHOSEN, data.draw(st.integers(-1, arms - 1))
        elif op == C_EXPAND:
            event, arg = data.draw(
                st.sampled_from([(E_ITEMS, 0), (E_ITEMS, 1), (E_ITEMS, 3), (E_FAILED, 0)])
            )
        elif op == C_LOOP:
            event, arg = E_LOOP, data.draw(st.integers(0, 1))
        else:
            event, arg = data.draw(
                st.sampled_from([(E_SUCCEEDED, 0), (E_SUCCEEDED, 0), (E_FAILED, 0), (E_SKIPPED, 0)])
            )
        out = [r.ev.advance(r.pp, r.s, event, frame, node, arg) for r in runs]
        assert out[0] == out[1], (event, frame, plan.names[node], arg)
        snaps = [r.ev.snapshot(r.pp, r.s) for r in runs]
        assert snaps[0] == snaps[1]
        absorb(out[0])
    assert runs[0].ev.outcome(runs[0].s) == runs[1].ev.outcome(runs[1].s)


@pytest.mark.parametrize("ev", TWINS)
def test_work_per_item_does_not_grow_with_the_fan_out(ev: ModuleType) -> None:
    """A 100,000-item for_each: each completion touches one frame, and frames are reused."""
    r = Run(ev, af.Workflow("w").for_each("items", f, g, concurrency=4))
    r.start()
    node = r.plan.index["g"]
    first = ev.advance(r.pp, r.s, E_ITEMS, 0, r.plan.index["items"], 100_000)
    running = [first[i + 1] for i in range(0, len(first), 4) if first[i] == C_RUN]
    done = 0
    while running:
        frame = running.pop(0)
        cmds = ev.advance(r.pp, r.s, E_SUCCEEDED, frame, node, 0)
        assert len(cmds) <= 12  # frame end, next frame, its run (or the loop's end)
        running += [cmds[i + 1] for i in range(0, len(cmds), 4) if cmds[i] == C_RUN]
        done += 1
    assert done == 100_000 and r.outcome == R_COMPLETED
    alive = r.ev.snapshot(r.pp, r.s)[1]
    assert len(alive) == 1  # only the workflow's frame is left; 4 item frames were recycled
