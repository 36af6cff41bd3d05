"""The archive of pruned runs: JSON lines, zstd-compressed when the file name ends in ``.zst``.

``actorflow store prune --archive runs.jsonl.zst`` and ``engine.prune(archive=...)`` export
each run here before any of its records is deleted: a batch's lines are flushed and fsynced
before the batch's deletes are handed to the store. One line per run::

    {"format": "actorflow-archive/1", "archived_at": 1700000000.0,
     "run": {...run record...},
     "steps": [{...step record...}, ...],
     "payload": V, "outputs": {"<step path>": V, ...},
     "history": [H, ...],
     "logs": {"records": [...], "dropped": [...]}}

A value ``V`` is ``{"json": <the value>}`` when it was stored as JSON, else ``{"tag": "P",
"base64": "..."}`` (a pickle, as stored: unpickling it needs the user's code) or ``{"tag":
"B", "base64": "...", "blobs": [{"id", "size"}]}`` for a large value (its buffers' bytes are
not archived). A history record ``H`` is a code workflow's JSON record, or ``{"events":
[...]}``, a graph run's evaluator events (int32s). A small output kept inside its step
record is in that record's ``output`` field, as it is in the store. ``logs``, what the
run's steps logged as ``engine.logs`` reads it (``store/_logs.py``), is there only for a
run that has some (a field added within format 1: a reader ignores fields it does not know).

The file is opened for appending, so one archive can collect many prunes: a zstd archive is
a sequence of frames (one per batch), which zstd reads as one stream.
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson

from actorflow._extras import require
from actorflow.errors import ActorflowError, ClientError
from actorflow.store import _keys as K
from actorflow.store._codec import TAG_BLOB, TAG_JSON, unpack_large
from actorflow.store._logs import archived_logs
from actorflow.store._protocol import Store
from actorflow.store._records import load_step

__all__ = ["ARCHIVE_FORMAT", "RunArchive", "read_archive"]

ARCHIVE_FORMAT = "actorflow-archive/1"


def _zstd() -> Any:
    return require("zstandard", "a .zst archive (name it without .zst for plain JSON lines)")


class RunArchive:
    """Appends pruned runs to ``path`` (see the module docstring).

    Args:
        path: the archive file; ``.zst`` at the end of its name compresses it.

    Raises:
        ClientError: the file cannot be opened.
        MissingExtra: ``.zst`` without zstandard (the ``codecs`` extra).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.lines = 0
        compress = self.path.endswith(".zst")
        zstd = _zstd() if compress else None
        try:
            self._file: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise ClientError(f"archive: cannot open {self.path}: {exc}") from None
        self._writer: Any = None
        if zstd is not None:
            self._writer = zstd.ZstdCompressor(level=3).stream_writer(self._file, closefd=False)
            self._end_frame = zstd.FLUSH_FRAME

    def add(self, store: Store, run_id: str, rec: dict[str, Any]) -> None:
        """Append one run's line (its records as they are now)."""
        line = orjson.dumps(_line(store, run_id, rec)) + b"\n"
        if self._writer is not None:
            self._writer.write(line)
        else:
            self._file.write(line)
        self.lines += 1

    def commit(self) -> None:
        """Flush and fsync: what was added is on disk, readable even if nothing follows.

        Each commit ends a zstd frame, so a crash after it leaves only whole frames.
        """
        if self._writer is not None:
            self._writer.flush(self._end_frame)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """End the zstd frame, fsync and close the file."""
        if self._file.closed:
            return
        try:
            if self._writer is not None:
                self._writer.close()  # ends the frame; the file stays open (closefd=False)
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def __enter__(self) -> RunArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_archive(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The runs in an archive, in the order they were pruned.

    Raises:
        ClientError: a line that is not JSON.
        MissingExtra: ``.zst`` without zstandard (the ``codecs`` extra).
    """
    name = str(path)
    with open(name, "rb") as f:
        data = f.read()
    if name.endswith(".zst"):
        zstd = _zstd()
        try:
            data = zstd.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
        except zstd.ZstdError as exc:
            raise ClientError(f"archive {name}: not a zstd stream ({exc})") from None
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ClientError(f"archive {name}: line {n} is not JSON ({exc})") from None


def _value(raw: bytes) -> dict[str, Any]:
    if raw[:1] == bytes((TAG_JSON,)):
        try:
            return {"json": orjson.loads(raw[1:])}
        except orjson.JSONDecodeError:
            pass
    out: dict[str, Any] = {"tag": raw[:1].decode("latin-1"), "base64": _b64(raw[1:])}
    if raw[:1] == bytes((TAG_BLOB,)):
        try:
            out["blobs"] = [{"id": i, "size": s} for i, s in unpack_large(raw)[0]]
        except ActorflowError:
            pass
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _history(raw: bytes) -> Any:
    if raw[:1] == b"{":
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    if len(raw) % 4 == 0:
        return {"events": list(struct.unpack(f"<{len(raw) // 4}i", raw))}
    return {"base64": _b64(raw)}


def _line(store: Store, run_id: str, rec: dict[str, Any]) -> dict[str, Any]:
    prefix = K.step_prefix(run_id)
    # In their full shape, whichever the store holds (an archive's format does not change).
    steps = [
        load_step(raw, key[len(prefix) :].decode(), f"step {key!r}")
        for key, raw in store.scan(K.STEPS, prefix)
    ]
    payload: dict[str, Any] | None = None
    outputs: dict[str, Any] = {}
    for key, raw in store.scan(K.VALUES, prefix):
        where = key[len(prefix) :].decode()
        if where:
            outputs[where] = _value(raw)
        else:
            payload = _value(raw)
    history = [_history(raw) for _, raw in store.scan(K.HISTORY, K.history_prefix(run_id))]
    line = {
        "format": ARCHIVE_FORMAT,
        "archived_at": time.time(),
        "run": rec,
        "steps": steps,
        "payload": payload,
        "outputs": outputs,
        "history": history,
    }
    logs = archived_logs(store, run_id)
    if logs is not None:
        line["logs"] = logs
    return line
