"""The engine end to end: real worker processes, real LMDB."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from tests import steps
from tests.conftest import executions, process_gone, wait_until


def test_linear_run_and_context(engine: af.Engine) -> None:
    engine.define("ctx").step("first", steps.first).action("side", steps.noop).step(
        "view", steps.context_view
    )
    with engine:
        run = engine.trigger("ctx", {"value": 4})
        out = run.result(timeout=30)
        assert run.status() == af.RunStatus.COMPLETED
    assert out["run_id"] == run.id
    assert out["workflow_id"] == "ctx" and out["step"] == "view" and out["attempt"] == 1
    assert out["idempotency_key"] == f"{run.id}:view"
    assert out["last"] == {"value": 40}  # the action is passed over
    assert out["first"] == {"value": 40}


def test_payload_and_outputs_keep_their_types(engine: af.Engine) -> None:
    engine.define("echo").step("echo", steps.echo_payload)
    with engine:
        payload = {"t": (1, 2), "b": b"\x00bytes", 3: {4.5}}
        assert engine.trigger("echo", payload).result(timeout=30) == payload
        assert engine.trigger("echo").result(timeout=30) is None


def test_steps_by_value_lambdas_and_closures(engine: af.Engine) -> None:
    factor = 7
    engine.define("closure").step("a", lambda ctx: ctx.payload * factor).step(
        "b", lambda ctx: ctx.last + 1
    )
    with engine:
        assert engine.trigger("closure", 6).result(timeout=30) == 43


def test_async_step_functions_run(engine: af.Engine) -> None:
    async def double(ctx: af.StepContext) -> int:
        await asyncio.sleep(0.01)
        return int(ctx.payload) * 2

    engine.define("async").step("double", double)
    with engine:
        assert engine.trigger("async", 21).result(timeout=30) == 42


def test_inspect_and_runs(engine: af.Engine) -> None:
    engine.define("a").step("one", steps.add_one).step("two", steps.add_one)
    engine.define("b").step("boom", steps.fail_always)
    with engine:
        ok = engine.trigger("a", {"n": 1})
        bad = engine.trigger("b", {})
        assert ok.result(timeout=30) == 3
        with pytest.raises(af.StepFailed):
            bad.result(timeout=30)
        details = engine.inspect(ok.id)
        assert details.status == af.RunStatus.COMPLETED and details.workflow_id == "a"
        assert [s.name for s in details.steps] == ["one", "two"]
        assert all(s.status == af.StepStatus.SUCCEEDED and s.attempt == 1 for s in details.steps)
        assert details.step("two").output == "3"
        assert details.result == "3"
        assert details.steps[0].duration is not None and details.steps[0].duration >= 0
        assert details.steps[0].attempts[0].pid
        failed = engine.inspect(bad.id)
        assert failed.status == af.RunStatus.FAILED
        assert failed.error is not None and failed.error.type == "tests.steps.Boom"
        assert "boom on attempt 1" in failed.error.message
        assert "fail_always" in failed.error.traceback
        assert failed.step("boom").status == af.StepStatus.FAILED
        assert [r.id for r in engine.runs()] == [bad.id, ok.id]  # newest first
        assert [r.id for r in engine.runs(workflow="a")] == [ok.id]
        assert [r.id for r in engine.runs(status="failed")] == [bad.id]
        assert [r.id for r in engine.runs(status=af.RunStatus.COMPLETED)] == [ok.id]
        assert len(engine.runs(limit=1)) == 1
        with pytest.raises(af.ClientError, match="status: expected one of"):
            engine.runs(status="done")
    # after stop: read-only views of the same store
    assert engine.inspect(ok.id).status == af.RunStatus.COMPLETED
    assert engine.run(ok.id).result() == 3


def test_failure_carries_remote_traceback(engine: af.Engine) -> None:
    engine.define("fail").step("boom", steps.fail_always)
    engine.define("weird").step("weird", steps.fail_unpicklable)
    with engine:
        with pytest.raises(af.StepFailed) as info:
            engine.trigger("fail").result(timeout=30)
        err = info.value
        assert err.step == "boom" and err.attempt == 1
        assert isinstance(err.__cause__, steps.Boom)
        assert isinstance(err.__cause__.__cause__, af.RemoteTraceback)
        assert "fail_always" in str(err.__cause__.__cause__)
        with pytest.raises(af.StepFailed) as info2:
            engine.trigger("weird").result(timeout=30)
        cause = info2.value.__cause__
        assert isinstance(cause, af.RemoteError)  # could not be unpickled: a stand-in
        assert "tests.steps.Unpicklable" in str(cause) and "1-2" in str(cause)


def test_idempotency_key_means_one_run(engine: af.Engine, counter_file: Path) -> None:
    engine.define("once").step("one", steps.add_one)
    with engine:
        handles: list[af.RunHandle] = []

        def trigger() -> None:
            handles.append(
                engine.trigger(
                    "once", {"n": 1, "log": str(counter_file)}, idempotency_key="order-42"
                )
            )

        threads = [threading.Thread(target=trigger) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({h.id for h in handles}) == 1
        assert handles[0].result(timeout=30) == 2
        again = engine.trigger("once", {"n": 100}, idempotency_key="order-42")
        assert again.id == handles[0].id and again.result(timeout=30) == 2
        other = engine.trigger("once", {"n": 5, "log": str(counter_file)}, idempotency_key="x")
        assert other.id != again.id and other.result(timeout=30) == 6
        assert len(engine.runs(workflow="once")) == 2
    assert executions(counter_file) == {"one": 2}
    # the key survives a restart
    with engine:
        assert engine.trigger("once", {"n": 9}, idempotency_key="order-42").id == handles[0].id


def test_awaitable_twins(engine: af.Engine) -> None:
    engine.define("inc").step("one", steps.add_one)

    async def main() -> list[int]:
        handles = await asyncio.gather(*(engine.trigger_async("inc", {"n": i}) for i in range(20)))
        return list(await asyncio.gather(*(h.result_async(timeout=30) for h in handles)))

    with engine:
        assert asyncio.run(main()) == [i + 1 for i in range(20)]


def test_result_timeout_and_cancel(engine: af.Engine, counter_file: Path) -> None:
    engine.define("slow").step("slow", steps.sleep_forever).step("after", steps.add_one)
    with engine:
        run = engine.trigger("slow", {"log": str(counter_file)})
        with pytest.raises(af.ResultTimeout):
            run.result(timeout=0.2)
        wait_until(lambda: executions(counter_file).get("slow") == 1)
        assert run.cancel("no longer needed") is True
        assert run.cancel("again") is False
        with pytest.raises(af.RunCancelled, match="no longer needed"):
            run.result(timeout=10)
        details = run.inspect()
        assert details.status == af.RunStatus.CANCELLED
        assert details.cancel_reason == "no longer needed"
        assert details.step("slow").status == af.StepStatus.CANCELLED
        assert details.step("after").status == af.StepStatus.PENDING
        # The worker running it was really stopped (sleep_forever never returns: only a
        # kill ends its process), and a fresh one took its place.
        pid = int(counter_file.read_text().split()[2])
        wait_until(lambda: process_gone(pid))
        engine.define("quick").step("one", steps.add_one)
        assert engine.trigger("quick", {"n": 1}).result(timeout=30) == 2
        wait_until(lambda: engine.statistics()["pool"]["workers"] == 2)


def test_async_cancel(engine: af.Engine) -> None:
    engine.define("slow").step("slow", steps.sleep_forever)

    async def main() -> bool:
        run = await engine.trigger_async("slow", {})
        return await run.cancel_async("stop")

    with engine:
        assert asyncio.run(main()) is True


def test_workflow_timeout_kills_the_run(engine: af.Engine, counter_file: Path) -> None:
    engine.define("bounded", timeout="300ms").step("slow", steps.sleep_forever)
    with engine:
        run = engine.trigger("bounded", {"log": str(counter_file)})
        with pytest.raises(af.RunTimeout):
            run.result(timeout=30)
        assert run.inspect().step("slow").status == af.StepStatus.CANCELLED
        pid = int(counter_file.read_text().split()[2])
        wait_until(lambda: process_gone(pid))  # the step's worker was killed with the run


def test_concurrency_limit_queues_runs(engine: af.Engine, counter_file: Path) -> None:
    engine.define("limited", concurrency=1).step("slow", steps.slow)
    with engine:
        runs = [
            engine.trigger("limited", {"sleep": 0.2, "log": str(counter_file)}) for _ in range(3)
        ]
        assert runs[1].status() == af.RunStatus.QUEUED
        assert [r.result(timeout=30) for r in runs] == ["slow done"] * 3
        ends = [engine.inspect(r.id) for r in runs]
        # one at a time: each started after the previous one ended
        for before, after in itertools.pairwise(ends):
            assert after.steps[0].started_at >= before.steps[0].ended_at  # type: ignore[operator]


def test_cancel_a_queued_run(engine: af.Engine) -> None:
    engine.define("limited", concurrency=1).step("slow", steps.slow)
    with engine:
        first = engine.trigger("limited", {"sleep": 0.3})
        queued = engine.trigger("limited", {"sleep": 0.3})
        third = engine.trigger("limited", {"sleep": 0.01})
        assert queued.cancel("changed my mind")
        assert first.result(timeout=30) == "slow done"
        assert third.result(timeout=30) == "slow done"
        with pytest.raises(af.RunCancelled):
            queued.result(timeout=5)


def test_step_logs_reach_the_engine(engine: af.Engine, caplog: pytest.LogCaptureFixture) -> None:
    engine.define("log").step("talk", steps.logs)
    with caplog.at_level(logging.INFO, logger="actorflow.step"), engine:
        run = engine.trigger("log")
        assert run.result(timeout=30) == "logged"
    records = [r for r in caplog.records if r.name == "actorflow.step"]
    assert records and records[0].getMessage() == "hello from talk"
    assert records[0].run_id == run.id and records[0].step == "talk"  # type: ignore[attr-defined]


def test_define_after_start(engine: af.Engine) -> None:
    with engine:
        engine.define("late").step("one", steps.add_one)
        assert engine.trigger("late", {"n": 1}).result(timeout=30) == 2
        assert engine.definition("late")["nodes"][0]["name"] == "one"


def test_memory_store_engine(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(store="memory")
    engine.define("m").step("one", steps.add_one)
    with engine:
        run = engine.trigger("m", {"n": 41})
        assert run.result(timeout=30) == 42
    assert engine.inspect(run.id).status == af.RunStatus.COMPLETED


def test_clear_errors_for_bad_calls(engine: af.Engine) -> None:
    engine.define("ok").step("one", steps.add_one)
    with pytest.raises(af.EngineNotRunning, match="not running"):
        engine.trigger("ok", {"n": 1})
    with pytest.raises(af.DefinitionError, match="already defined"):
        engine.define("ok")
    with engine:
        with pytest.raises(af.WorkflowNotFound, match="no workflow 'nope'; defined: ok"):
            engine.trigger("nope", {})
        with pytest.raises(af.InvalidPayload, match="payload: cannot be stored"):
            engine.trigger("ok", {"lock": threading.Lock()})
        with pytest.raises(af.RunNotFound):
            engine.inspect("0000")
        with pytest.raises(af.RunNotFound):
            engine.run("missing")
        with pytest.raises(af.ClientError, match="idempotency_key"):
            engine.trigger("ok", {"n": 1}, idempotency_key="")
        assert engine.runs() == []  # nothing was stored by the failed calls


def test_definition_errors_stop_start(engine: af.Engine) -> None:
    engine.define("bad").step("a", steps.noop).step("a", steps.noop)
    with pytest.raises(af.DefinitionError, match="duplicate name"):
        engine.start()
    assert not engine.running


def test_result_without_a_running_engine(engine: af.Engine) -> None:
    engine.define("slow").step("slow", steps.sleep_forever)
    engine.start()
    run = engine.trigger("slow", {})
    engine.stop(drain=False)  # kill the step: it is retried when an engine starts again
    with pytest.raises(af.EngineNotRunning, match="no engine is running"):
        run.result(timeout=1)


def test_trigger_many(engine: af.Engine) -> None:
    engine.define("inc").step("one", steps.add_one)
    with engine:
        handles = engine.trigger_many("inc", [{"n": i} for i in range(50)])
        assert [h.result(timeout=30) for h in handles] == [i + 1 for i in range(50)]
        keyed = engine.trigger_many(
            "inc", [{"n": 1}, {"n": 2}, {"n": 3}], idempotency_keys=["a", None, "a"]
        )
        assert keyed[0].id == keyed[2].id != keyed[1].id
        assert [h.result(timeout=30) for h in keyed] == [2, 3, 2]
        before = len(engine.runs(limit=None))
        with pytest.raises(af.InvalidPayload, match=r"payloads\[1\]"):
            engine.trigger_many("inc", [{"n": 1}, threading.Lock()])
        with pytest.raises(af.ClientError, match="idempotency_keys"):
            engine.trigger_many("inc", [{"n": 1}], idempotency_keys=[])
        assert len(engine.runs(limit=None)) == before  # nothing was started


def test_corrupted_store_is_refused_and_left_intact(
    make_engine: Callable[..., af.Engine], data_dir: Path
) -> None:
    engine = make_engine()
    engine.define("w").step("one", steps.add_one)
    with engine:
        engine.trigger("w", {"n": 1}).result(timeout=30)
    data = data_dir / "data.mdb"
    original = data.read_bytes()
    data.write_bytes(b"\x00garbage" * 4096)
    broken = make_engine()
    broken.define("w").step("one", steps.add_one)
    with pytest.raises(af.StoreCorrupted, match="not a valid LMDB store"):
        broken.start()
    assert not broken.running
    assert data.read_bytes() == b"\x00garbage" * 4096  # untouched: restore from backup
    data.write_bytes(original)  # restored, everything is still there
    again = make_engine()
    again.define("w").step("one", steps.add_one)
    with again:
        assert again.runs()[0].status == af.RunStatus.COMPLETED


def test_second_engine_on_the_same_store_is_refused(make_engine: Callable[..., af.Engine]) -> None:
    first = make_engine()
    first.define("w").step("one", steps.add_one)
    second = make_engine()
    second.define("w").step("one", steps.add_one)
    with first:
        with pytest.raises(af.StoreError, match="in use by another engine"):
            second.start()
        assert first.trigger("w", {"n": 1}).result(timeout=30) == 2


def test_newer_store_format_is_refused(
    make_engine: Callable[..., af.Engine], data_dir: Path
) -> None:
    from actorflow.store import LmdbStore
    from actorflow.store import _keys as K

    store = LmdbStore(data_dir)
    store.write([(K.META, K.FORMAT_KEY, b"99")])
    store.close()
    engine = make_engine()
    engine.define("w").step("one", steps.add_one)
    with pytest.raises(af.StoreError, match="format 99 is newer"):
        engine.start()


def test_store_failure_halts_the_engine_cleanly(make_engine: Callable[..., af.Engine]) -> None:
    from actorflow.store import MemoryStore

    class DiskFull(MemoryStore):
        fail = False

        def write(self, ops):  # type: ignore[no-untyped-def]
            if self.fail:
                raise af.StoreError("disk full")
            super().write(ops)

    store = DiskFull()
    engine = make_engine(store=store)
    engine.define("slow").step("slow", steps.slow)
    with engine:
        run = engine.trigger("slow", {"sleep": 0.3})
        store.fail = True
        with pytest.raises(af.StoreError, match="disk full"):
            run.result(timeout=30)
        with pytest.raises(af.StoreError, match="halted"):
            engine.trigger("slow", {})
    store.fail = False
    assert engine.inspect(run.id).status == af.RunStatus.RUNNING  # nothing half-written


def test_drain_finishes_in_flight_steps_and_recovery_continues(
    make_engine: Callable[..., af.Engine], counter_file: Path
) -> None:
    engine = make_engine()
    engine.define("two").step("slow", steps.slow).step("after", steps.shout)
    engine.start()
    run = engine.trigger("two", {"sleep": 0.5, "log": str(counter_file), "n": 0})
    wait_until(lambda: executions(counter_file).get("slow") == 1)
    engine.stop(drain=True, timeout=30)
    details = engine.inspect(run.id)
    assert details.step("slow").status == af.StepStatus.SUCCEEDED  # finished and recorded
    assert details.status == af.RunStatus.RUNNING
    assert executions(counter_file) == {"slow": 1}  # "after" was not started
    again = make_engine()
    again.define("two").step("slow", steps.slow).step("after", steps.shout)
    with again:
        assert again.run(run.id).result(timeout=30) == "SLOW DONE"
        # attempt 1 of "after" was recorded but never sent (the engine was draining): that
        # was no attempt, so it ran after the restart as attempt 1, with nothing interrupted
        after = again.inspect(run.id).step("after")
        assert [(a.attempt, a.status) for a in after.attempts] == [(1, "succeeded")]
    assert executions(counter_file) == {"slow": 1, "after": 1}


def test_spawn_start_method(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(start_method="spawn", workers=1)
    engine.define("w").step("one", steps.add_one).step("two", lambda ctx: ctx.last * 10)
    with engine:
        assert engine.trigger("w", {"n": 1}).result(timeout=60) == 20
