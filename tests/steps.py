"""Step functions used by the tests, importable so that workers load them by reference."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import actorflow as af


def record(ctx: Any, name: str | None = None) -> None:
    """Append one line per execution to the file named in the payload."""
    path = ctx.payload.get("log") if isinstance(ctx.payload, dict) else None
    if path:
        with open(path, "a") as f:
            f.write(f"{name or ctx.run.step} {ctx.run.attempt} {os.getpid()}\n")


def add_one(ctx: Any) -> int:
    record(ctx)
    base = ctx.last if ctx.last is not None else ctx.payload["n"]
    return int(base) + 1


def echo_payload(ctx: Any) -> Any:
    return ctx.payload


def context_view(ctx: Any) -> dict[str, Any]:
    return {
        "run_id": ctx.run.id,
        "workflow_id": ctx.run.workflow_id,
        "step": ctx.run.step,
        "attempt": ctx.run.attempt,
        "idempotency_key": ctx.idempotency_key,
        "last": ctx.last,
        "first": ctx.steps["first"].output,
    }


def first(ctx: Any) -> dict[str, Any]:
    return {"value": ctx.payload["value"] * 10}


def noop(ctx: Any) -> None:
    return None


def slow(ctx: Any) -> str:
    record(ctx)
    time.sleep(float(ctx.payload.get("sleep", 0.3)))
    return "slow done"


def sleep_forever(ctx: Any) -> None:
    record(ctx)
    while True:
        time.sleep(0.05)


def spin_forever(ctx: Any) -> None:
    record(ctx)
    while True:  # a pure-Python busy loop: only killing the process stops it
        pass


def exit_hard(ctx: Any) -> None:
    record(ctx)
    os._exit(3)


def segfault(ctx: Any) -> None:
    record(ctx)
    ctypes.string_at(0)


def sigkill_self(ctx: Any) -> None:
    record(ctx)
    os.kill(os.getpid(), signal.SIGKILL)


def crash_first_attempt(ctx: Any) -> str:
    record(ctx)
    if ctx.run.attempt == 1:
        os._exit(9)
    return f"survived on attempt {ctx.run.attempt}"


class Boom(Exception):
    """A step error."""


class NotRetryable(Exception):
    """A step error the tests mark non-retryable."""


def fail_always(ctx: Any) -> None:
    record(ctx)
    raise Boom(f"boom on attempt {ctx.run.attempt}")


def fail_not_retryable(ctx: Any) -> None:
    record(ctx)
    raise NotRetryable("do not retry me")


def fail_until(ctx: Any) -> str:
    """Fail until attempt ``ctx.payload['succeed_on']``."""
    record(ctx)
    if ctx.run.attempt < int(ctx.payload["succeed_on"]):
        raise Boom(f"not yet (attempt {ctx.run.attempt})")
    return f"ok on attempt {ctx.run.attempt}"


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # two required args: does not unpickle
        super().__init__(f"{a}-{b}")
        self.a, self.b = a, b


def fail_unpicklable(ctx: Any) -> None:
    raise Unpicklable(1, 2)


def kill_engine(ctx: Any) -> None:
    """Mid-step: SIGKILL the engine process (its pid is in the payload)."""
    record(ctx)
    marker = Path(ctx.payload["marker"])
    if not marker.exists():
        marker.write_text("killed")
        os.kill(int(ctx.payload["engine_pid"]), signal.SIGKILL)
        time.sleep(5)  # the engine is gone; its death takes this worker with it


def logs(ctx: Any) -> str:
    ctx.log.warning("hello from %s", ctx.run.step)
    return "logged"


def numbered(ctx: Any) -> int:
    """Record the execution and return the step's position (its name is s<N>)."""
    record(ctx)
    pause = float(ctx.payload.get("pause", 0))
    if pause:
        time.sleep(pause)
    return int(ctx.run.step[1:])


def shout(ctx: Any) -> str:
    record(ctx)
    return str(ctx.last).upper()


def wait_for_marker(ctx: Any) -> str:
    """Block until the file named in the payload exists (the test decides when)."""
    record(ctx)
    marker = Path(ctx.payload["marker"])
    while not marker.exists():
        time.sleep(0.01)
    return "released"


