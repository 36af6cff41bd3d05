"""A code workflow's history: the commands its function issued and what came back, in order.

A run's history is a sequence of records in the ``history`` database, one per *activation*
(the function ran until it was waiting again)::

    {"t": 1700000000.25,                          the activation's time (ctx.now())
     "r": [resolution, ...],                      what it was woken with, in order
     "c": [[seq, kind, name], ...]}               the commands it issued, in order

A record without ``"c"`` is *open*: its resolutions were recorded (they are durable facts: a
step's result, a signal) but the activation did not complete, because the workflow panicked.
Its resolutions are applied again, with the next record's, when the run is replayed.

Resolutions::

    ["ok", seq, V]            command ``seq`` succeeded with value V
    ["err", seq, error]       command ``seq`` failed; ``error`` is a stored error record
    ["tmo", seq]              wait ``seq`` ran past its timeout
    ["sig", name, V]          signal ``name`` arrived with payload V (its handler's one argument)
    ["sig", name, "*", V]     signal ``name`` arrived with V, the list of its handler's arguments
    ["upd", id, name, V]      update ``id`` (handler ``name``) arrived with payload V
    ["cxl", reason]           the run was cancelled: ``CancelledError`` raised where it waits

A value V is two items: ``"j", <JSON>`` for small JSON, or ``"r", <ref>`` for anything else,
whose encoded bytes are in the ``values`` database under the run's key ``ref`` (a step's path,
or ``#sig/<n>``). An exported history (``export_history``) replaces references by ``"p",
<base64 of the encoded bytes>`` so that it stands alone in a file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from actorflow.errors import ClientError, StoreCorrupted
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value
from actorflow.store._protocol import Store
from actorflow.store._records import dump_record, inline_output, load_record

__all__ = [
    "FORMAT",
    "VALUED",
    "Entry",
    "History",
    "describe",
    "export_history",
    "load_history",
    "pack_value",
    "read_history",
    "unpack_value",
]

FORMAT = "actorflow-history/1"

#: Resolutions whose last two items are a value.
VALUED = frozenset({"ok", "sig", "upd"})

#: A recorded command: [seq, kind, name].
RecordedCommand = list[Any]


@dataclass(slots=True)
class Entry:
    """One activation: its time, what woke it, and what it issued (None: open)."""

    t: float
    r: list[list[Any]]
    c: list[RecordedCommand] | None

    def record(self) -> bytes:
        rec: dict[str, Any] = {"t": self.t, "r": self.r}
        if self.c is not None:
            rec["c"] = self.c
        return dump_record(rec)


@dataclass(slots=True)
class History:
    """A run's history with what replaying it needs.

    Attributes:
        run_id: the run.
        workflow_id: its workflow.
        args: the encoded argument list the function was called with.
        entries: the activations, oldest first.
        values: for an exported history, the encoded values its references point to.
    """

    run_id: str
    workflow_id: str
    args: bytes
    entries: list[Entry]
    values: dict[str, bytes] = field(default_factory=dict)

    @property
    def events(self) -> int:
        """How many resolutions and commands the history holds."""
        return sum(len(e.r) + len(e.c or ()) for e in self.entries)


def describe(kind: str, name: str) -> str:
    """How a command is named in messages: ``step 'fetch'``."""
    return f"{kind} {name!r}"


def pack_value(encoded: bytes, ref: str, ops: list[Any] | None, run_id: str) -> list[Any]:
    """The two items of a value in a resolution; large or pickled values go to ``values``.

    Args:
        encoded: the encoded value.
        ref: the run-relative key to store it under if it is not small JSON.
        ops: where to append the store op for it (None: it is stored already, at ``ref``).
        run_id: the run.
    """
    if inline_output(encoded) is not None:
        return ["j", orjson.Fragment(encoded[1:])]
    if ops is not None:
        ops.append((K.VALUES, K.step_key(run_id, ref), encoded))
    return ["r", ref]


def unpack_value(tag: str, data: Any, fetch: Callable[[str], bytes | None], what: str) -> bytes:
    """The encoded value of a resolution's ``tag, data`` items."""
    if tag == "j":
        return b"J" + orjson.dumps(data)
    if tag == "p":
        return base64.b64decode(data)
    if tag == "r":
        raw = fetch(str(data))
        if raw is None:
            raise StoreCorrupted(f"{what}: the value it refers to ({data!r}) is missing")
        return raw
    raise StoreCorrupted(f"{what}: unknown value tag {tag!r}")


