"""Where the head's CPU goes: a py-spy profile of the engine process, per thread.

``python -m bench.profile LABEL`` runs two shapes of bench B17/B18 on a fresh engine each,
after a warm-up run:

- ``few``: a for_each of 1,000 x 10 ms sleeping items on 2 workers (``durability="sync"``),
  where every result used to pay a whole message round;
- ``many``: 20,000 such items on 128 workers, where the head batches.

It samples the engine process with py-spy (``pip install py-spy``; 500 Hz, ``--threads``)
and reads each thread's CPU from ``/proc/self/task`` (Linux), and writes
``bench/results/profile-LABEL.json``: per shape, the head's CPU per item, each thread's user
and system CPU per item, and the top functions by own samples and by inclusive samples
(waits in ``poll``, ``select``, queue gets and sleeps are left out: they are idle time).
``python -m bench --render`` puts the ``before`` and ``after`` profiles, when both exist,
in docs/benchmarks.md.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import actorflow as af
from bench import tasks

__all__ = ["profile", "top_entries"]

RESULTS = Path(__file__).parent / "results"

#: Leaf frames that are a thread waiting, not working.
_IDLE = (
    "wait (threading",
    "select (selectors",
    "poll (selectors",
    "_wait_for_tstate_lock",
    "get (queue",
    "sleep",
    "SelectorInbox.get",
    "_actor_loop_running (pykka",
    "_Poller.poll",
    "ClockInbox.get",
)

SHAPES = {"few": (1_000, 2), "many": (20_000, 128)}


def _threads() -> dict[str, tuple[float, float]]:
    """Each thread's (user, system) CPU seconds, by name (Linux; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, tuple[float, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        name = re.sub(r"-\d+$", "", names.get(int(tid), "other"))
        user, system = out.get(name, (0.0, 0.0))
        out[name] = (user + int(fields[11]) / tick, system + int(fields[12]) / tick)
    return out


def top_entries(raw: str, n: int = 12) -> dict[str, list[tuple[str, float]]]:
    """The top ``n`` functions of a py-spy raw profile, by own and inclusive share (%)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("thread (") and "process " not in f]
        if not frames or any(w in frames[-1] for w in _IDLE):
            continue
        weight = int(count)
        total += weight
        own[frames[-1]] += weight
        for f in set(frames):
            if "threading.py" not in f and "pykka/" not in f:
                incl[f] += weight
    if not total:
        return {"own": [], "inclusive": []}
    return {
        "own": [(f, round(100 * c / total, 1)) for f, c in own.most_common(n)],
        "inclusive": [(f, round(100 * c / total, 1)) for f, c in incl.most_common(n)],
    }


def _shape(name: str, items: int, workers: int) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    root = Path(tempfile.mkdtemp(prefix="actorflow-profile-"))
    engine = af.Engine(data_dir=root / "store", workers=workers, durability="sync")
    engine.define("p").for_each("items", lambda c: [10.0] * c.payload, tasks.sleep_item)
    out = root / "raw.txt"
    with engine:
        engine.trigger("p", workers * 4).result(timeout=600)  # workers up, the cost learnt
        recorder = None
        if Path(spy).exists():
            recorder = subprocess.Popen(
                [spy, "record", "-p", str(os.getpid()), "-r", "500", "-f", "raw", "-o",
                 str(out), "--threads", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # attached
        before, cpu = _threads(), time.process_time()
        engine.trigger("p", items).result(timeout=3600)
        cpu, after = time.process_time() - cpu, _threads()
        if recorder is not None:
            recorder.send_signal(2)
            recorder.wait(timeout=60)
    threads = {
        k: {
            "user_us": round(1e6 * (u - before.get(k, (0, 0))[0]) / items, 1),
            "sys_us": round(1e6 * (s - before.get(k, (0, 0))[1]) / items, 1),
        }
        for k, (u, s) in after.items()
    }
    threads = {k: v for k, v in threads.items() if v["user_us"] + v["sys_us"] > 0}
    return {
        "items": items,
        "workers": workers,
        "head_us_per_item": round(1e6 * cpu / items, 1),
        "threads": dict(sorted(threads.items(), key=lambda kv: -sum(kv[1].values()))),
        "top": top_entries(out.read_text()) if out.exists() else None,
    }


def profile(label: str) -> dict[str, Any]:
    """Profile both shapes; write and return ``bench/results/profile-LABEL.json``."""
    record = {
        "label": label,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "shapes": {name: _shape(name, *shape) for name, shape in SHAPES.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"profile-{label}.json").write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    done = profile(sys.argv[1] if len(sys.argv) > 1 else "after")
    print(json.dumps(done, indent=2))
