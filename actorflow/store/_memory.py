"""The in-memory twin of the LMDB store: same contract, no files.

Used by tests and by the user-facing test harness. Durability does not apply, but every other
promise does: sorted keys, prefix and reverse scans, atomic batches (a bad op applies nothing),
and the format check.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from actorflow.errors import StoreError
from actorflow.store import _keys as K
from actorflow.store._blobfiles import MemoryBlobs
from actorflow.store._protocol import Op, check_ops

__all__ = ["MemoryStore"]


class _Table:
    __slots__ = ("data", "keys")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []  # sorted

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self.data:
            bisect.insort(self.keys, key)
        # A copy of exactly its size: orjson returns bytes that keep a 4 KiB buffer, which
        # would make every small record cost 4 KiB here (LMDB copies values anyway).
        self.data[key] = bytes(memoryview(value))

    def delete(self, key: bytes) -> None:
        if self.data.pop(key, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]


class MemoryStore:
    """A store that lives in this process's memory.

    Args:
        dbs: the database names (default: all of actorflow's).
    """

    def __init__(self, dbs: Sequence[str] = K.ALL_DBS) -> None:
        self._tables = {name: _Table() for name in dbs}
        self._known = frozenset(dbs)
        self._lock = threading.RLock()
        self._closed = False
        self.read_only = False
        self.commits = 0
        self.path = None
        #: Large values' buffers.
        self.blobs = MemoryBlobs()

    def _table(self, db: str) -> _Table:
        if self._closed:
            raise StoreError("store is closed")
        try:
            return self._tables[db]
        except KeyError:
            raise StoreError(f"unknown database {db!r}") from None

    def get(self, db: str, key: bytes) -> bytes | None:
        with self._lock:
            return self._table(db).data.get(key)

    def get_many(self, db: str, keys: list[bytes]) -> list[bytes | None]:
        with self._lock:
            data = self._table(db).data
            return [data.get(k) for k in keys]

    def scan(
        self,
        db: str,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[tuple[bytes, bytes]]:
        with self._lock:
            table = self._table(db)
            keys = table.keys
            out: list[tuple[bytes, bytes]] = []
            if limit is not None and limit <= 0:
                return out
            if not reverse:
                i = bisect.bisect_left(keys, prefix)
                if after is not None:
                    i = max(i, bisect.bisect_right(keys, after))
                while i < len(keys) and keys[i].startswith(prefix):
                    out.append((keys[i], table.data[keys[i]]))
                    i += 1
                    if limit is not None and len(out) >= limit:
                        break
            else:
                i = _end_of_prefix(keys, prefix) - 1
                if after is not None:
                    i = min(i, bisect.bisect_left(keys, after) - 1)
                while i >= 0 and keys[i].startswith(prefix):
                    out.append((keys[i], table.data[keys[i]]))
                    i -= 1
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def write(self, ops: Sequence[Op]) -> None:
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            check_ops(ops, self._known)
            for db, key, value in ops:
                if value is None:
                    self._tables[db].delete(key)
                else:
                    self._tables[db].put(key, bytes(value))
            self.commits += 1

    def sync(self) -> None:
        return None

    def close(self) -> None:
        self._closed = True


def _end_of_prefix(keys: list[bytes], prefix: bytes) -> int:
    """Index just past the last key starting with ``prefix``."""
    if not prefix:
        return len(keys)
    upper = _successor(prefix)
    return len(keys) if upper is None else bisect.bisect_left(keys, upper)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
