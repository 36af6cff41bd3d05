"""Step functions for the encryption-at-rest tests: each puts one marked text somewhere.

A marked text is a unique marker inside incompressible base64 filler, so that compression
cannot hide it (or find it), and only sealing keeps it off the disk. Steps derive their
texts from the payload's seed, so that each marker is stored in one place only.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

#: Bytes in a large output: above the default ``shm_threshold`` (1 MiB), so it is a blob file.
LARGE = 3 << 20


def marker(kind: str, seed: str) -> str:
    """The unique marker of ``kind`` (payload, small, large...) for a test's ``seed``."""
    return f"MRK{kind}{hashlib.sha256(f'{seed}:{kind}'.encode()).hexdigest()[:24]}"


def text(kind: str, seed: str, size: int = 3000) -> str:
    """A few KB of random base64 with the marker of ``kind`` in the middle."""
    filler = base64.b64encode(random.Random(f"{seed}:{kind}:fill").randbytes(size)).decode()
    half = len(filler) // 2
    return filler[:half] + marker(kind, seed) + filler[half:]


def large(seed: str) -> bytes:
    """``LARGE`` random bytes with the ``large`` marker in the middle."""
    data = bytearray(random.Random(f"{seed}:large").randbytes(LARGE))
    mark = marker("large", seed).encode()
    data[LARGE // 2 : LARGE // 2 + len(mark)] = mark
    return bytes(data)


def small_output(ctx: Any) -> dict[str, Any]:
    return {"note": text("small", ctx.payload["seed"])}


def keep_state(ctx: Any) -> int:
    ctx.state.set("kept", text("state", ctx.payload["seed"]))
    return 1


def large_output(ctx: Any) -> bytes:
    return large(ctx.payload["seed"])


def fail(ctx: Any) -> None:
    raise ValueError(text("error", ctx.payload["seed"]))


def code_text(seed: str) -> str:
    """A code workflow step's small result: recorded inline in the run's history."""
    return text("history", seed, 600)
