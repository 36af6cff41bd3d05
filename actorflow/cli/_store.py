"""``actorflow store check|compact|backup``: look after the LMDB store.

- ``check`` opens the store read-only (an engine may be running) and verifies what the
  engine relies on: the format; that every record of every database passes its checksum,
  unseals with the configured codecs and decodes (each bad record named, the check going on
  past it); that the status and workflow indexes agree with the run records; that steps,
  values, history, timers and blobs belong to runs that exist; and that recorded blobs have
  their files. Exit status 4 if it found a problem, each named.
- ``backup PATH`` writes a consistent copy while an engine runs: LMDB copies from one read
  transaction (a snapshot), compacted; then the large values' files it refers to.
- ``compact`` rewrites the store without its free pages; only while no engine holds it.
- ``prune --older-than 30d [--workflow W] [--dry-run] [--archive runs.jsonl.zst]`` deletes
  finished runs that ended that long ago, with everything they own (``store/_prune.py``,
  the code the engine's retention uses). It writes, so it needs the store to itself: while
  an engine holds it, it refuses (call ``engine.prune()`` in that process instead); a dry
  run only reads, so it also works beside a running engine.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from actorflow._types import RunStatus
from actorflow.cli._output import Column, Exit, Output, UsageError
from actorflow.errors import ActorflowError, StoreError

__all__ = ["add_parsers", "backup", "check", "compact", "prune"]

_SEP = b"\x00"
_TERMINAL = frozenset(s.value for s in RunStatus if s.terminal)


def _open(data_dir: Path, sealed: bool = True) -> Any:
    """The store read-only: unsealed with the configured codecs, or raw (to copy it)."""
    from actorflow.cli._reading import read_only
    from actorflow.store import LmdbStore

    return read_only(str(data_dir)) if sealed else LmdbStore(data_dir, read_only=True)


def _run_of(key: bytes) -> str:
    return key.split(_SEP, 1)[0].decode(errors="replace")


#: Databases whose every value is a JSON record (``store/_keys.py``).
_JSON_DBS = ("runs", "steps", "approvals", "definitions", "schedules", "timers", "logs")


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
            if kind == b"e":  # e NUL workflow NUL end ms (8 bytes) run id
                workflow = rest.partition(_SEP)[0].decode(errors="replace")
                _, run_id = K.decode_end_index_key(key, K.end_index_prefix(workflow))
                indexed.add(("e", run_id))
                rec = runs.get(run_id)
                if rec is None:
                    problems.append(f"index: end-time entry of run {run_id}, which does not exist")
                elif rec.get("status") not in _TERMINAL:
                    problems.append(f"index: run {run_id} has an end-time entry but is unfinished")
                continue
            value, _, run_id_b = rest.partition(_SEP)
            if kind == b"a":  # a NUL run id NUL token
                if value.decode(errors="replace") not in runs:
                    problems.append(f"index: an approval of run {value!r}, which does not exist")
                continue
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
        for run_id, rec in runs.items():
            for index in ("s", "w"):
                if (index, run_id) not in indexed:
                    what = "status" if index == "s" else "workflow"
                    problems.append(f"index: run {run_id} is missing from the {what} index")
            if version >= 3 and rec.get("status") in _TERMINAL and ("e", run_id) not in indexed:
                problems.append(f"index: finished run {run_id} is missing from the end-time index")
        for db, what in (
            (K.STEPS, "step"),
            (K.HISTORY, "history record"),
            (K.VALUES, "value"),
            (K.LOGS, "log record"),
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


def _holder(data_dir: Path) -> str | None:
    """The pid of the engine that holds ``data_dir``'s lock, or None if none does."""
    lock_path = data_dir / "engine.lock"
    if not lock_path.exists():
        return None
    fd = os.open(lock_path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def prune(
    data_dir: Path,
    older_than: str,
    workflow: str | None = None,
    dry_run: bool = False,
    archive: str | None = None,
) -> dict[str, Any]:
    """Delete the finished runs that ended more than ``older_than`` ago (see the docstring).

    Raises:
        StoreError: an engine holds the store (not for a dry run), or it is not migrated.
        ClientError: ``older_than`` is not a duration, or ``.zst`` without zstandard.
    """
    from actorflow.config import EngineConfig
    from actorflow.definition._options import parse_duration
    from actorflow.errors import ClientError, DefinitionError
    from actorflow.store import LmdbStore
    from actorflow.store import _keys as K
    from actorflow.store._archive import RunArchive
    from actorflow.store._protocol import ensure_format
    from actorflow.store._prune import indexed_workflows, written
    from actorflow.store._prune import prune as prune_runs
    from actorflow.store._sealing import sealed

    given: str | float = older_than
    if older_than.strip().replace(".", "", 1).isdigit():
        given = float(older_than)  # plain seconds
    try:
        seconds = parse_duration(given, "--older-than", allow_zero=True)
    except DefinitionError as exc:
        raise ClientError("; ".join(exc.problems)) from None
    if not (data_dir / "data.mdb").exists():
        raise StoreError(f"no actorflow store at {data_dir} (data.mdb not found)")
    holder = _holder(data_dir)
    if holder is not None and not dry_run:
        raise StoreError(
            f"prune: an engine (pid {holder}) holds {data_dir}: stop it, or call "
            "engine.prune() in it (a --dry-run works beside it)"
        )
    cfg = EngineConfig.from_sources()
    inner = LmdbStore(data_dir, read_only=dry_run, durability="sync")
    store = sealed(inner, cfg.codecs, cfg.codec_keys)
    try:
        version = ensure_format(store)  # a writable open migrates an older store
        if version < K.FORMAT_VERSION:
            raise StoreError(
                f"prune: the store is format {version}; the first writable open migrates it "
                "to the end-time index that pruning reads: run prune without --dry-run, or "
                "start an engine on it"
            )
        cutoff = time.time() - seconds
        workflows = [workflow] if workflow else indexed_workflows(store)

        def delete_files(ids: list[str]) -> None:
            for blob_id in ids:  # the writes are synced: their deletion is durable
                store.blobs.delete(blob_id)

        def submit(ops: list[Any]) -> Callable[[], None]:
            store.write(ops)  # synced: durable when it returns
            return written

        out = archive if archive and not dry_run else None
        if out is None:
            report = prune_runs(
                store, [(w, cutoff) for w in workflows], submit, delete_files, dry_run=dry_run
            )
        else:
            with RunArchive(out) as sink:
                report = prune_runs(
                    store, [(w, cutoff) for w in workflows], submit, delete_files, archive=sink,
                )  # fmt: skip
    finally:
        store.close()
    return report.to_dict()


def cmd_store(args: argparse.Namespace, out: Output) -> int:
    from actorflow.cli._reading import default_data_dir

    data_dir = Path(args.data_dir or default_data_dir())
    if args.action == "check":
        report = check(data_dir)
        if out.as_json:
            out.json(report)
        else:
            counts = ", ".join(f"{v} {k}" for k, v in report["counts"].items())
            out.line(f"format {report['format']}: {counts}")
            for p in report["problems"]:
                out.line(f"PROBLEM {p}")
            out.line("ok" if report["ok"] else f"{len(report['problems'])} problem(s)")
        return Exit.OK if report["ok"] else Exit.FAILED
    if args.action == "prune":
        if not args.older_than:
            raise UsageError("give --older-than, e.g. 30d")
        report = prune(data_dir, args.older_than, args.workflow, args.dry_run, args.archive)
        if out.as_json:
            out.json(report)
            return Exit.OK
        verb = "would prune" if report["dry_run"] else "pruned"
        out.line(
            f"{verb} {report['runs']} finished runs ({report['blobs']} blobs, about "
            f"{report['bytes'] // 1024} KiB) in {report['batches']} writes"
        )
        if report["workflows"]:
            out.table(["WORKFLOW", Column("RUNS", right=True)], sorted(report["workflows"].items()))
        if report["kept"]:
            out.line(f"kept {report['kept']} finished children of unfinished parent runs")
        if report["archive"]:
            out.line(f"archived to {report['archive']}")
        return Exit.OK
    if args.action == "backup":
        if not args.path:
            raise UsageError("give the PATH to write the copy to")
        done = backup(data_dir, Path(args.path))
        out.result(
            done,
            f"backed up to {done['path']}: {done['bytes']} bytes, {done['blob_files']} blob "
            f"files, in {done['seconds']}s",
        )
        return Exit.OK
    done = compact(data_dir)
    out.result(done, f"compacted {data_dir}: {done['before']} -> {done['after']} bytes")
    return Exit.OK


def add_parsers(sub: Any, json_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``store`` to the ``actorflow`` parser."""
    store = sub.add_parser(
        "store",
        help="check, compact, back up or prune the store",
        description=(
            "check: verify records, indexes and blob files (read-only; exit 4 on a problem). "
            "backup PATH: a consistent compacted copy, also while an engine runs. "
            "compact: rewrite the store without free pages (no engine may hold it). "
            "prune --older-than 30d: delete finished runs that ended that long ago, with "
            "everything they own (no engine may hold it, except for --dry-run)."
        ),
    )
    store.add_argument("action", choices=["check", "compact", "backup", "prune"])
    store.add_argument("path", nargs="?", help="backup: where to write the copy")
    store.add_argument(
        "--older-than", help="prune: runs that ended more than this long ago (30d, 12h, 3600)"
    )
    store.add_argument("--workflow", help="prune: only this workflow's runs")
    store.add_argument("--dry-run", action="store_true", help="prune: only say what would go")
    store.add_argument(
        "--archive",
        help="prune: first append the runs to this JSON-lines file (.zst: compressed)",
    )
    json_flag(store)
    store.set_defaults(func=cmd_store)
