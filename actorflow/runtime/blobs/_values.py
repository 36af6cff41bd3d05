"""Blobs as the ledger sees them, the ``B`` values that keep them alive, and the resolver.

A ``B`` value (see :mod:`actorflow.store._codec`) names its blobs; any process that decodes
one asks the resolver registered here for each blob's bytes, and the resolver asks the
running engine of the blob's store (by the blob id's token), so a value decoded in the
engine process maps the segment instead of reading the file.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from actorflow.errors import StoreCorrupted
from actorflow.runtime.blobs._segments import Segment
from actorflow.store._codec import TAG_BLOB, set_resolver

__all__ = ["Blob", "BlobStats", "BlobValue", "register", "unregister"]


class Blob:
    """One blob in the ledger: where it is resident, who holds it, how durable it is."""

    __slots__ = ("committed", "deleted", "holds", "id", "owners", "seg", "size", "stored")

    def __init__(self, blob_id: str, size: int, seg: Segment | None) -> None:
        self.id = blob_id
        self.size = size
        self.seg = seg
        self.holds = 0  # tasks sent it, zero-copy views in this process, a write in progress
        self.owners = 0  # live BlobValue objects (they keep an unrecorded blob alive)
        self.committed = False  # recorded in the store
        self.stored = False  # its file is written
        self.deleted = False


class BlobValue(bytes):
    """An encoded ``B`` value made in this engine: while it lives, so do its blobs.

    It is plain bytes to everyone else; once a record refers to its blobs, the store keeps
    them and this object no longer matters.
    """

    def __del__(self) -> None:
        try:
            self._mgr._disown(self._ids)  # type: ignore[attr-defined]
        except Exception:  # never raise from a finalizer (e.g. at interpreter exit)
            pass


class BlobStats:
    """Counters for ``engine.statistics()["shm"]``."""

    __slots__ = ("blobs_written", "bytes_written", "lent", "loaded", "refused", "reused")

    def __init__(self) -> None:
        self.lent = 0  # segments lent to workers for outputs
        self.reused = 0  # of which, pooled segments reused
        self.refused = 0  # requests refused (shm_max_bytes reached): sent through the pipe
        self.loaded = 0  # blobs read back from the store into a segment
        self.blobs_written = 0
        self.bytes_written = 0


class _Buffers(Protocol):
    def buffer(self, blob_id: str, size: int) -> Any: ...


_managers: dict[str, _Buffers] = {}
_managers_lock = threading.Lock()


def register(token: str, manager: _Buffers) -> None:
    """Serve the blobs of the store with blob token ``token`` from ``manager``."""
    with _managers_lock:
        _managers[token] = manager


def unregister(token: str, manager: _Buffers) -> None:
    """Stop serving them (if ``manager`` still does)."""
    with _managers_lock:
        if _managers.get(token) is manager:
            del _managers[token]


def _resolve_blob(blob_id: str, size: int) -> Any:
    """The process-wide resolver of ``B`` values: the running engine of the blob's store."""
    token = blob_id.partition(".")[0]
    manager = _managers.get(token)
    if manager is None:
        raise StoreCorrupted(
            f"large value: blob {blob_id} belongs to a store with no running engine here"
        )
    return manager.buffer(blob_id, size)


set_resolver(TAG_BLOB, _resolve_blob)
