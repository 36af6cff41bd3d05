"""Step functions for code workflow tests (importable: workers load them by reference).

Code workflows call steps as ``fn(*args)``; each helper appends one line per execution to
the log file it is given, so tests can count real executions across processes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import actorflow as af


def _record(log: str, name: str, extra: str = "") -> None:
    with open(log, "a") as f:
        f.write(f"{name} {os.getpid()} {extra}\n")


def logged(log: str, name: str, value: Any) -> Any:
    """Record the execution; return ``value``."""
    _record(log, name)
    return value


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def fail_until(log: str, name: str, succeed_on: int) -> int:
    """Fail until the ``succeed_on``-th execution (counted in the log)."""
    _record(log, name)
    n = sum(1 for line in Path(log).read_text().splitlines() if line.split()[0] == name)
    if n < succeed_on:
        raise RuntimeError(f"{name}: execution {n} fails")
    return n


def kill_engine_once(log: str, name: str, marker: str, engine_pid: int, value: Any) -> Any:
    """Record; on the first execution ever, SIGKILL the engine mid-step."""
    _record(log, name)
    if not Path(marker).exists():
        Path(marker).write_text("killed")
        os.kill(engine_pid, signal.SIGKILL)
        time.sleep(5)
    return value


def heartbeat_then_hang(log: str, name: str) -> Any:
    """Heartbeat progress, then go silent (first attempt); return the previous details."""
    ctx = af.step_context()
    previous = ctx.heartbeat_details
    _record(log, name, repr(previous))
    if previous is None:
        for i in range(3):
            ctx.heartbeat({"done": i + 1})
            time.sleep(0.05)
        time.sleep(60)  # silent: the heartbeat timeout kills this worker
    return {"resumed_from": previous, "attempt": ctx.run.attempt}


def beating(seconds: float) -> str:
    """Run longer than the heartbeat timeout, heartbeating all along."""
    ctx = af.step_context()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.heartbeat()
        time.sleep(0.02)
    return "alive"


def wait_file(path: str) -> str:
    while not Path(path).exists():
        time.sleep(0.01)
    return "released"


def my_pid() -> int:
    return os.getpid()


_HOARD: list[bytearray] = []


def leak_memory(megabytes: int) -> int:
    """Keep ``megabytes`` alive in this worker (a leak); return its pid."""
    _HOARD.append(bytearray(megabytes << 20))
    for i in range(0, len(_HOARD[-1]), 4096):  # touch every page: resident, not just mapped
        _HOARD[-1][i] = 1
    return os.getpid()


def service_call(log: str, down: str) -> str:
    """A call to a 'service' that is down while the file ``down`` exists."""
    with open(log, "a") as f:
        f.write(f"call 1 {os.getpid()}\n")
    if os.path.exists(down):
        raise ConnectionError("service unavailable")
    return "ok"


def kill_engine_always(log: str, name: str) -> None:
    """A poison step: SIGKILL the engine process every time it runs."""
    from tests.steps import engine_pid

    _record(log, name)
    os.kill(engine_pid(), signal.SIGKILL)
    time.sleep(5)


def hang(log: str, name: str) -> None:
    """Record the execution (with this worker's pid), then run for ten minutes."""
    _record(log, name)
    time.sleep(600)
