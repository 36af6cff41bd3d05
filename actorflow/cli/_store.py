"""``actorflow store check|compact|backup``: look after the LMDB store.

- ``check`` opens the store read-only (an engine may be running) and verifies what the
  engine relies on: the format; that every record of every database passes its checksum,
  unseals with the configured codecs and decodes (each bad record named, the check going on
  past it); that the status and workflow indexes agree with the run records; that steps,
  values, history, timers and blobs belong to runs that exist; and that recorded blobs have
  their files. Exit status 1 if it found a problem, each named.
- ``backup PATH`` writes a consistent copy while an engine runs: LMDB copies from one read
  transaction (a snapshot), compacted; then the large values' files it refers to.
- ``compact`` rewrites the store without its free pages; only while no engine holds it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from actorflow.errors import ActorflowError, StoreError

__all__ = ["add_parsers", "backup", "check", "compact"]

_SEP = b"\x00"


def _open(data_dir: Path, sealed: bool = True) -> Any:
    """The store read-only: unsealed with the configured codecs, or raw (to copy it)."""
    from actorflow.cli._main import _read_only
    from actorflow.store import LmdbStore

    return _read_only(str(data_dir)) if sealed else LmdbStore(data_dir, read_only=True)


def _run_of(key: bytes) -> str:
    return key.split(_SEP, 1)[0].decode(errors="replace")


#: Databases whose every value is a JSON record (``store/_keys.py``).
_JSON_DBS = ("runs", "steps", "approvals", "definitions", "schedules", "timers")


def _records(
    store: Any, db: str, problems: list[str], counts: dict[str, int]
) -> Iterator[tuple[bytes, bytes]]:
    """Every sound record of ``db``, read one by one (checksum, unsealing, format).

    One bad record is named in ``problems`` and the check goes on past it.
    """
    from actorflow.store._sealing import SEALED_DBS, record_aad

    inner = getattr(store, "inner", store)
    codecs = getattr(store, "codecs", None)
    n = 0
    for key, value, problem in inner.walk(db):
        if problem is not None or value is None:
            problems.append(problem or f"{db}: {key!r} has no value")
            continue
        where = f"{db} {key.decode(errors='replace')[:80]!r}"
        try:
            if codecs is not None and db in SEALED_DBS:
                value = codecs.open(value, record_aad(db, key), where)
            problem = _content_problem(db, value)
        except ActorflowError as exc:
            problem = str(exc)
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        n += 1
        yield key, value
    counts[db] = n


def _content_problem(db: str, value: bytes) -> str | None:
    """What is wrong with a record's decoded bytes (None: nothing).

    As far as they can be read without the user's code: pickled values are only checked to
    be pickles.
    """
    from actorflow.store import _keys as K
    from actorflow.store._codec import TAG_BLOB, TAG_JSON, TAG_PICKLE, unpack_large

    try:
        if db in _JSON_DBS:
            orjson.loads(value)
        elif db == K.VALUES:
            tag = value[:1]
            if tag == bytes([TAG_JSON]):
                orjson.loads(value[1:])
            elif tag == bytes([TAG_BLOB]):
                unpack_large(value)
            elif tag != bytes([TAG_PICKLE]) or value[1:2] != b"\x80":
                return f"not an encoded value (tag {tag!r})"
    except (orjson.JSONDecodeError, ValueError, IndexError) as exc:
        return f"cannot be decoded: {exc}"
    return None


def check(data_dir: Path) -> dict[str, Any]:
    """Check the store; returns counts and the problems found (empty when healthy).

    Every record of every database is read and checked on its own (checksum, unsealing,
    format), then the records are checked against each other.
    """
    from actorflow.store import _keys as K
    from actorflow.store._protocol import ensure_format

    problems: list[str] = []
    counts: dict[str, int] = {}
    store = _open(data_dir)
    try:
        version = ensure_format(store)
        runs: dict[str, dict[str, Any]] = {}
        for key, raw in _records(store, K.RUNS, problems, counts):
            runs[key.decode(errors="replace")] = orjson.loads(raw)
        indexed: set[tuple[str, str]] = set()
        for key, _ in _records(store, K.INDEX, problems, counts):
            kind, _, rest = key.partition(_SEP)
            value, _, run_id_b = rest.partition(_SEP)
            run_id = run_id_b.decode(errors="replace")
            indexed.add((kind.decode(), run_id))
            rec = runs.get(run_id)
            if rec is None:
                problems.append(f"index: {key!r} names run {run_id}, which does not exist")
            elif kind == b"s" and value.decode() != rec.get("status"):
                problems.append(
                    f"index: run {run_id} is indexed as {value.decode()!r} but its record "
                    f"says {rec.get('status')!r}"
                )
            elif kind == b"w" and value.decode() != rec.get("workflow"):
                problems.append(f"index: run {run_id} is indexed under another workflow")
        for run_id in runs:
            for index in ("s", "w"):
                if (index, run_id) not in indexed:
                    what = "status" if index == "s" else "workflow"
                    problems.append(f"index: run {run_id} is missing from the {what} index")
        for db, what in (
            (K.STEPS, "step"),
            (K.HISTORY, "history record"),
            (K.VALUES, "value"),
        ):
            for key, _ in _records(store, db, problems, counts):
                run_id = _run_of(key)
                if run_id not in runs:
                    problems.append(f"{db}: a {what} of run {run_id}, which does not exist")
        for key, _ in _records(store, K.TIMERS, problems, counts):
            _, run_id, name = K.decode_timer_key(key)
            if run_id and run_id not in runs:
                problems.append(f"timers: {name!r} of run {run_id}, which does not exist")
        for db in (K.STATE, K.EVENTS, K.APPROVALS, K.IDEMPOTENCY, K.DEFINITIONS, K.SCHEDULES):
            for _ in _records(store, db, problems, counts):
                pass  # reading (checksum, unsealing, format) each is the check
        blobs_dir = data_dir / "blobs"
        counts["blobs"] = 0
        for key, raw in _records(store, K.BLOBS, problems, {}):
            if not key.startswith(b"b" + _SEP):
                continue
            counts["blobs"] += 1
            blob_id = key[2:].decode(errors="replace")
            rec = orjson.loads(raw)
            run = runs.get(str(rec.get("run", "")))
            if not (blobs_dir / blob_id).exists() and (
                run is None or run.get("status") != "running"
            ):
                problems.append(
                    f"blobs: {blob_id} (run {rec.get('run')}) is recorded but its file is "
                    "missing (the engine writes it from shared memory while the run lives)"
                )
    finally:
        store.close()
    return {"ok": not problems, "format": version, "counts": counts, "problems": problems}


def backup(data_dir: Path, target: Path) -> dict[str, Any]:
    """Write a consistent, compacted copy of the store (and its blob files) to ``target``."""
    if target.exists() and any(target.iterdir()):
        raise StoreError(f"backup: {target} exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    store = _open(data_dir, sealed=False)
    began = time.monotonic()
    try:
        # One read transaction: a snapshot of a running engine's store, never a torn one.
        store._env.copy(str(target), compact=True)
    finally:
        store.close()
    copied = 0
    source_blobs = data_dir / "blobs"
    if source_blobs.is_dir():
        (target / "blobs").mkdir()
        for f in source_blobs.iterdir():
            if f.is_file() and not f.name.startswith("."):
                shutil.copy2(f, target / "blobs" / f.name)
                copied += 1
    return {
        "path": str(target),
        "bytes": (target / "data.mdb").stat().st_size,
        "blob_files": copied,
        "seconds": round(time.monotonic() - began, 3),
    }


def compact(data_dir: Path) -> dict[str, Any]:
    """Rewrite the store without free pages; refused while an engine holds it."""
    lock_path = data_dir / "engine.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreError(
                f"compact: an engine holds {data_dir}; stop it first (or use `actorflow store "
                "backup PATH`, which writes a compacted copy while it runs)"
            ) from None
        before = (data_dir / "data.mdb").stat().st_size
        tmp = data_dir / ".compact"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        store = _open(data_dir, sealed=False)
        try:
            store._env.copy(str(tmp), compact=True)
        finally:
            store.close()
        os.replace(tmp / "data.mdb", data_dir / "data.mdb")  # atomic: old or new, never half
        shutil.rmtree(tmp, ignore_errors=True)
        after = (data_dir / "data.mdb").stat().st_size
    finally:
        os.close(fd)
    return {"before": before, "after": after}


def cmd_store(args: argparse.Namespace) -> int:
    from actorflow.cli._main import _default_data_dir

    data_dir = Path(args.data_dir or _default_data_dir())
    if args.action == "check":
        report = check(data_dir)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            counts = ", ".join(f"{v} {k}" for k, v in report["counts"].items())
            print(f"format {report['format']}: {counts}")
            for p in report["problems"]:
                print(f"PROBLEM {p}")
            print("ok" if report["ok"] else f"{len(report['problems'])} problem(s)")
        return 0 if report["ok"] else 1
    if args.action == "backup":
        if not args.path:
            print("actorflow store backup: give the PATH to write the copy to", file=sys.stderr)
            return 2
        out = backup(data_dir, Path(args.path))
        print(
            json.dumps(out, indent=2)
            if args.json
            else f"backed up to {out['path']}: {out['bytes']} bytes, {out['blob_files']} blob "
            f"files, in {out['seconds']}s"
        )
        return 0
    out = compact(data_dir)
    print(
        json.dumps(out, indent=2)
        if args.json
        else f"compacted {data_dir}: {out['before']} -> {out['after']} bytes"
    )
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``store`` to the ``actorflow`` parser."""
    store = sub.add_parser(
        "store",
        help="check, compact or back up the store",
        description=(
            "check: verify records, indexes and blob files (read-only; exit 1 on a problem). "
            "backup PATH: a consistent compacted copy, also while an engine runs. "
            "compact: rewrite the store without free pages (no engine may hold it)."
        ),
    )
    store.add_argument("action", choices=["check", "compact", "backup"])
    store.add_argument("path", nargs="?", help="backup: where to write the copy")
    store.add_argument("--json", action="store_true", help="machine-readable output")
    store.set_defaults(func=cmd_store)
