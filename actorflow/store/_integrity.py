"""Record checksums, and the walk that refuses a damaged store at open.

LMDB keeps no page checksums, so bytes altered on disk would read back as silently wrong
data. Every record outside ``meta`` ends with a CRC-32 of its key and value, written by
``LmdbStore.write`` and checked by :func:`checked` on every read; :func:`verify` walks the
B-trees at the engine's open, so a broken page is met before anything builds on it. Stores
created before checksums keep working without them (``meta``'s ``checksums`` key says which,
:func:`uses_checksums` reads it).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lmdb

from actorflow.errors import StoreCorrupted
from actorflow.store import _keys as K

__all__ = ["CRC", "WALK_LIMIT", "checked", "uses_checksums", "verify"]

#: The 4-byte little-endian CRC-32 that ends a record.
CRC = struct.Struct("<I")
_crc32 = zlib.crc32
_SUMS_KEY = b"checksums"  # in meta: b"crc32" when every other record carries its checksum

#: Stores up to this many bytes of used pages are walked in full at open (see verify).
WALK_LIMIT = 256 << 20


def uses_checksums(env: Any, dbs: Mapping[str, Any], read_only: bool) -> bool:
    """Whether the store's records carry checksums; a new, empty store starts to.

    A store that has records but no ``checksums`` key was written before checksums: its
    records are read as they are (adding checksums would need rewriting every one).
    """
    meta = dbs[K.META]
    if meta is None:
        return False
    with env.begin(db=meta) as txn:
        sums, fresh = txn.get(_SUMS_KEY), txn.get(K.FORMAT_KEY) is None
    if sums is None and fresh and not read_only and _empty(env, dbs):
        with env.begin(write=True, db=meta) as txn:
            txn.put(_SUMS_KEY, b"crc32")
        return True
    return bool(sums == b"crc32")


def _empty(env: Any, dbs: Mapping[str, Any]) -> bool:
    with env.begin() as txn:
        return all(
            h is None or txn.stat(h)["entries"] == 0 for name, h in dbs.items() if name != K.META
        )


def checked(path: Path, db: str, key: bytes | memoryview, value: bytes | memoryview) -> bytes:
    """``value`` without its checksum, which must match (else StoreCorrupted)."""
    # Slicing bytes copies once, and that copy is both what is checked and returned
    # (this runs for every record read: a page of the runs list reads 64).
    body = value[:-4]
    if len(value) < 4 or _crc32(body, _crc32(key)) != CRC.unpack_from(value, len(body))[0]:
        raise StoreCorrupted(
            f"record {db}/{bytes(key)[:60]!r} fails its checksum: the store's data file "
            f"at {path} was altered on disk; restore it from a backup"
        )
    return body if type(body) is bytes else bytes(body)


def verify(env: Any, dbs: Mapping[str, Any], path: Path, *, checksums: bool, walk: bool) -> None:
    """Refuse a damaged store at open, before anything reads (or builds on) bad pages.

    (A data file shorter than its pages, which would make a read fault with SIGBUS, was
    refused before LMDB mapped it: ``_files.py``.) With ``walk`` (the engine's writable
    open), every database's B-tree is walked, which meets a broken page as an LMDB error,
    with each record's checksum, up to :data:`WALK_LIMIT` bytes of used pages (about 0.3 s
    per 100 MB). A larger store, or a read-only open (the CLI, a stopped engine's reads:
    they come and go), has the first and last leaf of each database checked; every record
    is still checked when read, and ``actorflow store check`` reads them all.

    Raises:
        StoreCorrupted: a page cannot be read, or a walked record fails its checksum.
    """
    info = env.info()
    needed = (int(info["last_pgno"]) + 1) * int(env.stat()["psize"])
    walk = walk and needed <= WALK_LIMIT
    name = ""
    try:
        with env.begin(buffers=True) as txn:
            for name, handle in dbs.items():
                if handle is None:
                    continue
                cur = txn.cursor(db=handle)
                if not walk:
                    if cur.first():
                        cur.last()
                elif checksums and name != K.META:
                    for key, value in cur:
                        checked(path, name, key, value)
                else:
                    for _ in cur.iternext(keys=True, values=False):
                        pass
    except lmdb.Error as exc:
        raise StoreCorrupted(
            f"{path / 'data.mdb'} is damaged (database {name!r}: {exc}); it was left "
            "untouched: restore it from a backup (actorflow store backup)"
        ) from exc
