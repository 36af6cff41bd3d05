"""Storage faults: a full disk, a map at max_map_size, truncated or altered data files, a
store of a newer format. In each, nothing acknowledged is lost and nothing wrong is read."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from tests import steps

ROOT = Path(__file__).resolve().parents[2]


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs unshare -rm (a private tmpfs)")
@pytest.mark.parametrize(
    ("durability", "force"), [("sync", ""), ("fast", ""), ("fast", "fallocate")]
)
def test_disk_full_refuses_new_work_keeps_the_rest_and_recovers(
    tmp_path: Path, durability: str, force: str
) -> None:
    """Both durabilities: "fast" writes through a write map, where a page of a sparse file
    on a full disk used to kill the engine with SIGBUS (the child's exit status -7). Also
    without ``posix_fallocate`` (forced, as on macOS): the map's holes are filled instead."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    out = subprocess.run(
        ["unshare", "-rm", sys.executable, "-m", "tests.disk_child", str(mount), durability],
        cwd=ROOT,
        env={**os.environ, "ACTORFLOW_FORCE_PORTABLE": force},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    lines = dict(
        line.split(" ", 1) if " " in line else (line, "") for line in out.stdout.splitlines()
    )
    assert lines["FIRST"] == "12"
    assert "FULL" in lines
    # new work is refused with an error that says what and where
    assert lines["REFUSED"].startswith("no space left on the disk of the store at ")
    assert "refuses new work until space returns" in lines["REFUSED"]
    assert lines["READ"] == "completed"  # reads still work
    assert lines["HEALTH"].startswith("full, commits wait for space")
    # the trigger that raced the full disk was held, not dropped: it completes
    assert lines["RESULT"].startswith("[13]")
    assert lines["AFTER"] == "15"
    held = int(lines["RESULT"].split()[-1])
    assert lines["STORED"] == f"{2 + held} ['completed']"
    # logged once when commits start waiting, once when they succeed again
    assert out.stderr.count("commits wait for space and are retried") == 1
    assert out.stderr.count("store writable again") == 1


def test_map_full_at_max_map_size(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(workers=1, map_size=1 << 20, max_map_size=2 << 20)
    engine.define("w").step("a", steps.echo_payload)
    got: dict[str, Any] = {"done": []}

    def fill() -> None:
        try:
            for i in range(1000):
                got["done"].append(engine.trigger("w", {"i": i, "pad": "z" * 50_000}).id)
        except af.StoreError as exc:
            got["error"] = exc

    with engine:
        thread = threading.Thread(target=fill)
        thread.start()
        for _ in range(6000):
            if not engine.health()["checks"]["store"]["ok"] or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert not engine.health()["checks"]["store"]["ok"]
        with pytest.raises(af.StoreFull, match="max_map_size"):
            engine.trigger("w", {"i": -1})
        acknowledged = list(got["done"])
        assert acknowledged and engine.inspect(acknowledged[0]).status is not None
    # stopping gives the held trigger a clear error (its run was never acknowledged)
    thread.join(timeout=30)
    assert isinstance(got["error"], af.StoreFull)
    bigger = make_engine(workers=1, map_size=1 << 20, max_map_size=64 << 20)
    bigger.define("w").step("a", steps.echo_payload)
    with bigger:
        for run_id in acknowledged:  # every acknowledged run is there and finishes
            assert bigger.run(run_id).result(timeout=60)["pad"] == "z" * 50_000
        assert bigger.trigger("w", {"i": 0}).result(timeout=30) == {"i": 0}


def _store_with_runs(path: Path) -> dict[bytes, bytes]:
    store = LmdbStore(path)
    records = {}
    for i in range(300):
        key, value = b"run%05d" % i, hashlib.sha256(b"%d" % i).digest() * 8
        store.write([(K.RUNS, key, value), (K.STEPS, key + b"\x00s", b"x" * (i % 50))])
        records[key] = value
    store.close()
    return records


def test_truncated_data_file_is_refused_at_open(tmp_path: Path) -> None:
    _store_with_runs(tmp_path / "s")
    data = tmp_path / "s" / "data.mdb"
    os.truncate(data, data.stat().st_size // 2)
    before = data.read_bytes()
    with pytest.raises(af.StoreCorrupted, match="is truncated"):
        LmdbStore(tmp_path / "s")
    engine = af.Engine(data_dir=tmp_path / "s", workers=1)
    with pytest.raises(af.StoreCorrupted, match=r"restore data\.mdb from a backup"):
        engine.start()
    assert data.read_bytes() == before  # left untouched


def test_altered_bytes_anywhere_are_detected_never_read_silently(tmp_path: Path) -> None:
    """Alter 16 bytes in every 4 KB page of the data file in turn, one copy per page: each
    copy is refused at open, or reads back exactly what was written (the bytes hit unused
    space). No copy may return a changed record."""
    records = _store_with_runs(tmp_path / "s")
    original = (tmp_path / "s" / "data.mdb").read_bytes()
    pages = len(original) // 4096
    refused = clean = 0
    for page in range(pages):
        where = tmp_path / f"p{page}"
        where.mkdir()
        damaged = bytearray(original)
        offset = page * 4096 + (page * 997) % 4000 + 16
        damaged[offset : offset + 16] = bytes(b ^ 0x5A for b in damaged[offset : offset + 16])
        (where / "data.mdb").write_bytes(bytes(damaged))
        try:
            store = LmdbStore(where)
        except af.StoreCorrupted:
            refused += 1
            continue
        try:
            assert dict(store.scan(K.RUNS)) == records, f"page {page}: a record changed"
            clean += 1
        finally:
            store.close()
        shutil.rmtree(where)
    assert refused + clean == pages and refused >= pages // 4


def test_a_store_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "s")
    store.write([(K.META, K.FORMAT_KEY, b"99")])
    store.close()
    engine = af.Engine(data_dir=tmp_path / "s", workers=1)
    with pytest.raises(af.StoreError, match="store format 99 is newer than this actorflow"):
        engine.start()
    assert not engine.running
    reopened = LmdbStore(tmp_path / "s", read_only=True)
    assert reopened.get(K.META, K.FORMAT_KEY) == b"99"  # not rewritten
    reopened.close()
