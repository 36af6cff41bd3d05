"""The engine process of the chaos test: a mixed workload, driven from inside.

Usage: python -m tests.chaos.workload DATA_DIR LOG GENERATION TOTAL MODE

MODE ``run`` triggers (idempotently) the runs ``k0`` .. ``k<TOTAL-1>`` not yet acknowledged,
answers approvals, events and signals, and never ends: the driver SIGKILLs it. ``settle``
does the same, then waits until every acknowledged run is final and prints ``SETTLED``.

Every acknowledgement is written to the outside log only after the call returned:

- ``T gen key run_id``: a trigger returned (the run is durable);
- ``P gen key``: an event was published; ``G gen key``: a signal was sent;
  ``A gen run_id``: an approval was resumed;
- ``S gen run_id step attempt outcome``: a step attempt's outcome is durable (lifecycle);
- ``F gen run_id status``: a run's final status is durable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import actorflow as af
from tests.chaos import steps as cs

#: The workflow of run ``k<i>``: KINDS[i % len(KINDS)].
KINDS = ("chain", "fan", "parent", "approve", "event", "coded")
RETRY = af.Retry(attempts=3, backoff="fixed", delay="50ms")
#: Attempts each step may use (the checker's bound); steps not named here: the default.
ATTEMPTS = {"flaky": 3}
DEFAULT_ATTEMPTS = af.Retry().attempts


def build(data_dir: str) -> af.Engine:
    engine = af.Engine(data_dir=data_dir, workers=2, sweep_interval=0.5)
    engine.define("chain").step("a", cs.work).step("flaky", cs.flaky, retry=RETRY).step(
        "b", cs.work
    ).step("summary", cs.summary)
    engine.define("fan").for_each("sq", cs.items, cs.item, concurrency=4).sleep(
        "nap", "300ms"
    ).step("c", cs.work).step("summary", cs.summary)
    engine.define("child").step("x", cs.work).step("y", cs.work)
    engine.define("parent").step("a", cs.work).subflow("kid", "child", cs.child_input).step(
        "summary", cs.summary
    )
    engine.define("approve").step("a", cs.work).human_in_the_loop("ok", timeout="1h").step(
        "summary", cs.summary
    )
    engine.define("event").step("a", cs.work).wait_for_event(
        "paid", key=lambda ctx: ctx.payload["key"], timeout="1h"
    ).step("summary", cs.summary)

    @engine.workflow("coded")
    async def coded(ctx: af.WorkflowContext, log: str, key: str) -> dict[str, Any]:
        values = [await ctx.step(f"s{i}", cs.code_step, log, i) for i in range(4)]
        await ctx.sleep("nap", "300ms")
        signal = await ctx.wait_for_signal("go", timeout="1h")
        kid = await ctx.child("kid", "child", {"log": log, "n": 5})
        return {"key": key, "values": values, "signal": signal, "kid": kid}

    return engine


READS = {
    "chain": ["a", "flaky", "b"],
    "fan": ["sq", "c"],
    "parent": ["a", "kid"],
    "approve": ["a", "ok"],
    "event": ["a", "paid"],
}


def arguments(kind: str, log: str, key: str) -> tuple[Any, ...]:
    if kind == "coded":
        return (log, key)
    return ({"log": log, "key": key, "read": READS[kind]},)


def expected(kind: str, key: str) -> Any:
    """The output every run of ``kind`` must end with: exactly-once results show here."""
    if kind == "chain":
        return {"key": key, "steps": {"a": 1, "flaky": 100, "b": 101}}
    if kind == "fan":
        return {"key": key, "steps": {"sq": [i * i for i in range(8)], "c": 1}}
    if kind == "parent":
        return {"key": key, "steps": {"a": 1, "kid": 2}}
    if kind == "approve":
        return {"key": key, "steps": {"a": 1, "ok": {"by": "chaos"}}}
    if kind == "event":
        return {"key": key, "steps": {"a": 1, "paid": {"key": key}}}
    return {"key": key, "values": [0, 1, 2, 3], "signal": {"key": key}, "kid": 2}


def read_log(log: str) -> list[list[str]]:
    with open(log) as f:
        return [line.split() for line in f if line.strip()]


def main(data_dir: str, log: str, gen: int, total: int, mode: str) -> None:
    os.environ["CHAOS_GEN"] = str(gen)  # the workers inherit it: their X lines carry it
    lines = read_log(log) if os.path.exists(log) else []
    acked = {p[2]: p[3] for p in lines if p[0] == "T"}
    published = {p[2] for p in lines if p[0] == "P"}
    signalled = {p[2] for p in lines if p[0] == "G"}
    engine = build(data_dir)

    def on_event(event: Any) -> None:
        if isinstance(event, af.StepAttempted):
            cs.note(log, f"S {gen} {event.run_id} {event.step} {event.attempt} {event.outcome}")
        elif isinstance(event, af.RunFinished):
            cs.note(log, f"F {gen} {event.run_id} {event.status.value}")

    engine.subscribe(on_event)
    stop = threading.Event()
    lock = threading.Lock()

    def helper() -> None:
        while not stop.is_set():
            try:
                for approval in engine.approvals():
                    try:
                        engine.resume(approval["token"], {"by": "chaos"})
                    except af.ApprovalError:
                        continue
                    cs.note(log, f"A {gen} {approval['run_id']}")
                with lock:
                    todo = list(acked.items())
                for key, run_id in todo:
                    kind = KINDS[int(key[1:]) % len(KINDS)]
                    if kind == "event" and key not in published:
                        engine.publish("paid", {"key": key}, key=key)
                        published.add(key)
                        cs.note(log, f"P {gen} {key}")
                    elif kind == "coded" and key not in signalled:
                        engine.run(run_id).signal("go", {"key": key}, idempotency_key=key)
                        signalled.add(key)
                        cs.note(log, f"G {gen} {key}")
            except af.EngineNotRunning:
                return
            time.sleep(0.02)

    with engine:
        thread = threading.Thread(target=helper, daemon=True)
        thread.start()
        # Re-trigger the last few acknowledged keys: the same key must give the same run.
        start = max(0, len(acked) - 3)
        for i in range(start, total):
            key = f"k{i}"
            kind = KINDS[i % len(KINDS)]
            handle = engine.trigger(kind, *arguments(kind, log, key), idempotency_key=key)
            cs.note(log, f"T {gen} {key} {handle.id}")
            with lock:
                if acked.setdefault(key, handle.id) != handle.id:
                    cs.note(log, f"DUP {gen} {key} {acked[key]} {handle.id}")
            time.sleep(0.01)
        if mode != "settle":
            time.sleep(3600)
        for run_id in list(acked.values()):
            try:
                engine.run(run_id).result(timeout=300)
            except af.RunError:
                pass  # the checker reads every run's outcome from the store
        stop.set()
        thread.join()
    print("SETTLED", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
