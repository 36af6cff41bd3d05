"""I1: ``import actorflow`` in a fresh interpreter, against ``import json`` + ``import lmdb``.

Each sample is a new interpreter that times the import statement alone (``perf_counter``
around it: the interpreter's own start-up is not in the figure), the best of ``reps``; the
floor is the same for ``import json, lmdb`` (the standard library's JSON and the store's
binding: what any embedding of an LMDB-backed engine pays), the two alternating so a burst
of load on a shared machine lands on both. Bytecode is cached, as after ``pip install``
(which compiles it): the children write and read it under a private ``PYTHONPYCACHEPREFIX``
(so ``PYTHONDONTWRITEBYTECODE`` in the environment does not turn every sample into a
compile, and the source tree gets no ``__pycache__``), after one warm-up run of each.

Target (issue 19): at most 100 ms. ``python -m bench.imports`` runs it alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

__all__ = ["import_time"]

_TIMED = (
    "import time, sys\n"
    "t = time.perf_counter()\n"
    "{stmt}\n"
    "ms = (time.perf_counter() - t) * 1000\n"
    "print(ms, len(sys.modules))\n"
)
ACTORFLOW = "import actorflow"
FLOOR = "import json, lmdb"


def _sample(stmt: str, env: dict[str, str]) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", _TIMED.format(stmt=stmt)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


def import_time(reps: int) -> dict[str, Any]:
    """Best-of-``reps`` milliseconds of ``import actorflow`` and of the floor, same run."""
    with tempfile.TemporaryDirectory(prefix="actorflow-pyc-") as pyc:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pyc
        for stmt in (ACTORFLOW, FLOOR):
            _sample(stmt, env)  # warm up: compile once, into the private cache
        ours: list[float] = []
        floor: list[float] = []
        modules = 0
        for _ in range(reps):
            ms, modules = _sample(ACTORFLOW, env)
            ours.append(ms)
            floor.append(_sample(FLOOR, env)[0])
    ours.sort()
    floor.sort()
    return {
        "import_ms": ours[0],
        "import_median_ms": ours[len(ours) // 2],
        "floor_ms": floor[0],
        "floor_median_ms": floor[len(floor) // 2],
        "over_floor_ms": ours[0] - floor[0],
        "modules_after": modules,
        "samples": reps,
    }


if __name__ == "__main__":
    print(json.dumps(import_time(int(sys.argv[1]) if len(sys.argv) > 1 else 21), indent=2))