def ignore_sigterm_and_hang(ctx: Any) -> None:
    """A step that shrugs off SIGTERM: only SIGKILL stops it."""
    record(ctx)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.05)


def _note_unpickled(path: str) -> UnpickleCounter:
    with open(path, "a") as f:
        f.write(f"unpickled {os.getpid()}\n")
    return UnpickleCounter(path)


class UnpickleCounter:
    """Appends a line to ``path`` every time it is unpickled (to count function transfers)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_note_unpickled, (self.path,))


# -- control flow ------------------------------------------------------------------------------


def double_item(item: Any, ctx: Any) -> Any:
    record(ctx, f"item{ctx.index}")
    return item * 2


def item_from_ctx(ctx: Any) -> Any:
    return {"item": ctx.item, "index": ctx.index, "last": ctx.last, "path": ctx.run.step}


def sum_chunk(chunk: Any, ctx: Any) -> int:
    return int(sum(chunk))


def plus_ten(ctx: Any) -> int:
    return int(ctx.last) + 10


def label(ctx: Any) -> str:
    return f"{ctx.run.step}:{ctx.last}"


def incr(ctx: Any) -> int:
    return int(ctx.last or 0) + 1


def slow_item(item: Any, ctx: Any) -> Any:
    """Record start and end (to measure concurrency), sleeping a little in between."""
    path = ctx.payload["log"]
    with open(path, "a") as f:
        f.write(f"start {item} {time.time()}\n")
    time.sleep(0.05)
    with open(path, "a") as f:
        f.write(f"end {item} {time.time()}\n")
    return item


def pid_and_hang(ctx: Any) -> None:
    """Write this worker's pid to the payload's file, then never finish."""
    with open(ctx.payload["pid_file"], "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.05)


def quick(ctx: Any) -> str:
    marker = Path(ctx.payload["pid_file"])
    while not marker.exists():  # let the loser start first
        time.sleep(0.01)
    return "quick won"


def fallback(ctx: Any) -> Any:
    return {"fallback": True, "error": type(ctx.error).__name__, "msg": str(ctx.error)}


def reraise(ctx: Any) -> None:
    raise RuntimeError(f"handler gave up on {ctx.error}")


def child_total(ctx: Any) -> int:
    return int(sum(ctx.payload["values"]))


def item_with_log(item: Any, ctx: Any) -> Any:
    record(ctx, f"item{ctx.index}")
    return item + 1


def _kill_engine_once_at(ctx: Any, index: int) -> None:
    """Item ``index`` SIGKILLs the engine (``payload["engine_pid"]``), once (a marker file)."""
    if ctx.index == index:
        marker = Path(ctx.payload["marker"])
        if not marker.exists():
            marker.write_text("killed")
            os.kill(int(ctx.payload["engine_pid"]), signal.SIGKILL)
            time.sleep(5)


def item_crash_engine(item: Any, ctx: Any) -> Any:
    """Item 5 SIGKILLs the engine once (a marker file), mid fan-out."""
    record(ctx, f"item{ctx.index}")
    _kill_engine_once_at(ctx, 5)
    time.sleep(0.002)
    return item


# -- tiny item steps: the engine sends them to the pool in chunks ---------------------------


def tiny_double(item: Any, ctx: Any) -> Any:
    return item * 2


def tiny_crash_twice(ctx: Any) -> Any:
    """Item 7 kills its worker twice (counted in a file named in the payload); tiny otherwise."""
    marker = Path(ctx.payload["marker"])
    if ctx.item == 7:
        crashes = len(marker.read_text()) if marker.exists() else 0
        if crashes < 2:
            marker.write_text("x" * (crashes + 1))
            os._exit(3)
    return ctx.item * 2


def tiny_fail_some(ctx: Any) -> Any:
    record(ctx, f"item{ctx.index}")
    if ctx.item % 100 == 5:
        raise Boom(f"bad item {ctx.item}")
    return ctx.item * 2


def item_size(item: Any, ctx: Any) -> int:
    """An item's length as JSON text (its output says nothing of the item itself)."""
    import json

    return len(json.dumps(item))


