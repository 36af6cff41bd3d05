"""An engine on a tiny tmpfs whose disk fills up, for the disk-full test.

Usage (inside ``unshare -rm``, which gives it a mount namespace of its own):
    python -m tests.disk_child MOUNT_DIR [sync|fast]

It mounts a 16 MB tmpfs on MOUNT_DIR, runs a workflow, fills the disk, and prints what it
sees, one line each: FULL (a trigger's commit hit the full disk; the trigger waits),
REFUSED <message> (a new trigger, refused), READ <status> (an earlier run, still readable),
HEALTH <detail>, then, after removing the filler, RESULT <value> (the waiting trigger's run),
AFTER <value> (a new run) and STORED <n> <statuses> (after a restart).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import actorflow as af
from tests import steps


def main(mount: str, durability: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mount], check=True)
    data_dir = Path(mount) / "store"

    def make() -> af.Engine:
        engine = af.Engine(data_dir=data_dir, workers=1, map_size=1 << 20, durability=durability)
        engine.define("w").step("a", steps.add_one).step("b", steps.plus_ten)
        return engine

    engine = make()
    with engine:
        first = engine.trigger("w", {"n": 1, "pad": "x" * 20_000})
        print("FIRST", first.result(timeout=60), flush=True)
        filler = Path(mount) / "filler"
        with open(filler, "wb") as f:  # take every free block
            try:
                while True:
                    f.write(b"\0" * (1 << 16))
                    f.flush()
            except OSError:
                pass
        got: dict[str, Any] = {}
        stop = threading.Event()

        def trigger_until_full() -> None:
            # Commits that still fit in free pages inside the file succeed; keep going
            # until one needs a new page the disk cannot give (that trigger then waits).
            try:
                while not stop.is_set():
                    run = engine.trigger("w", {"n": 2, "pad": "y" * 20_000})
                    got.setdefault("runs", []).append(run)
            except af.StoreFull as exc:
                got["refused_in_thread"] = str(exc)

        thread = threading.Thread(target=trigger_until_full, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while engine.health()["checks"]["store"]["ok"]:
            if time.monotonic() > deadline:
                raise SystemExit("the disk never filled")
            time.sleep(0.01)
        print("FULL", flush=True)
        try:
            engine.trigger("w", {"n": 3})
        except af.StoreFull as exc:
            print("REFUSED", exc, flush=True)
        print("READ", engine.inspect(first.id).status.value, flush=True)
        print("HEALTH", engine.health()["checks"]["store"]["detail"], flush=True)
        stop.set()
        filler.unlink()  # space returns
        thread.join(timeout=60)
        runs = got.get("runs", [])
        print("RESULT", [r.result(timeout=60) for r in runs[-1:]], len(runs), flush=True)
        print("AFTER", engine.trigger("w", {"n": 4}).result(timeout=60), flush=True)
    engine = make()
    with engine:
        listed = engine.runs(limit=1000)
        print("STORED", len(listed), sorted({r.status.value for r in listed}), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "sync")