def _entry(raw: bytes, what: str) -> Entry:
    rec = load_record(raw, what)
    c = rec.get("c")
    return Entry(float(rec.get("t", 0.0)), list(rec.get("r", ())), c)


def read_history(store: Store, run_id: str) -> tuple[list[Entry], int]:
    """A run's history records, and the sequence number the next record gets."""
    entries: list[Entry] = []
    nxt = 0
    for key, raw in store.scan(K.HISTORY, K.history_prefix(run_id)):
        entries.append(_entry(raw, f"history of run {run_id}"))
        nxt = K.decode_history_seq(key) + 1
    return entries, nxt


def export_history(store: Store, run_id: str) -> dict[str, Any]:
    """A run's history as one JSON-compatible document that needs no store to replay.

    Raises:
        RunNotFound: no such run.
        ClientError: the run is not a code workflow's.
    """
    from actorflow.views import read_run

    rec = read_run(store, run_id)
    if rec.get("kind") != "code":
        raise ClientError(
            f"run {run_id} is a graph workflow's ({rec['workflow']!r}); only code workflows "
            "have a replayable history"
        )
    entries, _ = read_history(store, run_id)
    args = store.get(K.VALUES, K.payload_key(run_id)) or b"J[]"

    def fetch(ref: str) -> bytes | None:
        return store.get(K.VALUES, K.step_key(run_id, ref))

    out = []
    for e in entries:
        res = []
        for r in e.r:
            r = list(r)
            if r[0] in VALUED and r[-2] == "r":
                raw = unpack_value("r", r[-1], fetch, f"history of run {run_id}")
                r[-2], r[-1] = "p", base64.b64encode(raw).decode()
            res.append(r)
        item: dict[str, Any] = {"t": e.t, "r": res}
        if e.c is not None:
            item["c"] = e.c
        out.append(item)
    raw_def = store.get(K.DEFINITIONS, rec["workflow"].encode())
    definition = load_record(raw_def, "definition") if raw_def is not None else {}
    return {
        "format": FORMAT,
        "run_id": run_id,
        "workflow": rec["workflow"],
        "definition": {"function": definition.get("function")},
        "status": rec["status"],
        "args": base64.b64encode(args).decode(),
        "entries": out,
    }


def load_history(source: dict[str, Any] | str | Path | History) -> History:
    """A history from an exported document, a JSON file holding one, or a History.

    Raises:
        ClientError: the source is not an exported actorflow history.
    """
    if isinstance(source, History):
        return source
    doc: Any = source
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ClientError(f"history: cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ClientError(
            f"history: expected an exported actorflow history (format {FORMAT!r}), as "
            "written by `actorflow replay RUN --export FILE` or engine.export_history(run_id)"
        )
    try:
        entries = [
            Entry(float(e.get("t", 0.0)), list(e.get("r", ())), e.get("c"))
            for e in _entries(doc["entries"])
        ]
        args = base64.b64decode(doc["args"])
        decode_value(args, "history args")
    except (KeyError, TypeError, ValueError) as exc:
        raise ClientError(f"history: malformed document ({exc})") from exc
    return History(str(doc.get("run_id", "")), str(doc.get("workflow", "")), args, entries)


def _entries(items: Any) -> Iterable[dict[str, Any]]:
    if not isinstance(items, list):
        raise TypeError("entries: expected a list")
    for item in items:
        if not isinstance(item, dict):
            raise TypeError("entries: expected objects")
        yield item
