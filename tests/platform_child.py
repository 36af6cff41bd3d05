"""An engine in its own process whose workers' pipes outlive it, for tests/test_platform.py.

Usage: python -m tests.platform_child DATA_DIR OUT START_METHOD

Starts an engine with one worker, then forks a process that only sleeps (as a child a user's
code forked in the engine's process would): it keeps the engine's end of every worker pipe
open, so a worker sees no hang-up when the engine dies. Prints ``HOLDER <pid>``, runs a step
that writes its worker's pid to OUT and sleeps, prints ``WORKER <pid>`` and waits for the
parent to SIGKILL it.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import actorflow as af


def hang(ctx: Any) -> None:
    """Note this worker's pid, then sleep for longer than any test waits."""
    Path(ctx.payload["out"]).write_text(str(os.getpid()))
    time.sleep(600)


def main(data_dir: str, out: str, start_method: str) -> None:
    engine = af.Engine(data_dir=data_dir, workers=1, start_method=start_method)  # type: ignore[arg-type]
    engine.define("hang").step("hang", hang, timeout=3600)
    with engine:
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        holder = os.fork()
        if holder == 0:
            time.sleep(300)  # touches nothing of the engine: it only keeps the descriptors
            os._exit(0)
        print("HOLDER", holder, flush=True)
        engine.trigger("hang", {"out": out})
        while not Path(out).exists() or not Path(out).read_text():
            time.sleep(0.05)
        print("WORKER", Path(out).read_text(), flush=True)
        time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
