"""Sealed blob files: chunked, streamed, bound to their place; plain old files still read."""

from __future__ import annotations

import base64
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import actorflow as af
from actorflow.store import _keys as K
from actorflow.store._blobfiles import SEALED_MAGIC, BlobFiles
from actorflow.store._sealing import Codecs, SealedBlobs
from tests import shm_steps

KEY = base64.b64encode(b"\x05" * 32).decode()
OTHER = base64.b64encode(b"\x06" * 32).decode()
CHUNK = 64 << 10
HEADER = len(SEALED_MAGIC) + struct.calcsize("<BBQI")
MB = 1 << 20


def _fd(data: bytes) -> int:
    fd = os.memfd_create("blob")
    os.write(fd, data)
    return fd


def _blobs(path: Path, chain: tuple[str, ...] = ("zstd", "aesgcm"), key: str = KEY) -> SealedBlobs:
    keys = (f"k1:{key}",) if "aesgcm" in chain or not chain else ()
    return SealedBlobs(BlobFiles(path, sync=False), Codecs(chain, keys), chunk=CHUNK)


def _put(blobs: SealedBlobs, blob_id: str, data: bytes) -> None:
    fd = _fd(data)
    try:
        assert blobs.write_from(blob_id, fd, len(data))
    finally:
        os.close(fd)


def _get(blobs: SealedBlobs, blob_id: str) -> bytes | None:
    fd = os.memfd_create("out")
    try:
        size = blobs.read_into(blob_id, fd)
        return None if size is None else os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _frames(raw: bytes, crc: bool = False) -> Iterator[tuple[int, int]]:
    """(start, end) of each frame of a sealed file."""
    pos = HEADER
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        end = pos + 4 + n + (4 if crc else 0)
        yield pos, end
        pos = end


@pytest.fixture
def data() -> bytes:
    return random.Random(3).randbytes(3 * CHUNK + 1234)


