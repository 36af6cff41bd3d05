"""At start-up, before any run: save what a killed engine left in shared memory.

Data flow: the ``blobs`` database lists every recorded blob (run, size, segment). A blob of
a run that ended and no longer needs it is dropped (record and file). A recorded blob still
missing its file is written from the segment named in its record, if that segment is still
there (the engine process died, the machine did not); otherwise it is lost, logged, and
reading it fails with ``StoreCorrupted``. Files with no record (never committed, or whose
record was deleted) are deleted. Then every segment of this store is unlinked.
"""

from __future__ import annotations

import logging
import os

import orjson

from actorflow.store import _keys as K
from actorflow.store._protocol import Op, Store
from actorflow.views import blob_keep
from actorflow.workers._shm import SegmentLog, open_segment, store_segments, unlink_segment

__all__ = ["recover"]

log = logging.getLogger("actorflow.blobs")


def recover(store: Store, token: str, segment_log: SegmentLog | None) -> tuple[int, int, int]:
    """Save, drop and sweep as the module docstring says.

    Returns:
        (blobs saved from segments, blobs lost, segments unlinked).
    """
    saved = lost = 0
    files = store.blobs
    records = store.scan(K.BLOBS, b"b\x00")
    ended: dict[str, frozenset[str] | None] = {}
    doomed: list[tuple[str, str]] = []
    for key, raw in records:
        bid = key[2:].decode()
        rec = orjson.loads(raw)
        run = rec.get("run", "")
        if run not in ended:
            ended[run] = blob_keep(store, run)
        keep = ended[run]
        if keep is not None and bid not in keep:
            doomed.append((run, bid))
            continue
        if files.size(bid) == rec.get("size"):
            continue
        seg = rec.get("seg")
        if seg and _save_segment(store, bid, seg, int(rec["size"])):
            saved += 1
        else:
            lost += 1
            log.error(
                "blob %s of run %s was lost (the machine stopped before it reached the "
                "disk); reading that value will fail",
                bid,
                run,
            )
    if doomed:
        ops: list[Op] = []
        for run, bid in doomed:
            ops.append((K.BLOBS, K.blob_key(bid), None))
            ops.append((K.BLOBS, K.blob_run_key(run, bid), None))
        store.write(ops)
        for _, bid in doomed:
            files.delete(bid)
    known = {key[2:].decode() for key, _ in records}
    for bid in files.ids():  # files whose record was never committed or was deleted
        if bid not in known:
            files.delete(bid)
    names = store_segments(token, segment_log)
    for name in names:
        unlink_segment(name)
    if segment_log is not None:
        segment_log.reset()
    return saved, lost, len(names)


def _save_segment(store: Store, bid: str, name: str, size: int) -> bool:
    """Write blob ``bid``'s file from segment ``name``; False if the segment is gone."""
    try:
        fd = open_segment(name, writable=False)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size < size:
            return False
        return store.blobs.write_from(bid, fd, size)
    finally:
        os.close(fd)
