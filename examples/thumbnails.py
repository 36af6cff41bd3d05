"""A CPU-heavy fan-out to tune: ``actorflow tune examples/thumbnails.py:engine thumbnails``.

Each item "renders a thumbnail" (hashes a few hundred kilobytes: about a millisecond of
CPU), then a step sums the digests' first bytes. Run it with ``python
examples/thumbnails.py``; docs/tuning.md measures it with ``actorflow tune``.
"""

from __future__ import annotations

import hashlib
import os

import actorflow as af


def render(item: int, ctx: af.StepContext) -> int:  # a for_each body: runs in a worker
    data = item.to_bytes(8, "little") * 32_768  # 256 KiB
    return hashlib.sha256(data).digest()[0]


def checksum(ctx: af.StepContext) -> int:
    return sum(ctx.last)


engine = af.Engine(data_dir=os.environ.get("THUMBS_DATA_DIR", ".actorflow-thumbs"))
engine.define("thumbnails").for_each(
    "images", lambda ctx: list(range(int(ctx.payload["images"]))), render
).step("checksum", checksum)


if __name__ == "__main__":
    with engine:
        run = engine.trigger("thumbnails", {"images": 2_000})
        print("checksum:", run.result(timeout=300))
