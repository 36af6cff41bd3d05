"""An engine in its own process, for crash tests: the parent SIGKILLs it and starts it again.

Usage: python -m tests.crash_child DATA_DIR LOG MODE [ARGS...]

Modes:
  twenty          trigger (idempotently) a 20-step run and wait for it; print RESULT <value>
  twenty-kill     like twenty, but step s7 SIGKILLs the engine (once: a marker file)
  foreach         a 40-item for_each (2 ms items, sent one by one); item 5 SIGKILLs the engine
  foreach-held    a 200-item for_each of 10 ms items on 2 workers, whose successes are held
                  back to share commits; item 100 SIGKILLs the engine
  foreach-tiny    a 3,000-item for_each of tiny items (sent in chunks); item 1500 SIGKILLs it
  retry           a step fails once then waits on a 2 s durable backoff; print RETRYING when
                  the retry is scheduled, then wait; print RESULT when done
  writes N        tell the store writer N writes one by one; print ACK i as each is durable
  subflow         a step, then a subflow whose input(ctx) differs from the run's payload;
                  print RESULT <the child's result> (the parent kills it at a commit point)
  code            a code workflow of 20 steps (idempotent trigger); print RESULT <value>
  code-kill       like code, but step s7 SIGKILLs the engine (once: a marker file)
  code-sleep      a code workflow: 3 steps, a 1 s durable sleep, a signal wait, 3 steps; the
                  parent kills it while it sleeps, restarts it, and signals it
  shm             make (a 50 MB array) -> kill (SIGKILLs the engine once) -> sum; large values
                  are not written to disk before the kill (blob_write_delay=3600); prints
                  RECOVERED <saved> <lost> <swept> after start and RESULT <sum>
  poison KIND     a run whose step SIGKILLs the engine every time (max_interruptions=2),
                  KIND "graph" or "code"; prints RESULT, or FAILED <message> once the engine
                  gives up on the step
  outside PHASE   a run pauses for approval, then waits for an event. Phase "pause": print
                  TOKEN when paused, then wait (the parent SIGKILLs). Phase "publish": resume
                  the token, publish the run's event and one nobody waits for yet, print
                  PUBLISHED once both calls returned, and SIGKILL itself. Phase "finish":
                  print RESULT of the run, then RESULT of a new run that takes the kept event
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import actorflow as af
from tests import steps


def twenty(data_dir: str, log: str, kill: bool) -> None:
    engine = af.Engine(data_dir=data_dir, workers=2)
    wf = engine.define("twenty")
    for i in range(20):
        wf.step(f"s{i}", steps.kill_engine if kill and i == 7 else steps.numbered)
    payload = {"log": log, "engine_pid": os.getpid(), "marker": log + ".marker"}
    with engine:
        run = engine.trigger("twenty", payload, idempotency_key="the-run")
        print("RUN", run.id, flush=True)
        print("RESULT", run.result(timeout=120), flush=True)


def subflow(data_dir: str, log: str) -> None:
    engine = af.Engine(data_dir=data_dir, workers=1)
    engine.define("child").step("echo", steps.echo_payload)
    engine.define("parent").step("first", steps.label).subflow(
        "sub", "child", input=lambda ctx: {"from": "input", "first": ctx.last}
    )
    with engine:
        run = engine.trigger("parent", {"from": "payload"}, idempotency_key="the-run")
        print("RESULT", run.result(timeout=120), flush=True)


def foreach(data_dir: str, log: str) -> None:
    engine = af.Engine(data_dir=data_dir, workers=2)
    engine.define("fan").for_each(
        "items", lambda ctx: list(range(40)), steps.item_crash_engine, concurrency=4
    )
    payload = {"log": log, "engine_pid": os.getpid(), "marker": log + ".marker"}
    with engine:
        run = engine.trigger("fan", payload, idempotency_key="the-fan")
        print("RUN", run.id, flush=True)
        print("RESULT", run.result(timeout=120), flush=True)


def foreach_held(data_dir: str, log: str) -> None:
    engine = af.Engine(data_dir=data_dir, workers=2)
    engine.define("fan").for_each("items", lambda ctx: list(range(200)), steps.item_held_crash)
    payload = {"log": log, "engine_pid": os.getpid(), "marker": log + ".marker"}
    with engine:
        run = engine.trigger("fan", payload, idempotency_key="the-fan")
        print("RUN", run.id, flush=True)
        print("RESULT", run.result(timeout=120) == list(range(200)), flush=True)


def foreach_tiny(data_dir: str, log: str) -> None:
    engine = af.Engine(data_dir=data_dir, workers=2)
    engine.define("warm").for_each("items", lambda ctx: list(range(20)), steps.tiny_logged)
    engine.define("fan").for_each("items", lambda ctx: list(range(3000)), steps.tiny_logged)
    payload = {"log": log, "engine_pid": os.getpid(), "marker": log + ".marker"}
    with engine:
        engine.trigger("warm", {}).result(timeout=60)  # learn the step's cost: chunks follow
        run = engine.trigger("fan", payload, idempotency_key="the-fan")
        print("RUN", run.id, flush=True)
        print("RESULT", run.result(timeout=120) == list(range(3000)), flush=True)


def retry(data_dir: str, log: str) -> None:
    engine = af.Engine(data_dir=data_dir, workers=1)
    engine.define("retry").step(
        "flaky", steps.fail_until, retry=af.Retry(attempts=3, backoff="fixed", delay="2s")
    )
    with engine:
        run = engine.trigger("retry", {"log": log, "succeed_on": 2}, idempotency_key="r")
        print("RUN", run.id, flush=True)
        while run.inspect().step("flaky").status != af.StepStatus.RETRYING:
            if run.status().terminal:
                break
            time.sleep(0.01)
        print("RETRYING", flush=True)
        print("RESULT", run.result(timeout=120), flush=True)


def writes(data_dir: str, n: int) -> None:
    from actorflow.runtime.kernel._messages import Write
    from actorflow.runtime.persistence._writer import StoreWriter
    from actorflow.store import LmdbStore
    from actorflow.store import _keys as K

    store = LmdbStore(data_dir)
    writer = StoreWriter.start(store, 4096, False, lambda exc: None)
    for i in range(n):
        done: Future[None] = Future()
        writer.tell(
            Write(
                [(K.RUNS, f"key{i:06d}".encode(), b"v" * 100)],
                then=(lambda d=done: d.set_result(None),),
            )
        )
        done.result()
        print("ACK", i, flush=True)
    writer.stop()
    store.close()


def _outside_engine(data_dir: str) -> af.Engine:
    engine = af.Engine(data_dir=data_dir, workers=1)
    (
        engine.define("outside")
        .human_in_the_loop("approve", timeout="1h")
        .wait_for_event("settled", key=lambda ctx: ctx.payload["order"], timeout="1h")
        .step("done", steps.outside_result)
    )
    return engine


def outside(data_dir: str, phase: str) -> None:
    engine = _outside_engine(data_dir)
    with engine:
        if phase == "pause":
            engine.trigger("outside", {"order": "A"}, idempotency_key="A")
            while not engine.approvals():
                time.sleep(0.01)
            print("TOKEN", engine.approvals()[0]["token"], flush=True)
            time.sleep(600)
        elif phase == "publish":
            token = engine.approvals()[0]["token"]
            engine.resume(token, {"by": "ada"})
            engine.publish("settled", {"amount": 1}, key="A")
            engine.publish("settled", {"amount": 2}, key="B")  # nobody waits yet: kept
            print("PUBLISHED", flush=True)
            os.kill(os.getpid(), 9)
        else:
            run = engine.trigger("outside", {"order": "A"}, idempotency_key="A")
            print("RESULT", run.result(timeout=60), flush=True)
            second = engine.trigger("outside", {"order": "B"}, idempotency_key="B")
            while not engine.approvals():
                time.sleep(0.01)
            engine.resume(engine.approvals()[0]["token"], {"by": "bob"})
            print("RESULT", second.result(timeout=60), flush=True)


def _code_engine(data_dir: str, log: str, kill: bool) -> af.Engine:
    from tests import code_steps

    engine = af.Engine(data_dir=data_dir, workers=2)
    marker = log + ".marker"
    pid = os.getpid()

    @engine.workflow("code20")
    async def code20(ctx: af.WorkflowContext, log: str) -> int:
        total = 0
        for i in range(20):
            if kill and i == 7:
                total += await ctx.step(
                    f"s{i}", code_steps.kill_engine_once, log, f"s{i}", marker, pid, i
                )
            else:
                total += await ctx.step(f"s{i}", code_steps.logged, log, f"s{i}", i)
        return total

    @engine.workflow("napper")
    async def napper(ctx: af.WorkflowContext, log: str) -> list[Any]:
        got = [await ctx.step(f"a{i}", code_steps.logged, log, f"a{i}", i) for i in range(3)]
        await ctx.sleep("nap", "1s")
        signal_value = await ctx.wait_for_signal("go", timeout="1h")
        got += [await ctx.step(f"b{i}", code_steps.logged, log, f"b{i}", i) for i in range(3)]
        return [got, signal_value, str(ctx.uuid4())]

    return engine


def shm(data_dir: str, log: str) -> None:
    from tests import shm_steps

    engine = af.Engine(data_dir=data_dir, workers=2, blob_write_delay=3600)
    engine.define("big").step("make", shm_steps.make_big).step("kill", steps.kill_engine).step(
        "sum", shm_steps.total
    )
    payload = {"log": log, "engine_pid": os.getpid(), "marker": log + ".marker"}
    with engine:
        print("RECOVERED", *engine._core.blobs.recovered, flush=True)  # type: ignore[union-attr]
        run = engine.trigger("big", payload, idempotency_key="the-run")
        print("RUN", run.id, flush=True)
        print("RESULT", run.result(timeout=120), flush=True)


def code(data_dir: str, log: str, kill: bool) -> None:
    engine = _code_engine(data_dir, log, kill)
    with engine:
        run = engine.trigger("code20", log, idempotency_key="the-run")
        print("RUN", run.id, flush=True)
        print("RESULT", run.result(timeout=120), flush=True)


def code_sleep(data_dir: str, log: str, phase: str) -> None:
    engine = _code_engine(data_dir, log, False)
    with engine:
        run = engine.trigger("napper", log, idempotency_key="nap")
        print("RUN", run.id, flush=True)
        if phase == "start":
            while run.inspect().status != af.RunStatus.RUNNING or not any(
                s.name == "nap" for s in run.inspect().steps
            ):
                time.sleep(0.01)
            print("SLEEPING", flush=True)
            time.sleep(600)
        while not any(s.name == "go" for s in run.inspect().steps):
            time.sleep(0.01)
        run.signal("go", "green")
        print("RESULT", run.result(timeout=60), flush=True)


def poison(data_dir: str, log: str, kind: str) -> None:
    from tests import code_steps

    engine = af.Engine(data_dir=data_dir, workers=1, max_interruptions=2)
    engine.define("poison").step("a", steps.add_one).step("boom", steps.kill_engine_always).step(
        "after", steps.add_one
    )

    @engine.workflow("poison_code")
    async def poison_code(ctx: af.WorkflowContext, log: str) -> str:
        try:
            await ctx.step("boom", code_steps.kill_engine_always, log, "boom")
        except af.StepFailed as exc:
            return f"caught: {exc}"
        return "survived"

    with engine:
        if kind == "graph":
            run = engine.trigger("poison", {"n": 1, "log": log}, idempotency_key="p")
        else:
            run = engine.trigger("poison_code", log, idempotency_key="p")
        try:
            print("RESULT", run.result(timeout=60), flush=True)
        except af.StepFailed as exc:
            print("FAILED", exc, flush=True)


if __name__ == "__main__":
    data_dir, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    Path(log).touch()
    if mode == "twenty":
        twenty(data_dir, log, kill=False)
    elif mode == "twenty-kill":
        twenty(data_dir, log, kill=True)
    elif mode == "foreach":
        foreach(data_dir, log)
    elif mode == "foreach-tiny":
        foreach_tiny(data_dir, log)
    elif mode == "foreach-held":
        foreach_held(data_dir, log)
    elif mode == "retry":
        retry(data_dir, log)
    elif mode == "subflow":
        subflow(data_dir, log)
    elif mode == "writes":
        writes(data_dir, int(sys.argv[4]))
    elif mode == "code":
        code(data_dir, log, kill=False)
    elif mode == "code-kill":
        code(data_dir, log, kill=True)
    elif mode == "code-sleep":
        code_sleep(data_dir, log, sys.argv[4])
    elif mode == "shm":
        shm(data_dir, log)
    elif mode == "poison":
        poison(data_dir, log, sys.argv[4])
    elif mode == "outside":
        outside(data_dir, sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