def tiny_first(item: Any, ctx: Any) -> Any:
    return {"n": item, "path": ctx.run.step}


def tiny_second(ctx: Any) -> Any:
    # ctx.steps goes to the engine over the worker's pipe: it must resolve in this item.
    return [ctx.last["n"], ctx.steps["tiny_first"].output["path"], ctx.index]


def item_held_crash(item: Any, ctx: Any) -> Any:
    """A 10 ms item; item 100 SIGKILLs the engine once (a marker file), mid fan-out."""
    record(ctx, f"item{ctx.index}")
    _kill_engine_once_at(ctx, 100)
    time.sleep(0.01)
    return item


def tiny_logged(item: Any, ctx: Any) -> Any:
    """Tiny, logs each execution; item 1500 SIGKILLs the engine once (a marker file)."""
    record(ctx, f"item{ctx.index}")
    _kill_engine_once_at(ctx, 1500)
    return item


def outside_result(ctx: Any) -> dict[str, Any]:
    return {"approved_by": ctx.steps["approve"].output["by"], "paid": ctx.last["amount"]}


def heartbeat_once_then_hang(ctx: Any) -> Any:
    """Graph step: heartbeat, go silent on the first attempt; return the details after."""
    previous = ctx.heartbeat_details
    if previous is None:
        ctx.heartbeat({"at": ctx.run.attempt})
        time.sleep(60)
    return previous


def big_text(ctx: Any) -> str:
    """An output too large to live inside its step record (stored on its own)."""
    return f"{ctx.item}:" + "x" * 5000


def read_big(ctx: Any) -> int:
    """Read the sibling step's large output through ctx.steps (same item frame)."""
    return len(ctx.steps["big"].output)


def big_blob(ctx: Any) -> bytes:
    """A 20 MB output (pickled bytes)."""
    return b"z" * (20 << 20)


def ignores_last(ctx: Any) -> int:
    """Reads only the small payload field, never ctx.last."""
    return int(ctx.payload["n"]) + 1


def measures_last(ctx: Any) -> int:
    return len(ctx.last)


def payload_size(ctx: Any) -> int:
    return len(ctx.payload["blob"])


def flaky_service(ctx: Any) -> str:
    """Call a 'service' that is down while the file named ``down`` in the payload exists."""
    record(ctx)
    if Path(ctx.payload["down"]).exists():
        raise ConnectionError("service unavailable")
    return "ok"


def span_here(ctx: Any) -> dict[str, Any]:
    """Make an OpenTelemetry span inside the step; report its parent's ids (hex)."""
    from opentelemetry import trace

    current = trace.get_current_span().get_span_context()
    with trace.get_tracer("user-code").start_as_current_span("inside") as span:
        mine = span.get_span_context()
    return {
        "trace_id": f"{current.trace_id:032x}",
        "parent_span_id": f"{current.span_id:016x}",
        "same_trace": mine.trace_id == current.trace_id or not mine.is_valid,
        "pid": os.getpid(),
    }


def blow_up_memory(ctx: Any) -> None:
    """Allocate (and touch) memory until the engine kills this worker."""
    record(ctx)
    hoard = []
    while True:
        hoard.append(b"x" * (16 << 20))
        time.sleep(0.05)


def tiny_or_hang(ctx: Any) -> int:
    """Quick (its duration is learned as short), unless the payload says hang."""
    if ctx.payload.get("hang"):
        record(ctx)
        while True:  # busy in a step: this worker does not read its pipe
            time.sleep(0.05)
    return len(ctx.payload.get("pad", ""))


def engine_pid() -> int:
    """The engine process of this worker (the forkserver's parent, with forkserver).

    Found from the process tree, not the payload: a run's payload is stored, and the engine
    that restarts it has a new pid.
    """
    import psutil

    parent = psutil.Process(os.getppid())
    if any("forkserver" in part for part in parent.cmdline()):
        return int(parent.ppid())
    return parent.pid


