"""An engine whose ``/dev/shm`` is small, as in a container, for the shared-memory test.

Usage (inside ``unshare -rm``: a mount namespace of its own, so the mount is private):
    python -m tests.shm_child SIZE_MB DATA_DIR

Mounts a SIZE_MB tmpfs on /dev/shm, then hands large values between steps and prints one
line per case: ``BIG <sizes>`` (one 200 MiB hand-off), ``MANY <sizes>`` (twenty 10 MiB
hand-offs at once), ``PAYLOAD <size>`` (a 100 MiB trigger payload), ``LATER <sizes>`` (a
30 MiB output kept as a blob file, read by a later step after a restart while ``/dev/shm``
has no room to load it into), ``CRASHES <n>`` (workers that died) and ``DOCTOR <verdict>
<detail>``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import actorflow as af
from actorflow.cli._doctor import _shared_memory
from tests import shm_steps


def main(size_mb: int, data_dir: Path) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", "/dev/shm"], check=True
    )

    def make() -> af.Engine:
        engine = af.Engine(data_dir=data_dir, workers=2)
        engine.define("big").step("make", shm_steps.make_mb).step("check", shm_steps.check_mb)
        engine.define("many").for_each(
            "each", lambda ctx: [10] * 20, shm_steps.make_mb, concurrency=20
        ).step("check", shm_steps.check_mb)
        engine.define("payload").step("size", shm_steps.payload_size)
        engine.define("later").step("make", shm_steps.make_mb).wait_for_event("go").step(
            "check", shm_steps.check_made
        )
        return engine

    engine = make()
    with engine:
        big = engine.trigger("big", {"mb": 200})
        print("BIG", big.result(timeout=300), flush=True)
        many = engine.trigger("many", {})
        print("MANY", many.result(timeout=300), flush=True)
        blob = bytes(range(256)) * (100 * shm_steps.MB // 256)
        print("PAYLOAD", engine.trigger("payload", {"blob": blob}).result(timeout=300), flush=True)
        later = engine.trigger("later", {"mb": 30})
        while later.inspect().step("go").status != af.StepStatus.RUNNING:
            time.sleep(0.05)
        crashes = engine.statistics()["restarts"]
    # Stopped: the 30 MiB output is in its blob file only. Fill /dev/shm but 20 MiB.
    st = os.statvfs("/dev/shm")
    with open("/dev/shm/filler", "wb") as f:
        f.truncate(st.f_bavail * st.f_frsize - (20 << 20))
        os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - (20 << 20))
    engine = make()
    with engine:
        engine.publish("go", {})
        print("LATER", engine.run(later.id).result(timeout=120), flush=True)
        crashes += engine.statistics()["restarts"]
    os.unlink("/dev/shm/filler")
    print("CRASHES", crashes, flush=True)
    check = _shared_memory()
    print("DOCTOR", check.verdict, check.detail, flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(int(sys.argv[1]), Path(sys.argv[2]))
