"""The data directory's files, checked before LMDB maps them.

LMDB trusts its files: it maps ``data.mdb`` and reads pages through the mapping, so a file
shorter than its pages kills the process with SIGBUS at the first read of a missing page (at
open, if the root pages are the missing ones), and an emptied or deleted ``data.mdb`` is
silently initialised as a new, empty store. Both are decided here, from the file itself,
before ``lmdb.open``:

- **Truncation.** ``data.mdb`` starts with two meta pages (``MDB_meta``: magic, version,
  page size, the last page number used, the transaction id). The newer one says how many
  pages the file must hold; a shorter file is :class:`~actorflow.errors.StoreCorrupted`
  ("... is truncated"), and it is left untouched.
- **A store that existed.** A writable open that recorded the store's format writes
  ``actorflow.json`` (the marker: when the store was made and by what) beside it. A data
  directory whose marker (or LMDB's ``lock.mdb``, for stores made before markers) shows that
  a store lived there, but whose ``data.mdb`` is missing or empty, is refused: its runs
  would otherwise vanish without a word. ``recreate=True`` (``Engine(recreate_store=True)``)
  starts a new store there on purpose.

The layout read here is LMDB's on-disk format version 1 (``MDB_DATA_VERSION``), the one the
``lmdb`` package has written since LMDB 0.9; any other version is left to LMDB to judge.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
from pathlib import Path

import orjson

from actorflow.errors import StoreCorrupted

__all__ = ["MARKER", "check_data_file", "write_marker"]

#: The marker file's name in the data directory.
MARKER = "actorflow.json"
_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
# Offsets in a meta page (64-bit LMDB): after the 16-byte page header, MDB_meta holds
# mm_magic (u32) and mm_version (u32), mm_address, mm_mapsize, mm_dbs[2] (48 bytes each:
# the page size is kept in the free list's md_pad), mm_last_pg and mm_txnid.
_META = struct.Struct("<II8x8xI44x48xQQ")
_META_AT = 16
_MIN_PAGE = 512


def _restore_hint(data: Path) -> str:
    return (
        f"it was left untouched: restore {data.name} from a backup (actorflow store backup), "
        "or move the directory aside"
    )


def check_data_file(path: Path, recreate: bool = False) -> bool:
    """Check ``path/data.mdb`` before LMDB opens it.

    Args:
        path: the data directory.
        recreate: a missing or empty ``data.mdb`` may become a new store even though the
            directory shows that one existed.

    Returns:
        True if ``data.mdb`` holds a store (False: LMDB will create a new one).

    Raises:
        StoreCorrupted: the file is truncated, or a store that existed has lost its file.
    """
    data = path / "data.mdb"
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        size = -1
    if size <= 0:
        existed = _existed(path)
        if existed is not None and not recreate:
            what = "is missing" if size < 0 else "is empty"
            raise StoreCorrupted(
                f"{data} {what}, but {path} held a store ({existed}): opening it would start "
                f"an empty store and lose every run silently; {_restore_hint(data)}; to start "
                "a new, empty store there on purpose, pass recreate_store=True "
                "(ACTORFLOW_RECREATE_STORE=1)"
            )
        return False
    with open(data, "rb") as f:
        head = f.read(_META_AT + _META.size)
        if len(head) < _META_AT + _META.size:
            return True  # not even a meta page: LMDB says "not an LMDB file"
        magic, version, psize, last, txnid = _META.unpack_from(head, _META_AT)
        if magic != _MAGIC or version != _DATA_VERSION or not _MIN_PAGE <= psize <= 1 << 16:
            return True  # not LMDB's format 1: LMDB judges it (MDB_INVALID, or opens it)
        if size < 2 * psize:
            raise StoreCorrupted(
                f"{data} is truncated: {size} bytes, less than its two meta pages "
                f"({2 * psize}); {_restore_hint(data)}"
            )
        f.seek(psize)
        other = f.read(_META_AT + _META.size)
    metas = [(txnid, last)]
    magic2, version2, _, last2, txnid2 = _META.unpack_from(other, _META_AT)
    if magic2 == _MAGIC and version2 == _DATA_VERSION:
        metas.append((txnid2, last2))
    _, last_page = max(metas)  # the newer meta page is the one LMDB uses
    needed = (last_page + 1) * psize
    if size < needed:
        raise StoreCorrupted(
            f"{data} is truncated: {size} bytes, but its pages need {needed}; {_restore_hint(data)}"
        )
    return True


def _existed(path: Path) -> str | None:
    """What shows that a store lived in ``path`` (None: nothing)."""
    marker = path / MARKER
    try:
        info = orjson.loads(marker.read_bytes())
    except FileNotFoundError:
        info = None
    except (OSError, orjson.JSONDecodeError):
        return f"its marker {MARKER} is there"
    if isinstance(info, dict):
        return f"its marker {MARKER} says it was created {info.get('created', '?')}"
    if info is not None:
        return f"its marker {MARKER} is there"
    if (path / "lock.mdb").exists():
        return "LMDB's lock.mdb is there"
    return None


def write_marker(path: Path, store_format: int) -> None:
    """Leave the marker that says a store lives in ``path`` (once; atomic)."""
    marker = path / MARKER
    if marker.exists():
        return
    doc = {
        "store": "actorflow",
        "format": store_format,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "note": "data.mdb holds this store; do not delete it (see docs/operations.md)",
    }
    tmp = path / f".{MARKER}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, marker)
