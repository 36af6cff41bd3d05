"""What only the LMDB store does: files, growth, locking, read-only access, corruption."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from actorflow.errors import StoreCorrupted, StoreError
from actorflow.store import LmdbStore, ensure_format
from actorflow.store import _keys as K


def test_data_survives_reopen(tmp_path: Path) -> None:
    s = LmdbStore(tmp_path / "db")
    s.write([(K.RUNS, b"a", b"1")])
    s.close()
    s = LmdbStore(tmp_path / "db")
    assert s.get(K.RUNS, b"a") == b"1"
    s.close()


@pytest.mark.parametrize("durability", ["sync", "fast"])
def test_map_grows_on_demand(tmp_path: Path, durability: str) -> None:
    s = LmdbStore(tmp_path / "db", map_size=1 << 20, durability=durability)
    start = s.map_size
    value = os.urandom(64 * 1024)
    for i in range(64):  # 4 MiB into a 1 MiB map, in batches
        s.write([(K.VALUES, f"k{i:03d}-{j}".encode(), value) for j in range(1)])
    assert s.map_size > start
    assert all(s.get(K.VALUES, f"k{i:03d}-0".encode()) == value for i in range(64))
    # one batch larger than the whole current map still lands, whole
    big = [(K.VALUES, f"big{j}".encode(), value) for j in range(200)]
    s.write(big)
    assert s.get(K.VALUES, b"big199") == value
    s.close()


def test_second_writer_is_refused(tmp_path: Path) -> None:
    s = LmdbStore(tmp_path / "db")
    with pytest.raises(StoreError, match="in use by another engine"):
        LmdbStore(tmp_path / "db")
    s.close()
    LmdbStore(tmp_path / "db").close()  # released on close


_READER = """
import sys
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
r = LmdbStore(sys.argv[1], read_only=True)
print(r.get(K.RUNS, b"a"), len(r.get(K.VALUES, b"v15") or b""))
try:
    r.write([(K.RUNS, b"b", b"2")])
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_read_only_in_another_process_sees_writes_and_growth(tmp_path: Path) -> None:
    # LMDB allows one environment per file per process: readers are other processes (the CLI).
    w = LmdbStore(tmp_path / "db", map_size=1 << 20)
    w.write([(K.RUNS, b"a", b"1")])
    value = os.urandom(256 * 1024)
    w.write([(K.VALUES, f"v{i}".encode(), value) for i in range(16)])  # grows the map
    out = subprocess.run(
        [sys.executable, "-c", _READER, str(tmp_path / "db")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    w.close()
    assert out[0] == f"b'1' {len(value)}"
    assert out[1].startswith("StoreError") and "read-only" in out[1]


def test_read_only_without_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no actorflow store"):
        LmdbStore(tmp_path / "missing", read_only=True)


def test_corrupted_file_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    s = LmdbStore(tmp_path / "db")
    s.write([(K.RUNS, b"a", b"1")])
    s.close()
    data = tmp_path / "db" / "data.mdb"
    garbage = b"this is not an lmdb file at all" * 1000
    data.write_bytes(garbage)
    with pytest.raises(StoreCorrupted, match="not a valid LMDB store"):
        LmdbStore(tmp_path / "db")
    assert data.read_bytes() == garbage  # nothing overwritten: the user can still recover it
    LmdbStore(tmp_path / "other").close()  # the failed open released its lock


def test_unreadable_format_record(tmp_path: Path) -> None:
    s = LmdbStore(tmp_path / "db")
    s.write([(K.META, K.FORMAT_KEY, b"\xff\xfe")])
    with pytest.raises(StoreCorrupted, match="format"):
        ensure_format(s)
    s.close()


def test_key_too_long_is_refused_whole(tmp_path: Path) -> None:
    s = LmdbStore(tmp_path / "db")
    with pytest.raises(StoreError, match="key too long"):
        s.write([(K.RUNS, b"ok", b"1"), (K.RUNS, b"k" * 600, b"1")])
    assert s.get(K.RUNS, b"ok") is None
    s.close()


def test_a_new_store_is_the_owners_only(tmp_path: Path) -> None:
    """Payloads, outputs and state live here: nobody else may read or list them."""
    path = tmp_path / "deep" / "store"
    store = LmdbStore(path)
    try:
        store.write([(K.RUNS, b"r", b"Jtrue")])
    finally:
        store.close()
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    for name in ("data.mdb", "lock.mdb", "engine.lock"):
        assert stat.S_IMODE((path / name).stat().st_mode) & 0o077 == 0, name
