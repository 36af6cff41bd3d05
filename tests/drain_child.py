"""An engine that handles SIGTERM like a deployed service (``install_signal_handlers``).

Usage: python -m tests.drain_child DATA_DIR LOG SECONDS DRAIN

Triggers (idempotently) a run of ``slow`` (logs "start", sleeps SECONDS, logs "end") then
``after``; prints RUN <id>, then RESULT <value> if the run finishes before a signal. On
SIGTERM the engine drains for up to DRAIN seconds and the process exits with status 0.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import actorflow as af


def slow(ctx: Any) -> str:
    log, seconds = ctx.payload["log"], ctx.payload["seconds"]
    with open(log, "a") as f:
        f.write(f"start slow {ctx.run.attempt}\n")
    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"end slow {ctx.run.attempt}\n")
    return "slow done"


def after(ctx: Any) -> str:
    with open(ctx.payload["log"], "a") as f:
        f.write(f"start after {ctx.run.attempt}\n")
    return f"{ctx.last}, then after"


def main(data_dir: str, log: str, seconds: float, drain: float) -> None:
    engine = af.Engine(data_dir=data_dir, workers=1, kill_grace=0.2)
    engine.define("deploy").step("slow", slow).step("after", after)
    engine.start()
    engine.install_signal_handlers(drain_timeout=drain)
    run = engine.trigger("deploy", {"log": log, "seconds": seconds}, idempotency_key="d-1")
    print("RUN", run.id, flush=True)
    try:
        print("RESULT", run.result(timeout=120), flush=True)
    finally:
        engine.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
