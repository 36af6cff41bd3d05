"""The portable fallbacks of Linux-only facilities (actorflow/_platform.py), forced on Linux.

CI cannot run macOS, so each fallback is taken here on purpose: in a child process through
``ACTORFLOW_FORCE_PORTABLE`` (read at import), or in this one by patching the flag the code
reads at call time.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actorflow as af
from actorflow import _platform
from actorflow.config import EngineConfig
from actorflow.store import LmdbStore, _space
from actorflow.store import _keys as K
from actorflow.store._blobfiles import BlobFiles, segment_read, segment_write
from actorflow.store._sealing import Codecs, SealedBlobs
from actorflow.workers import _shm
from actorflow.workers._shm import SegmentLog
from tests.conftest import process_gone, wait_until
from tests.runtime.test_recovery import child, finish, result_line

ROOT = Path(__file__).resolve().parents[1]


def _flags(force: str) -> dict[str, Any]:
    code = (
        "import json, warnings; warnings.simplefilter('error')\n"
        "from actorflow import _platform as p\n"
        "print(json.dumps({n: getattr(p, n) for n in "
        "('PDEATHSIG', 'SHM_FILES', 'FALLOCATE', 'FORKSERVER')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ACTORFLOW_FORCE_PORTABLE": force},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode:
        return {"error": out.stderr}
    flags: dict[str, Any] = json.loads(out.stdout)
    return flags


def test_each_fallback_can_be_forced_and_a_wrong_name_is_named() -> None:
    assert _flags("") == dict.fromkeys(("PDEATHSIG", "SHM_FILES", "FALLOCATE", "FORKSERVER"), True)
    assert _flags("all") == dict.fromkeys(
        ("PDEATHSIG", "SHM_FILES", "FALLOCATE", "FORKSERVER"), False
    )
    assert _flags("shm, Fallocate") == {
        "PDEATHSIG": True,
        "SHM_FILES": False,
        "FALLOCATE": False,
        "FORKSERVER": True,
    }
    bad = _flags("pdeathsig,dev-shm")
    assert "ACTORFLOW_FORCE_PORTABLE: unknown 'dev-shm' ignored" in bad["error"]
    assert "pdeathsig, shm, fallocate, forkserver" in bad["error"]


# -- forkserver ------------------------------------------------------------------------------


def _worker_view(ctx: Any) -> list[Any]:
    from tests import preload_probe

    return [os.getppid(), os.getpid() == preload_probe.IMPORTED_IN]


def test_without_forkserver_workers_spawn_and_each_imports_preload_itself(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert EngineConfig().start_method == "forkserver"  # Linux
    monkeypatch.setattr(_platform, "FORKSERVER", False)
    assert EngineConfig().start_method == "spawn"
    assert "tests.preload_probe" not in sys.modules  # so a worker cannot have inherited it
    engine = make_engine(preload=("tests.preload_probe",))
    engine.define("look").step("look", _worker_view)
    with engine:
        assert engine.config.start_method == "spawn"
        parent, imported_there = engine.trigger("look").result(timeout=60)
    assert parent == os.getpid()  # spawned by the engine, not by a forkserver
    assert imported_there  # preload ran in the worker itself


def test_a_start_method_the_platform_lacks_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_platform, "start_methods", lambda: ("spawn", "fork"))
    with pytest.raises(af.ConfigError, match=r"start_method: 'forkserver' is not available"):
        EngineConfig(start_method="forkserver")
    assert EngineConfig(start_method="spawn").start_method == "spawn"


# -- workers dying with the engine -----------------------------------------------------------


@pytest.mark.crash
@pytest.mark.parametrize(
    ("start_method", "force"),
    [("spawn", "pdeathsig"), ("forkserver", "pdeathsig"), ("forkserver", "")],
)
def test_a_worker_exits_when_its_engine_is_killed_though_its_pipe_stays_open(
    tmp_path: Path, start_method: str, force: str
) -> None:
    """No parent-death signal (forced, or a forkserver worker's, which watches the
    forkserver), and no hang-up of the pipe: a process the engine forked keeps its end. The
    worker still exits, by watching the engine's pid."""
    out = tmp_path / "worker.pid"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.platform_child", str(tmp_path / "s"), str(out), start_method],
        cwd=ROOT,
        env={**os.environ, "ACTORFLOW_FORCE_PORTABLE": force},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            name, pid = line.split()
            pids[name] = int(pid)
            if name == "WORKER":
                break
        assert set(pids) == {"HOLDER", "WORKER"}, proc.stderr.read() if proc.stderr else ""
        proc.kill()
        proc.wait(30)
        wait_until(lambda: process_gone(pids["WORKER"]), timeout=30)
        assert not process_gone(pids["HOLDER"])  # the pipe was still open: no hang-up
    finally:
        proc.kill()
        proc.wait(30)
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- shared memory without /dev/shm ----------------------------------------------------------


def _segments(token: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"af_{token}_"))


