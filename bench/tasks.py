"""Work that benchmarks run in worker processes (importable, so it travels by reference)."""

from __future__ import annotations

import os
import time
from typing import Any


def noop(ctx: Any = None) -> None:
    return None


def burn(ms: float) -> int:
    """Spin the CPU for about ``ms`` milliseconds of thread time."""
    end = time.thread_time() + ms / 1000.0
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


def identity(x: Any) -> Any:
    return x


def burn_item(ms: float, ctx: Any) -> int:
    return burn(ms)


def burn_step(ctx: Any) -> int:
    return burn(float(ctx.payload))


def hang(ctx: Any) -> None:
    while True:
        pass


def crash_once(ctx: Any) -> float:
    marker = ctx.payload
    if ctx.run.attempt == 1:
        with open(marker, "w") as f:
            f.write(repr(time.time()))
        os._exit(1)
    return time.time()


def identity_item(item: Any, ctx: Any) -> Any:
    return item


def noop_args(*args: Any) -> None:
    """A code workflow's trivial step (called as ``fn(*args)``)."""
    return None


def add(a: int, b: int) -> int:
    return a + b


# -- large values (B10, B12) --------------------------------------------------------------------

_ARRAYS: dict[int, Any] = {}


def array(nbytes: int) -> Any:
    """A float64 array of ``nbytes`` bytes, made once per process (producing it is not what
    the hand-off benchmarks measure; handing it on is)."""
    import numpy as np

    a = _ARRAYS.get(nbytes)
    if a is None:
        a = _ARRAYS[nbytes] = np.arange(nbytes // 8, dtype=np.float64)
    return a


def produce(ctx: Any) -> Any:
    return array(int(ctx.payload))


def consume(ctx: Any) -> list[float]:
    return [float(ctx.last.sum()), float(os.getpid())]


def consume_array(a: Any) -> float:
    return float(a.sum())


def order_total(ctx: Any) -> dict[str, Any]:
    """The retention benchmark's first step: a small order priced."""
    p = ctx.payload
    return {"order": p["order"], "total": p["qty"] * p["price"]}


def order_tax(ctx: Any) -> dict[str, Any]:
    return {**ctx.last, "tax": round(ctx.last["total"] * 0.2, 2)}


def order_done(ctx: Any) -> dict[str, Any]:
    return {"order": ctx.last["order"], "ok": True}


# -- the head's cost (B17, B18) ---------------------------------------------------------------


def sleep_item(ms: float, ctx: Any) -> None:
    """An item that takes ``ms`` of wall time and almost no CPU: N workers sleeping in it
    stand in for N busy cores, so only the engine process (the head) can fall behind."""
    time.sleep(ms / 1000.0)


def sleep_ms(ms: float) -> None:
    """``ctx.map``'s form of :func:`sleep_item` (called as ``fn(item)``)."""
    time.sleep(ms / 1000.0)
