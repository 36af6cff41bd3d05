"""Compact step records (store format 5): what is written reads back as it was, and a store
of the previous format (every record in its full shape) reads as that release read it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import actorflow as af
from actorflow._types import StepStatus
from actorflow.errors import StoreCorrupted
from actorflow.runtime.supervision._steps import Leaf, attempt_record
from actorflow.store import _keys as K
from actorflow.store._lmdb import LmdbStore
from actorflow.store._records import load_step
from tests.fixtures import make_store_format4 as format4

FIXTURE = Path(__file__).parent.parent / "fixtures" / "store-format4"
T = 1796418264.2412627
FIELDS = (
    "status", "attempt", "failures", "dispatched_at", "started_at", "ended_at",
    "next_retry_at", "error", "handling", "recovered", "child", "wake_at", "wait",
    "scheduled_at", "details", "kind", "input",
)  # fmt: skip


def _leaf(path: str = "items[3]/price", kind: str = "step") -> Leaf:
    return Leaf("r1", 0, 2, path, kind)


def _succeeded(leaf: Leaf, pid: int = 4242) -> Leaf:
    leaf.status = StepStatus.SUCCEEDED
    leaf.attempt = 1
    leaf.dispatched_at, leaf.started_at, leaf.ended_at = T, T + 0.0015907, T + 0.0016011
    leaf.scheduled_at = T  # the first dispatch: not written, read back from dispatched_at
    leaf.attempts.append(attempt_record(1, "succeeded", None, leaf.started_at, leaf.ended_at))
    leaf.attempts[0]["pid"] = pid
    leaf.inline = orjson.Fragment(b'{"price":3}')
    return leaf


def _retried() -> Leaf:
    leaf = _leaf()
    leaf.status = StepStatus.RETRYING
    leaf.attempt, leaf.failures = 2, 1
    leaf.dispatched_at, leaf.started_at = T, T + 0.5
    leaf.scheduled_at = T - 3.0  # its first attempt's dispatch, before this one's: written
    leaf.next_retry_at = T + 2.0
    leaf.error = {"kind": "error", "type": "builtins.OSError", "message": "refused"}
    leaf.attempts.append(attempt_record(1, "failed", "error", T, T + 0.5, "OSError: refused", 7))
    return leaf


def _others() -> list[Leaf]:
    running = _leaf()
    running.status, running.attempt, running.dispatched_at = StepStatus.RUNNING, 1, T
    running.scheduled_at = T
    sleeping = _leaf("nap", "sleep")
    sleeping.status, sleeping.wake_at, sleeping.dispatched_at = StepStatus.RUNNING, T + 60, T
    sleeping.scheduled_at = T
    recovered = _succeeded(_leaf())
    recovered.recovered, recovered.attempts[0]["status"] = True, "recovered"
    waiting = _leaf("gate", "wait_for_event")
    waiting.status, waiting.wait = StepStatus.RUNNING, {"event": "go", "key": "k"}
    beating = _leaf()
    beating.status, beating.attempt, beating.details = StepStatus.RUNNING, 1, b"J[1,2]"
    beating.input = '{"sku":"a"}'  # what it was given, rendered at its dispatch
    second = _succeeded(_leaf())
    second.attempt = 2  # succeeded on a second attempt: its attempts are written out
    second.attempts.insert(0, attempt_record(1, "interrupted", None, T, T + 0.1))
    slept = _leaf("z", "sleep")  # a code workflow's finished sleep: one attempt, no process
    slept.status, slept.attempt = StepStatus.SUCCEEDED, 1
    slept.dispatched_at = slept.started_at = slept.scheduled_at = T
    slept.ended_at = T + 5
    slept.attempts.append(attempt_record(1, "succeeded", None, T, T + 5))
    return [running, sleeping, recovered, waiting, beating, second, slept]


def _same(leaf: Leaf, back: Leaf) -> None:
    for name in FIELDS:
        a, b = getattr(leaf, name), getattr(back, name)
        if isinstance(a, float):
            assert b == pytest.approx(a, abs=1e-6), name  # times: to the microsecond
        else:
            assert a == b, name
    assert back.path == leaf.path
    assert len(back.attempts) == len(leaf.attempts)
    for mine, theirs in zip(leaf.attempts, back.attempts, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            if isinstance(value, float):
                assert theirs[key] == pytest.approx(value, abs=1e-6), key
            else:
                assert theirs[key] == value, key
    assert (leaf.inline is None) == (back.inline is None)


@pytest.mark.parametrize("case", range(9))
def test_a_record_reads_back_as_the_leaf_that_wrote_it(case: int) -> None:
    leaf = [_succeeded(_leaf()), _retried(), *_others()][case]
    rec = load_step(leaf.record(), leaf.path, "step")
    assert rec["path"] == leaf.path and rec["name"] == leaf.path.rpartition("/")[2]
    _same(leaf, Leaf.from_record("r1", rec, 0, leaf.node))


def test_a_trivial_items_record_is_about_seventy_bytes() -> None:
    raw = _succeeded(_leaf()).record()
    assert len(raw) <= 80, raw  # the full shape took ~420
    rec = load_step(raw, "items[3]/price", "step")
    assert rec["attempts"] == [
        {
            "attempt": 1,
            "status": "succeeded",
            "kind": None,
            "started_at": rec["started_at"],
            "ended_at": rec["ended_at"],
            "error": None,
            "pid": 4242,
        }
    ]
    # Times rounded to the microsecond do not drift apart: the end is written from the
    # start as written.
    assert rec["ended_at"] - rec["started_at"] == pytest.approx(0.0000104, abs=1e-6)


def test_a_malformed_compact_record_is_named() -> None:
    with pytest.raises(StoreCorrupted, match="step 'x' of run r1"):
        load_step(b'{"node":1,"status":"succeeded","at":[1,"soon"]}', "x", "step 'x' of run r1")
    with pytest.raises(StoreCorrupted, match="step 'y'"):
        load_step(b'{"node":1,"status":"succeeded","attempts":7}', "y", "step 'y'")


def _plain(details: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(details), sort_keys=True, default=str))


def test_a_store_of_the_previous_format_reads_as_that_release_read_it(
    tmp_path: Path, make_engine: Callable[..., af.Engine]
) -> None:
    """The fixture was written by the release before compact records (format 4): every
    finished run inspects as that release inspected it; the waiting one goes on, and what it
    records now is compact."""
    shutil.copytree(FIXTURE, tmp_path / "old")
    then = json.loads((tmp_path / "old" / "inspect.json").read_text())
    engine = make_engine(data_dir=tmp_path / "old" / "store", workers=1)
    format4.define(engine)
    with engine:
        for what, run_id in then["runs"].items():
            if what != "gate":
                got = _plain(engine.inspect(run_id))
                # Fields added since (search attributes, memo) read as runs without them;
                # so do steps' inputs (recorded since): none.
                assert got.pop("search_attributes") == {} and got.pop("memo") is None
                assert [s.pop("input") for s in got["steps"]] == [None] * len(got["steps"])
                # user_traceback (added since): a record without it reads its full traceback.
                for err in [got["error"], *(s["error"] for s in got["steps"])]:
                    if err is not None:
                        assert err.pop("user_traceback") == err["traceback"], what
                assert got == then["inspect"][what], what
        flaky = engine.inspect(then["runs"]["flaky"]).step("call")
        assert [a.status for a in flaky.attempts] == ["failed", "failed", "succeeded"]
        assert engine.run(then["runs"]["fan"]).result(timeout=30) == [2 * i for i in range(12)]
        gate = engine.run(then["runs"]["gate"])
        engine.publish("go", None, key="k")
        assert gate.result(timeout=60) == "b"
        step_b = gate.inspect().step("b")
        assert step_b.status == "succeeded" and [a.status for a in step_b.attempts] == ["succeeded"]
        assert step_b.attempts[0].pid is not None
        # Dispatched by this release: its input (the event's payload, its ctx.last) is
        # recorded; the step of the old release beside it has none.
        assert (step_b.input, gate.inspect().step("a").input) == ("null", None)
    store = LmdbStore(tmp_path / "old" / "store", read_only=True)
    try:
        assert store.get(K.META, K.FORMAT_KEY) == str(K.FORMAT_VERSION).encode()
        old = store.get(K.STEPS, K.step_key(then["runs"]["gate"], "a"))
        new = store.get(K.STEPS, K.step_key(then["runs"]["gate"], "b"))
        assert old is not None and b'"path":"a"' in old  # as the old release wrote it
        assert new is not None and b'"path"' not in new  # compact
    finally:
        store.close()