@pytest.mark.crash
def test_without_a_shm_directory_a_killed_engines_segments_are_swept_at_the_next_start(
    tmp_path: Path,
) -> None:
    """Segments cannot be listed (forced): the engine records their names beside the store,
    and reads and writes them through mappings. A value recorded before the SIGKILL is saved
    from its segment at the next start, then every segment is unlinked."""
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "shm", force_portable="shm"))
    assert code == -signal.SIGKILL, (out, err)
    store = LmdbStore(data_dir, read_only=True)
    try:
        token = (store.get(K.META, K.BLOB_TOKEN_KEY) or b"").decode()
        [(_, record)] = store.scan(K.BLOBS, b"b\x00")
        assert store.blobs.ids() == []  # the segment is the only copy
    finally:
        store.close()
    left = _segments(token)  # this process may list /dev/shm: the check is not forced
    assert json.loads(record)["seg"] in left
    recorded = SegmentLog(data_dir / "shm-segments").read()
    assert set(left) <= set(recorded)
    code, out, err = finish(child(data_dir, log, "shm", force_portable="shm"))
    assert code == 0, err
    recovered = next(line for line in out.splitlines() if line.startswith("RECOVERED"))
    saved, lost, swept = (int(x) for x in recovered.split()[1:])
    assert (saved, lost) == (1, 0) and swept >= len(left)
    assert float(result_line(out)) == float(np.arange(6_250_000, dtype=np.float64).sum())
    assert _segments(token) == []
    assert not (data_dir / "shm-segments").exists()  # a clean stop leaves no names


def test_the_segment_log_keeps_only_live_names_and_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "shm-segments"
    log = SegmentLog(path)
    for i in range(1000):
        log.add(f"af_t_1_{i}")
        if i % 10:
            log.remove(f"af_t_1_{i}")
    log.remove("af_t_1_never")  # not recorded: nothing to do
    assert sorted(SegmentLog(path).read()) == sorted(f"af_t_1_{i}" for i in range(0, 1000, 10))
    assert len(path.read_text().splitlines()) < 400  # rewritten as dead lines pile up
    log.reset()
    assert not path.exists() and SegmentLog(path).read() == []


def test_segments_are_not_listed_or_measured_without_a_shm_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"af_feedf00d_{os.getpid()}_1"
    fd = _shm.create_segment(name, 1 << 16)
    os.close(fd)
    try:
        assert _shm.store_segments("feedf00d") == [name]
        assert _shm.shm_space()[0] > 0
        monkeypatch.setattr(_platform, "SHM_FILES", False)
        assert _shm.shm_space() == (0, 0)  # the budget is shm_max_bytes alone
        assert _shm.store_segments("feedf00d") == []  # nothing to list, no log
        log = SegmentLog(tmp_path / "log")
        log.add(name)
        assert _shm.store_segments("feedf00d", log) == [name]
        assert _shm.store_segments("0ther000", log) == []
    finally:
        _shm.unlink_segment(name)


@pytest.mark.parametrize("sealed", [False, True])
def test_without_file_io_on_segments_blobs_are_copied_through_mappings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sealed: bool
) -> None:
    """macOS's shared memory takes no ``read``, ``write`` or ``sendfile``: simulated on real
    segments, every copy between a segment and a blob file still arrives whole."""
    size = 3 * (1 << 20) + 5
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    names = [f"af_feedf00d_{os.getpid()}_{i}" for i in (2, 3)]
    src, dst = (_shm.create_segment(n, size) for n in names)
    made = [(src, names[0]), (dst, names[1])]
    segments = {src, dst}
    pread, pwrite = os.pread, os.pwrite

    def refuse(*_: Any) -> Any:
        raise OSError(errno.ENXIO, "no file I/O on a segment")

    monkeypatch.setattr(_platform, "SHM_FILES", False)
    monkeypatch.setattr(os, "sendfile", refuse)
    monkeypatch.setattr(os, "pread", lambda fd, *a: refuse() if fd in segments else pread(fd, *a))
    monkeypatch.setattr(os, "pwrite", lambda fd, *a: refuse() if fd in segments else pwrite(fd, *a))
    files = BlobFiles(tmp_path / "blobs", sync=False)
    blobs: Any = SealedBlobs(files, Codecs(("zstd",), ()), chunk=1 << 20) if sealed else files
    try:
        segment_write(src, data)
        assert segment_read(src, 10, size - 10) == data[-10:]
        assert segment_read(src, 100, size - 10) == data[-10:]  # short at the end, as pread
        assert blobs.write_from("b1", src, size)
        assert blobs.read_into("b1", dst) == size
        assert segment_read(dst, size) == data
        assert bytes(blobs.read("b1")) == data
    finally:
        for fd, name in made:
            os.close(fd)
            _shm.unlink_segment(name)


# -- reserving without posix_fallocate --------------------------------------------------------


def test_a_segment_reserved_by_writing_fails_with_enospc_not_later_with_sigbus() -> None:
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as on a full tmpfs
    try:
        with pytest.raises(OSError) as caught:
            _shm._reserve(full, 1 << 20)
        assert caught.value.errno == errno.ENOSPC
    finally:
        os.close(full)
    r, w = os.pipe()  # no positional writes (ESPIPE), as macOS's shared memory has none
    try:
        _shm._reserve(w, 1 << 20)  # nothing to reserve there: not an error
    finally:
        os.close(r)
        os.close(w)


def test_filling_holes_allocates_a_sparse_file_without_changing_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_platform, "FALLOCATE", False)
    path = tmp_path / "data.mdb"
    mb = 1 << 20
    with open(path, "wb") as f:
        f.truncate(8 * mb)  # all hole
        f.seek(3 * mb)
        f.write(b"\x01" * mb)  # data in the middle
        f.seek(8 * mb - 10)
        f.write(b"tail")
    before = path.read_bytes()
    assert os.stat(path).st_blocks * 512 < 3 * mb
    _space.allocate(path, 12 * mb)  # and grow past the end
    st = os.stat(path)
    assert st.st_size == 12 * mb
    assert st.st_blocks * 512 >= 12 * mb  # every block allocated
    after = path.read_bytes()
    assert after[: len(before)] == before and after[len(before) :] == bytes(4 * mb)
    _space.allocate(path, 6 * mb)  # smaller than the file: nothing to do, nothing cut
    assert path.read_bytes() == after
