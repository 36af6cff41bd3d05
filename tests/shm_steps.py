"""Step functions for the shared-memory tests (numpy arrays and large buffers)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.steps import record

MB = 1 << 20


def in_shared_memory(buf: Any) -> bool:
    """True if ``buf``'s memory lies in a mapping of one of actorflow's segments."""
    arr = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=np.uint8)
    addr = arr.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return len(parts) >= 6 and parts[5].startswith("/dev/shm/af_")
    return False


def arrays() -> dict[str, Any]:
    """Arrays of several layouts, each (but ``small``) above 1 MiB."""
    base = np.arange(3 * 512 * 512, dtype=np.float32).reshape(3, 512, 512)
    record_dtype = np.dtype([("id", np.int32), ("score", np.float64), ("tag", "S4")])
    structured = np.zeros(100_000, dtype=record_dtype)
    structured["id"] = np.arange(100_000)
    structured["score"] = np.linspace(0, 1, 100_000)
    structured["tag"] = b"ab"
    return {
        "c": base,  # C order
        "f": np.asfortranarray(np.arange(400 * 700, dtype=np.int64).reshape(400, 700)),
        "strided": np.arange(2_000_000, dtype=np.float64)[::3],  # not contiguous
        "transposed_view": base[:, ::2, :].transpose(2, 0, 1),  # neither C nor F
        "structured": structured,
        "complex": (np.arange(200_000) * (1 + 2j)).astype(np.complex128),
        "small": np.arange(10, dtype=np.int16),
    }


def make_arrays(ctx: Any) -> dict[str, Any]:
    return arrays()


def describe_arrays(ctx: Any) -> dict[str, Any]:
    """What arrived: dtype, shape, strides, values, and whether it is a view of a segment."""
    out = {}
    for name, a in ctx.last.items():
        out[name] = {
            "dtype": a.dtype.str if a.dtype.names is None else repr(a.dtype.descr),
            "shape": list(a.shape),
            "strides": list(a.strides),
            "writeable": bool(a.flags.writeable),
            "shared": in_shared_memory(a)
            if a.flags.c_contiguous or a.flags.f_contiguous
            else False,
            "equal": bool(np.array_equal(a, arrays()[name])),
        }
    return out


def make_big(ctx: Any) -> Any:
    """A float64 array of ``n`` elements (payload), 50 MB by default."""
    record(ctx)
    return np.arange(int(ctx.payload.get("n", 6_250_000)), dtype=np.float64)


def total(ctx: Any) -> float:
    """Sum the output of step ``make`` (read-only, from shared memory)."""
    record(ctx)
    a = ctx.steps["make"].output
    return float(a.sum())


def total_and_where(ctx: Any) -> list[Any]:
    a = ctx.last
    return [float(a.sum()), in_shared_memory(a), bool(a.flags.writeable)]


def sized(ctx: Any) -> Any:
    """A uint8 array of exactly ``size`` bytes (payload)."""
    return np.full(int(ctx.payload["size"]), 7, dtype=np.uint8)


def where(ctx: Any) -> list[Any]:
    a = ctx.last
    return [int(a.nbytes), int(a.sum()), in_shared_memory(a)]


def buffers(ctx: Any) -> dict[str, Any]:
    data = bytes(range(256)) * (8 * 1024)  # 2 MiB
    return {
        "bytes": data,
        "bytearray": bytearray(data),
        "view": memoryview(bytearray(data)).cast("I", [1024, 512]),
        "top": [bytes(bytearray(data))],  # distinct objects (pickle shares repeated ones)
        "nested": {"inner": (bytes(bytearray(data)), 1)},
    }


def buffer_kinds(ctx: Any) -> dict[str, Any]:
    got = ctx.last
    data = bytes(range(256)) * (8 * 1024)
    view = got["view"]
    return {
        "bytes": type(got["bytes"]).__name__ == "bytes" and got["bytes"] == data,
        "bytearray": type(got["bytearray"]).__name__ == "bytearray" and got["bytearray"] == data,
        "view": [view.format, list(view.shape), view.tobytes() == data, in_shared_memory(view)],
        "top": got["top"][0] == data,
        "nested": got["nested"]["inner"] == (data, 1),
    }


def sum_then_fail(ctx: Any) -> None:
    float(ctx.last.sum())
    raise ValueError("consumer failed on purpose")


def sum_then_hang(ctx: Any) -> None:
    float(ctx.last.sum())
    time.sleep(60)


def sum_then_die(ctx: Any) -> None:
    float(ctx.last.sum())
    os._exit(3)


def wait_for_file(ctx: Any) -> str:
    """Wait until the file named in the payload's ``gate`` exists."""
    gate = Path(ctx.payload["gate"])
    while not gate.exists():
        time.sleep(0.01)
    return "open"


def code_make(n: int) -> Any:
    return np.arange(n, dtype=np.float64)


def code_total(a: Any) -> list[Any]:
    return [float(a.sum()), in_shared_memory(a)]


def make_mb(ctx: Any) -> bytes:
    """``ctx.payload["mb"]`` MiB (per item in a for_each: the item) of a recognisable pattern."""
    mb = ctx.item if getattr(ctx, "item", None) is not None else ctx.payload["mb"]
    return bytes(range(256)) * (int(mb) * MB // 256)


def check_mb(ctx: Any) -> list[int]:
    """The sizes of what the previous step handed over, each checked against the pattern."""
    values = ctx.last if isinstance(ctx.last, list) else [ctx.last]
    out = []
    for v in values:
        pattern = bytes(range(256))
        if bytes(v[:256]) != pattern or bytes(v[-256:]) != pattern:
            raise ValueError("a hand-off arrived damaged")
        out.append(len(v) // MB)
    return out


def payload_size(ctx: Any) -> int:
    return len(ctx.payload["blob"]) // MB


def check_made(ctx: Any) -> list[int]:
    """``check_mb`` of the output of the step named ``make``."""
    v = ctx.steps["make"].output
    pattern = bytes(range(256))
    if bytes(v[:256]) != pattern or bytes(v[-256:]) != pattern:
        raise ValueError("a hand-off arrived damaged")
    return [len(v) // MB]
