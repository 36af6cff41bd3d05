"""A stopped engine's files, damaged for real (issue 18, items 4 and 5): truncated to any
length, emptied, deleted, bytes flipped. Each open runs in a child process, so a SIGBUS
fails the test instead of killing the suite; each is refused with a clear error, the files
are left untouched, and ``recreate_store`` starts a new store only when asked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from actorflow.store._files import MARKER
from tests import steps

ROOT = Path(__file__).resolve().parents[2]
MARK = "needle-7f3a9c"
CLI = "import sys; from actorflow.cli._main import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def stopped_store(make_engine: Callable[..., af.Engine], data_dir: Path) -> Path:
    """A store a real engine wrote (and stopped): 30 finished runs with payloads."""
    engine = make_engine(workers=1)
    engine.define("w").step("echo", steps.echo_payload)
    with engine:
        for i in range(30):
            engine.trigger("w", {"i": i, "mark": f"{MARK}-{i:03d}", "pad": "p" * 300}).result(
                timeout=30
            )
    assert (data_dir / MARKER).exists()
    return data_dir


def _open(data_dir: Path, *extra: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tests.open_child", str(data_dir), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"the open killed the process ({out.returncode}): {out.stderr}"
    return out.stdout.strip()


def _digest(data_dir: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.iterdir())
        if p.is_file() and p.name not in ("lock.mdb", "engine.lock")
    }


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("length", ["meta0", "meta", "meta+1", "half", "last-1"])
def test_a_truncated_data_file_is_refused_untouched(
    stopped_store: Path, tmp_path: Path, length: str
) -> None:
    where = _copy(stopped_store, tmp_path / "copy")
    data = where / "data.mdb"
    size = data.stat().st_size
    cut = {
        "meta0": 4096,  # the first meta page only
        "meta": 8192,  # both meta pages: LMDB would map the rest and fault on the root
        "meta+1": 12288,
        "half": size // 2,
        "last-1": size - 4096,
    }[length]
    os.truncate(data, cut)
    before = _digest(where)
    said = _open(where)
    assert said.startswith("REFUSED StoreCorrupted") and "is truncated" in said, said
    assert "restore data.mdb from a backup" in said
    assert _digest(where) == before


@pytest.mark.parametrize("how", ["emptied", "deleted", "deleted-no-marker"])
def test_a_lost_data_file_is_not_taken_for_a_new_store(
    stopped_store: Path, tmp_path: Path, how: str
) -> None:
    where = _copy(stopped_store, tmp_path / "copy")
    data = where / "data.mdb"
    if how == "emptied":
        os.truncate(data, 0)
    else:
        data.unlink()
    if how == "deleted-no-marker":  # a store made before markers: LMDB's lock.mdb shows it
        (where / MARKER).unlink()
    before = _digest(where)
    said = _open(where)
    assert said.startswith("REFUSED StoreCorrupted"), said
    assert ("is empty" if how == "emptied" else "is missing") in said
    assert "held a store" in said and "recreate_store=True" in said
    assert _digest(where) == before
    # Asked for, a new empty store starts there.
    assert _open(where, "recreate") == "OPENED 0"
    assert _open(where) == "OPENED 0"  # and is a store like any other from then on


def test_a_new_directory_is_a_new_store(tmp_path: Path) -> None:
    assert _open(tmp_path / "fresh") == "OPENED 0"
    assert (tmp_path / "fresh" / MARKER).exists()


def test_flipped_bytes_in_a_payload_are_refused_and_reported_by_store_check(
    stopped_store: Path, tmp_path: Path
) -> None:
    where = _copy(stopped_store, tmp_path / "copy")
    data = where / "data.mdb"
    raw = bytearray(data.read_bytes())
    at = raw.find(f"{MARK}-017".encode())
    assert at > 0
    raw[at : at + 6] = b"XXXXXX"  # inside a payload, in the values database
    data.write_bytes(bytes(raw))
    before = _digest(where)
    said = _open(where)
    assert said.startswith("REFUSED StoreCorrupted") and "fails its checksum" in said, said
    assert _digest(where) == before
    check = subprocess.run(
        [sys.executable, "-c", CLI, "--data-dir", str(where), "store", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 4, check.stdout + check.stderr  # problems found
    assert "PROBLEM" in check.stdout and "values" in check.stdout, check.stdout
    # Every other record is still read and counted.
    assert "30 runs" in check.stdout
