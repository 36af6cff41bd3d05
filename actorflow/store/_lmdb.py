"""The LMDB store: one environment in ``data_dir``, one named database per kind of record.

Durability modes:

- ``"sync"``: every committed transaction is fsynced (LMDB's default). One commit costs a
  few hundred microseconds, which is why the engine commits in groups.
- ``"fast"``: no fsync at commit (``sync=False`` with a write map); a crash of the process
  loses nothing, a crash of the machine may lose the last moments. The writer actor flushes
  every second to bound that window.

The map grows on demand: a transaction that hits ``MDB_MAP_FULL`` is aborted, the map doubled,
and the whole batch retried, so a batch is never half-written. Growing needs no read
transaction open in this process, so reads pass through a gate that a resize closes briefly.

Every record outside ``meta`` ends with a CRC-32 of its key and value (stores created before
checksums keep working without them; ``meta`` says which). LMDB keeps no page checksums, so
this is what turns bytes altered on disk into ``StoreCorrupted`` instead of silent wrong data:
at open and on every read (``_integrity.py``).

Only one engine may write a store: a writable open takes an exclusive ``flock`` on
``engine.lock`` (or adopts one already taken: a follower that waited for the lock, see
``engine/_follower.py``). Read-only opens (the CLI, followers) take no lock.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb

from actorflow.errors import StoreCorrupted, StoreError, StoreFull, WriteRejected
from actorflow.store import _keys as K
from actorflow.store._blobfiles import BlobFiles
from actorflow.store._files import check_data_file, write_marker
from actorflow.store._gate import EngineLock, ReadGate
from actorflow.store._integrity import CRC, checked, uses_checksums, verify
from actorflow.store._protocol import Op, check_ops
from actorflow.store._space import allocate

__all__ = ["LmdbStore"]

log = logging.getLogger("actorflow.store")

_MAX_KEY = K.MAX_KEY  # LMDB's compile-time key limit
# A failed commit with less free space than this on the data dir's disk is a full disk.
_LOW_SPACE = 4 << 20
_LATE_OPEN = threading.Lock()  # opening a database that appeared after the store's open


class LmdbStore:
    """A store backed by an LMDB environment in a directory.

    Args:
        path: the data directory (created if missing, unless read-only).
        durability: ``"sync"`` or ``"fast"`` (see the module docstring).
        map_size: initial map size in bytes; it doubles whenever a write needs more.
        max_map_size: the most it may double to (0: no limit but the disk's).
        read_only: open for reading only; takes no engine lock, and follows a map that the
            writing process grows.
        recreate: start a new store even though the directory shows that one existed and
            its ``data.mdb`` is missing or empty (refused otherwise: see ``_files.py``).
        lock_fd: a descriptor of ``engine.lock`` on which the caller already holds the
            exclusive ``flock``; the store owns it from now on (closing drops the lock).

    Raises:
        StoreInUse: another engine holds it.
        StoreError: the directory cannot be used.
        StoreCorrupted: the files are not a valid LMDB environment, ``data.mdb`` is
            truncated, or a store that existed there lost its ``data.mdb``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "sync",
        map_size: int = 64 << 20,
        max_map_size: int = 0,
        read_only: bool = False,
        recreate: bool = False,
        lock_fd: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_map_size = max_map_size
        self.read_only = read_only
        self.durability = durability
        self.commits = 0
        self.ops_written = 0
        self._gate = ReadGate()
        #: Large values' buffers, as files beside the environment.
        self.blobs = BlobFiles(self.path / "blobs", durability == "sync", read_only)
        self._lock: EngineLock | None = None
        self._closed = False
        if read_only:
            if not (self.path / "data.mdb").exists():
                raise StoreError(f"no actorflow store at {self.path} (data.mdb not found)")
            check_data_file(self.path)
        else:
            try:
                # Owner-only: the store holds payloads, outputs and state (issue: security).
                self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store directory {self.path}: {exc}") from exc
            self._lock = EngineLock.take(self.path) if lock_fd is None else EngineLock(lock_fd)
            try:
                check_data_file(self.path, recreate)  # before LMDB maps it (see _files.py)
            except BaseException:
                self._release_engine_lock()
                raise
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(K.ALL_DBS) + 8,
                readonly=read_only,
                create=not read_only,
                sync=durability == "sync",
                # A write map makes unsynced commits several times cheaper; with sync it is
                # slower, so only the fast mode uses it.
                writemap=durability == "fast" and not read_only,
                readahead=False,
                # Zero the pages LMDB mallocs before it writes them: without this the unused
                # part of a page carries whatever the process's heap held there before
                # (payloads, request bodies, keys), in plain text, into data.mdb, under a
                # sealed data_dir too. (The write map of "fast" writes the map itself.)
                meminit=True,
                mode=0o600,  # data.mdb and lock.mdb: the owner's only
                max_readers=512,
                lock=True,
            )
        except lmdb.InvalidError as exc:
            self._release_engine_lock()
            raise StoreCorrupted(
                f"{self.path / 'data.mdb'} is not a valid LMDB store or is damaged ({exc}); "
                "it was left untouched: restore it from a backup or move it aside"
            ) from exc
        except lmdb.Error as exc:
            self._release_engine_lock()
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc
        self._writemap = durability == "fast" and not read_only
        self._backed = 0  # bytes of data.mdb known to have disk blocks (write map)
        self._mapped = int(self._env.info()["map_size"])
        if not read_only:
            # Reader slots left by a killed process would otherwise pin old pages forever.
            self._env.reader_check()
            write_marker(self.path, K.FORMAT_VERSION)
            try:
                # The lock file's reader table is mapped too: a reader slot on a page the
                # disk never gave a block would fault (SIGBUS) on a full disk.
                lock = self.path / "lock.mdb"
                allocate(lock, lock.stat().st_size)
                if self._writemap:
                    self._reserve(self._mapped)
            except StoreFull as exc:
                log.warning("%s: commits wait for space", exc)  # write() tries again
            except OSError as exc:
                log.warning("cannot allocate the store's files at %s: %s", self.path, exc)
        self._dbs: dict[str, Any] = {}
        self._known = frozenset(K.ALL_DBS)
        for name in K.ALL_DBS:
            try:
                self._dbs[name] = self._env.open_db(name.encode(), create=not read_only)
            except lmdb.NotFoundError:
                self._dbs[name] = None  # read-only view of a store that never wrote it
            except lmdb.Error as exc:
                self.close()
                raise StoreCorrupted(f"store at {self.path}: database {name!r}: {exc}") from exc
        #: Records carry a CRC-32 (every store created by this version does).
        self.checksums = uses_checksums(self._env, self._dbs, read_only)
        try:
            self._verify()
        except BaseException:
            self.close()
            raise

    def _verify(self) -> None:
        verify(self._env, self._dbs, self.path, checksums=self.checksums, walk=not self.read_only)

    def _release_engine_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    # -- reads -------------------------------------------------------------------------------

    def _db(self, db: str) -> Any:
        if self._closed:
            raise StoreError("store is closed")
        try:
            handle = self._dbs[db]
        except KeyError:
            raise StoreError(f"unknown database {db!r}") from None
        if handle is None and self.read_only:
            handle = self._created_since(db)
        return handle

    def _created_since(self, db: str) -> Any:
        """A database the writing engine created after this read-only open, or None.

        A follower may open the store before its leader, a newer release, adds a database
        (``logs`` came after format 5); it reads it from then on.
        """
        with _LATE_OPEN, self._gate.exclusive():  # one open at a time, no read meanwhile
            if self._dbs[db] is None:
                try:
                    self._dbs[db] = self._env.open_db(db.encode(), create=False)
                except lmdb.Error:
                    return None
            return self._dbs[db]

    def _reading(self, handle: Any, db: str, what: str, read: Callable[[Any], Any]) -> Any:
        """``read(txn)`` in a read transaction, behind the read gate; again if the map grew."""
        for _ in range(3):
            try:
                with self._gate.read(), self._env.begin(db=handle, buffers=False) as txn:
                    return read(txn)
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.Error as exc:
                raise _translate(exc, f"{what} {db}") from exc
        raise StoreError(f"{what} {db}: the map kept being resized")

    def get(self, db: str, key: bytes) -> bytes | None:
        handle = self._db(db)
        if handle is None or len(key) > _MAX_KEY:
            return None  # (LMDB would raise for a key it can never hold)
        value: bytes | None = self._reading(handle, db, "reading", lambda txn: txn.get(key))
        if value is not None and self.checksums and db != K.META:
            return checked(self.path, db, key, value)
        return value

    def get_many(self, db: str, keys: list[bytes]) -> list[bytes | None]:
        """The values of ``keys`` (None for each absent), read in one transaction.

        A page of runs found through an index reads its records this way: one read
        transaction (and one pass of the read gate) instead of one per record.
        """
        handle = self._db(db)
        if handle is None:
            return [None] * len(keys)
        values: list[bytes | None] = self._reading(
            handle,
            db,
            "reading",
            lambda txn: [txn.get(k) if len(k) <= _MAX_KEY else None for k in keys],
        )
        if self.checksums and db != K.META:
            path = self.path
            return [
                checked(path, db, k, v) if v is not None else None
                for k, v in zip(keys, values, strict=True)
            ]
        return values

    def scan(
        self,
        db: str,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[tuple[bytes, bytes]]:
        handle = self._db(db)
        if handle is None or len(prefix) > _MAX_KEY:
            return []  # no stored key is that long
        if after is not None and len(after) > _MAX_KEY:
            # LMDB cannot position on it; no stored key lies between it and its head.
            after = after[:_MAX_KEY]
        found: list[tuple[bytes, bytes]] = self._reading(
            handle, db, "scanning", lambda txn: _scan(txn.cursor(), prefix, after, reverse, limit)
        )
        if self.checksums and db != K.META:
            path = self.path
            return [(k, checked(path, db, k, v)) for k, v in found]
        return found

    def walk(self, db: str, page: int = 1000) -> Iterator[tuple[bytes, bytes | None, str | None]]:
        """Every record of ``db``, in key order, each checked on its own (``store check``).

        Yields ``(key, value, None)`` for a sound record and ``(key, None, problem)`` for
        one that fails its checksum, and goes on past it; a page LMDB cannot read ends the
        database with ``(b"", None, problem)``. Reads ``page`` records per transaction, so a
        walk of a large store never pins a running engine's old pages for long.
        """
        handle = self._db(db)
        if handle is None:
            return
        after: bytes | None = None
        while True:
            batch: list[tuple[bytes, bytes]] = []
            try:
                with self._gate.read(), self._env.begin(db=handle) as txn:
                    cur = txn.cursor()
                    more = cur.set_range(after) if after is not None else cur.first()
                    if more and after is not None and cur.key() == after:
                        more = cur.next()
                    while more and len(batch) < page:
                        batch.append((cur.key(), cur.value()))
                        more = cur.next()
            except lmdb.MapResizedError:
                self._adopt_map_size()
                continue
            except lmdb.Error as exc:
                yield b"", None, f"{db}: a page cannot be read after {after!r}: {exc}"
                return
            for key, value in batch:
                if self.checksums and db != K.META:
                    try:
                        value = checked(self.path, db, key, value)
                    except StoreCorrupted as exc:
                        yield key, None, str(exc)
                        continue
                yield key, value, None
            if len(batch) < page:
                return
            after = batch[-1][0]

    def _adopt_map_size(self) -> None:
        # Another process grew the map; a size of 0 adopts the file's current size.
        with self._gate.exclusive():
            self._env.set_mapsize(0)

    # -- writes ------------------------------------------------------------------------------

    def write(self, ops: Sequence[Op]) -> None:
        if self.read_only:
            raise StoreError(f"store at {self.path} is open read-only")
        if self._closed:
            raise StoreError("store is closed")
        dbs = self._dbs
        sums, crc, pack, meta = self.checksums, zlib.crc32, CRC.pack, K.META
        if self._writemap and self._backed < self._mapped:
            self._reserve(self._mapped)  # StoreFull until the disk has room for the map
        while True:
            # No pre-validation on this hot path: a bad op raises inside the transaction,
            # which is then aborted, so a batch is still all-or-nothing.
            txn = self._env.begin(write=True)
            try:
                for db, key, value in ops:
                    if value is None:
                        txn.delete(key, db=dbs[db])
                    elif sums and db != meta:
                        txn.put(key, value + pack(crc(value, crc(key))), db=dbs[db])
                    else:
                        txn.put(key, value, db=dbs[db])
                txn.commit()
            except lmdb.MapFullError:
                txn.abort()
                self._grow()  # StoreFull at max_map_size
                continue
            except lmdb.BadValsizeError as exc:
                # Refused for what the batch carries, not a fault of the store: a
                # WriteRejected lets the writer fail only the write that carried it.
                txn.abort()
                check_ops(ops, self._known)  # names the bad op
                raise WriteRejected(f"write refused by LMDB: {exc}") from exc
            except lmdb.Error as exc:
                txn.abort()
                raise self._full(exc) or _translate(exc, "writing") from exc
            except (KeyError, TypeError, ValueError) as exc:
                txn.abort()
                check_ops(ops, self._known)
                raise WriteRejected(f"invalid write batch: {exc}") from exc
            except BaseException:
                txn.abort()
                raise
            self.commits += 1
            self.ops_written += len(ops)
            return

    def _grow(self) -> None:
        with self._gate.exclusive():
            size = int(self._env.info()["map_size"])
            cap = self.max_map_size
            if cap and size >= cap:
                raise StoreFull(
                    f"store at {self.path} is full: its map reached max_map_size "
                    f"({cap >> 20} MiB); raise max_map_size, or compact the store"
                )
            new = min(size * 2, cap) if cap else size * 2
            if self._writemap:
                self._reserve(new)  # StoreFull, and the map stays as it is, if it cannot
            self._env.set_mapsize(new)
            self._mapped = new

    def _reserve(self, size: int) -> None:
        """Give the first ``size`` bytes of ``data.mdb`` real disk blocks (write map only).

        With a write map LMDB writes pages through the mapping of a sparse file, and a page
        the disk has no block for, on a full disk, kills the process with SIGBUS instead of
        failing the commit. So the whole map is allocated before LMDB may use it: a full
        disk is then a ``StoreFull`` here, and the writer holds its commits until space
        returns (as in ``"sync"`` mode, where LMDB writes with ``pwrite`` and gets ENOSPC).
        """
        if self._backed >= size:
            return
        try:
            allocate(self.path / "data.mdb", size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(
                    f"no space left on the disk of the store at {self.path}: its data file "
                    f"cannot grow to {size >> 20} MiB ({exc.strerror})"
                ) from None
            raise StoreError(f"cannot allocate {self.path / 'data.mdb'}: {exc}") from exc
        self._backed = size

    def _full(self, exc: Exception) -> StoreFull | None:
        """A StoreFull if a failed commit is the disk being full, else None.

        LMDB reports a write the disk could not take as an I/O error (a short ``pwrite``),
        so the free space of the data dir's file system tells a full disk from a bad one.
        """
        text = str(exc)
        try:
            st = os.statvfs(self.path)
            free = st.f_bavail * st.f_frsize
        except OSError:
            return None
        if "No space left" in text or "Disk quota" in text or free < _LOW_SPACE:
            return StoreFull(
                f"no space left on the disk of the store at {self.path} "
                f"({free >> 10} KiB free; LMDB said: {text})"
            )
        return None

    @property
    def map_size(self) -> int:
        """The current map size in bytes."""
        return int(self._env.info()["map_size"])

    def sync(self) -> None:
        if not self._closed and not self.read_only:
            self._env.sync(True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._env.close()
        finally:
            self._release_engine_lock()


def _scan(
    cur: Any, prefix: bytes, after: bytes | None, reverse: bool, limit: int | None
) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if limit is not None and limit <= 0:
        return out
    if not reverse:
        start = prefix if after is None or after < prefix else after
        if not cur.set_range(start):
            return out
        if after is not None and cur.key() == after and not cur.next():
            return out
        for key, value in cur.iternext():
            if not key.startswith(prefix):
                break
            out.append((key, value))
            if limit is not None and len(out) >= limit:
                break
        return out
    # Reverse: position on the last key <= the upper bound, then walk back.
    upper = _successor(prefix) if prefix else None
    bound = after if after is not None and (upper is None or after < upper) else upper
    if bound is None:
        positioned = cur.last()
    elif cur.set_range(bound):
        positioned = cur.prev()
    else:
        positioned = cur.last()
    if not positioned:
        return out
    for key, value in cur.iterprev():
        if after is not None and key >= after:
            continue
        if not key.startswith(prefix):
            if key < prefix:
                break
            continue
        out.append((key, value))
        if limit is not None and len(out) >= limit:
            break
    return out


def _successor(prefix: bytes) -> bytes | None:
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _translate(exc: Exception, doing: str) -> StoreError:
    if isinstance(exc, lmdb.CorruptedError | lmdb.PageNotFoundError | lmdb.InvalidError):
        return StoreCorrupted(f"store corrupted while {doing}: {exc}")
    if isinstance(exc, lmdb.DiskError):
        return StoreError(f"disk error while {doing}: {exc}")
    return StoreError(f"store error while {doing}: {exc}")