def kill_engine_always(ctx: Any) -> None:
    """A poison step: SIGKILL the engine process every time it runs."""
    record(ctx)
    os.kill(engine_pid(), signal.SIGKILL)
    time.sleep(5)


def item_kills_its_worker(item: Any, ctx: Any) -> Any:
    """Log, nap ``payload["ms"]``; item ``payload["victim"]`` SIGKILLs its own worker once."""
    record(ctx, f"item{ctx.index}")
    if ctx.index == ctx.payload["victim"]:
        marker = Path(ctx.payload["marker"])
        if not marker.exists():
            marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(ctx.payload["ms"]) / 1000.0)
    return item


def item_logged_nap(item: Any, ctx: Any) -> Any:
    """Log the execution (``item<index>``), sleep ``payload["ms"]``, return the item."""
    record(ctx, f"item{ctx.index}")
    time.sleep(float(ctx.payload["ms"]) / 1000.0)
    return item


def napping_item(item: Any, ctx: Any) -> Any:
    """Sleep ``item`` milliseconds (the item's own cost), and return it."""
    time.sleep(item / 1000.0)
    return item


def steps_mapping(ctx: Any) -> dict[str, Any]:
    """What ``ctx.steps`` holds as a Mapping, seen from a graph step (``in`` used to hang)."""
    steps = ctx.steps
    try:
        steps["never_ran"]
        missing = "no KeyError"
    except KeyError as exc:
        missing = str(exc)
    return {
        "in": ["first" in steps, "never_ran" in steps, 3 in steps],
        "get": [steps.get("first").output, steps.get("never_ran", "dflt")],
        "keys": sorted(steps.keys()),
        "len": len(steps),
        "iter": sorted(steps),
        "items": sorted((k, v.output) for k, v in steps.items()),
        "missing": missing,
        "is_mapping": isinstance(steps, Mapping),
    }


def item_steps(ctx: Any) -> list[Any]:
    """Inside a for_each body: this item's steps first, then the run's."""
    return [sorted(ctx.steps), ctx.steps["double"].output, "seed" in ctx.steps]


def steps_mapping_code() -> dict[str, Any]:
    """``af.step_context().steps`` in a code workflow's step."""
    steps = af.step_context().steps
    return {
        "keys": sorted(steps),
        "in": ["one" in steps, "nope" in steps],
        "one": steps["one"].output,
    }


def on_cancel_cleanup(ctx: Any) -> str:
    """A workflow's on_cancel handler: recorded, and held by the payload's gate file if any."""
    record(ctx)
    gate = ctx.payload.get("gate")
    while gate and not Path(gate).exists():
        time.sleep(0.01)
    return f"cleaned up after {sorted(ctx.steps)}"


def weather(ctx: Any) -> dict[str, Any]:
    """A step worth caching: recorded per execution."""
    record(ctx)
    return {"city": ctx.payload["city"], "temp": len(ctx.payload["city"]) * 3}


def on_run_end(ctx: Any) -> str:
    """A workflow's on_success / on_failure hook: recorded, held by the payload's gate file if
    any, and it raises when the payload says so (a failing hook changes nothing)."""
    record(ctx)
    gate = ctx.payload.get("gate")
    while gate and not Path(gate).exists():
        time.sleep(0.01)
    if ctx.payload.get("hook_fails"):
        raise RuntimeError("the hook broke")
    error = getattr(ctx, "error", None)
    why = f" ({type(error).__name__}: {error})" if error is not None else ""
    return f"after {sorted(ctx.steps)}{why}"


def fail_if_asked(ctx: Any) -> int:
    record(ctx)
    if ctx.payload.get("fail"):
        raise ValueError("card declined")
    return 1


def describe_error(ctx: Any) -> str:
    """An on_error handler: what ``ctx.error`` is."""
    return f"{type(ctx.error).__name__}: {ctx.error}"


def city_weather(city: str, log: str) -> dict[str, Any]:
    """A code workflow's step worth caching: logged per execution."""
    with open(log, "a") as f:
        f.write(f"city_weather 1 {os.getpid()}\n")
    return {"city": city, "temp": len(city) * 3}