@pytest.mark.parametrize("chain", [("aesgcm",), ("zstd", "aesgcm"), ("gzip", "aesgcm"), ("zstd",)])
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 1234])
def test_round_trip_in_chunks(tmp_path: Path, chain: tuple[str, ...], size: int) -> None:
    blobs = _blobs(tmp_path, chain)
    data = random.Random(size).randbytes(size // 2) + b"\0" * (size - size // 2)
    _put(blobs, "b1", data)
    raw = (tmp_path / "b1").read_bytes()
    assert raw.startswith(SEALED_MAGIC)
    if "aesgcm" in chain and size >= 64:  # compression alone keeps random bytes as they are
        assert data[:64] not in raw
    assert len(list(_frames(raw, crc="aesgcm" not in chain))) == max(1, -(-size // CHUNK))
    assert _get(blobs, "b1") == data
    got = blobs.read("b1")
    assert got is not None and bytes(got) == data
    assert blobs.size("b1") == size
    assert blobs.ids() == ["b1"]
    assert _get(blobs, "missing") is None and blobs.read("missing") is None
    assert blobs.size("missing") is None


def test_wrong_key_names_the_blob_and_the_key_id(tmp_path: Path, data: bytes) -> None:
    _put(_blobs(tmp_path), "b1", data)
    wrong = _blobs(tmp_path, key=OTHER)
    for read in (lambda: _get(wrong, "b1"), lambda: wrong.read("b1")):
        with pytest.raises(af.StoreCorrupted, match=r"blob b1 \(chunk 1 of 4\).*key id 'k1'"):
            read()


def _tampered(tmp_path: Path, data: bytes, change: str, crc: bool = False) -> SealedBlobs:
    blobs = _blobs(tmp_path, ("zstd",) if crc else ("zstd", "aesgcm"))
    _put(blobs, "b1", data)
    path = tmp_path / "b1"
    raw = bytearray(path.read_bytes())
    frames = list(_frames(bytes(raw), crc))
    (a0, a1), (b0, b1) = frames[0], frames[1]
    if change == "flip":  # one bit in the middle of the second chunk
        raw[(b0 + b1) // 2] ^= 1
    elif change == "swap":  # the first two chunks, same length, in each other's place
        first, second = raw[a0:a1], raw[b0:b1]
        assert len(first) == len(second)
        raw[a0:b1] = second + first
    elif change == "drop middle":
        del raw[b0:b1]
    elif change == "drop last":
        del raw[frames[-1][0] :]
    elif change == "cut":
        del raw[-7:]
    elif change == "append":
        raw += raw[b0:b1]
    elif change == "size":  # the header's size (and so the chunk count) made smaller
        struct.pack_into("<Q", raw, len(SEALED_MAGIC) + 2, len(data) - CHUNK)
    elif change == "plain chunk":  # a chunk replaced by one that is merely compressed
        other = SealedBlobs(BlobFiles(tmp_path / "o", sync=False), Codecs(("zstd",)))
        record = other.codecs.seal(data[CHUNK : 2 * CHUNK], b"")
        raw[b0:b1] = struct.pack("<I", len(record)) + record
    path.write_bytes(bytes(raw))
    return blobs


@pytest.mark.parametrize(
    "change",
    ["flip", "swap", "drop middle", "drop last", "cut", "append", "size", "plain chunk"],
)
def test_an_altered_file_is_refused_naming_the_blob(
    tmp_path: Path, data: bytes, change: str
) -> None:
    blobs = _tampered(tmp_path, data, change)
    with pytest.raises(af.StoreCorrupted, match="blob b1"):
        _get(blobs, "b1")
    with pytest.raises(af.StoreCorrupted, match="blob b1"):
        blobs.read("b1")


@pytest.mark.parametrize("change", ["flip", "swap", "drop middle", "cut", "append"])
def test_compressed_only_files_are_checked_too(tmp_path: Path, data: bytes, change: str) -> None:
    blobs = _tampered(tmp_path, data, change, crc=True)
    with pytest.raises(af.StoreCorrupted, match="blob b1"):
        _get(blobs, "b1")


def test_a_damaged_header_gives_the_file_length_as_size(tmp_path: Path, data: bytes) -> None:
    blobs = _blobs(tmp_path)
    _put(blobs, "b1", data)
    raw = bytearray((tmp_path / "b1").read_bytes())
    raw[len(SEALED_MAGIC) + 1] = 0xFF  # flags no version knows
    (tmp_path / "b1").write_bytes(bytes(raw))
    assert blobs.size("b1") == len(raw) != len(data)  # never the value's size: not whole
    with pytest.raises(af.StoreCorrupted, match="blob b1: a sealed file with a damaged header"):
        _get(blobs, "b1")


def test_a_file_moved_to_another_blob_id_does_not_open(tmp_path: Path, data: bytes) -> None:
    blobs = _blobs(tmp_path)
    _put(blobs, "b1", data)
    os.rename(tmp_path / "b1", tmp_path / "b2")
    with pytest.raises(af.StoreCorrupted, match=r"blob b2 .*authentication failed"):
        _get(blobs, "b2")


def test_plain_files_still_read_and_keys_alone_write_plain(tmp_path: Path, data: bytes) -> None:
    files = BlobFiles(tmp_path, sync=False)
    fd = _fd(data)
    assert files.write_from("old", fd, len(data))
    os.close(fd)
    blobs = _blobs(tmp_path)
    assert _get(blobs, "old") == data and blobs.read("old") == data
    assert blobs.size("old") == len(data)
    keys_only = _blobs(tmp_path, ())
    _put(keys_only, "new", data)  # no codec to apply: the plain, kernel-copied file
    assert (tmp_path / "new").read_bytes() == data
    _put(blobs, "sealed", data)
    assert _get(keys_only, "sealed") == data  # its key still opens what was sealed


def test_a_cancelled_or_failed_write_leaves_nothing(tmp_path: Path, data: bytes) -> None:
    blobs = _blobs(tmp_path)
    fd = _fd(data)
    calls = iter(range(100))
    assert not blobs.write_from("b1", fd, len(data), lambda: next(calls) == 2)
    with pytest.raises(af.StoreError, match="source ended after"):
        blobs.write_from("b2", fd, len(data) + CHUNK)  # the source is shorter
    os.close(fd)
    assert os.listdir(tmp_path) == []


def _large_engine(data_dir: Path, **settings: object) -> af.Engine:
    engine = af.Engine(data_dir=data_dir, workers=1, blob_write_delay=0, **settings)
    engine.define("big").step("make", shm_steps.make_big)
    return engine


def _large_run(data_dir: Path, n: int, **settings: object) -> str:
    with _large_engine(data_dir, **settings) as engine:
        run = engine.trigger("big", {"n": n})
        assert np.array_equal(run.result(timeout=60), np.arange(n, dtype=np.float64))
    return run.id


SEALING = {"codecs": ("zstd", "aesgcm"), "codec_keys": (f"k1:{KEY}",)}


def test_an_engine_turned_to_sealing_reads_its_old_plain_blobs(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    old = _large_run(data_dir, MB)  # 8 MB: a plain blob file
    new = _large_run(data_dir, MB + 1, **SEALING)
    files = {p.read_bytes()[: len(SEALED_MAGIC)] == SEALED_MAGIC for p in data_dir.glob("blobs/*")}
    assert files == {False, True}  # one plain, one sealed
    with _large_engine(data_dir, **SEALING) as again:
        assert np.array_equal(again.run(old).result(timeout=30), np.arange(MB, dtype=np.float64))
        assert np.array_equal(
            again.run(new).result(timeout=30), np.arange(MB + 1, dtype=np.float64)
        )


@pytest.mark.parametrize("where", ["middle", "header"])
def test_an_engine_reading_a_tampered_blob_gets_store_corrupted(tmp_path: Path, where: str) -> None:
    data_dir = tmp_path / "store"
    run_id = _large_run(data_dir, MB, **SEALING)
    (path,) = data_dir.glob("blobs/*")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 if where == "middle" else len(SEALED_MAGIC) + 1] ^= 0x40
    path.write_bytes(bytes(raw))
    with _large_engine(data_dir, **SEALING) as again:  # a damaged blob never stops a start
        with pytest.raises(af.StoreCorrupted, match=f"blob {path.name}"):
            again.run(run_id).result(timeout=30)
        # Loading it into a segment for a worker fails the same way, and frees the segment.
        core = again._core
        assert core is not None and core.blobs is not None
        value = core.store.get(K.VALUES, K.step_key(run_id, "make"))
        assert value is not None
        with pytest.raises(af.StoreCorrupted, match=f"blob {path.name}"):
            core.blobs.wire(value, 1)
        core.blobs.end_task(1)
        assert again.statistics()["shm"]["in_use"] == 0
