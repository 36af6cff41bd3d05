"""What steps logged: their ``ctx.log`` records, kept with the run and bounded per attempt.

A record logged through ``ctx.log`` (or the ``actorflow.step`` logger) in a step travels
from where the step runs to the dispatcher: a worker process sends it over its pipe with the
time it was logged, a step on a cluster or on an inline thread over its link. The dispatcher
re-emits it on the engine's ``actorflow.step`` logger, as before, and, when its level is at
least the engine's ``step_logs`` level (``"INFO"`` unless configured; ``"off"`` keeps
none), keeps it here: one record per key of the ``logs`` database (``store/_keys.py``)::

    run id NUL step path NUL attempt (u32) seq (u32)  ->  {"time", "level", "message"}
    run id NUL step path NUL attempt (u32) FFFFFFFF   ->  {"dropped": n}

The step path is the one its step record has (``lines[3]/price`` inside a loop, a code
workflow's ``name`` or ``name#2``); ``seq`` counts the attempt's records from 0, so an
attempt's records read back in the order they were logged, under that attempt.

**Bounds.** At most :data:`MAX_RECORDS` records per step attempt are kept, and a message is
cut to :data:`MAX_MESSAGE` bytes of UTF-8 (marked at its end, with its full size). Past the
bound the records are counted, not kept: the count is written when it reaches a power of two
and when the attempt ends, so a step that logs a million lines costs about twenty writes
more than one that logs a thousand, and the reader can say how many were dropped.

**Writes.** The dispatcher gathers the records of each of its wake-ups into one ``Write``
to the store writer, told before the reports of that wake-up go to the runs' shards: the
records share the group commit of the step's result or go in an earlier one, nobody waits
for them to be durable (the step, the dispatcher), and under load they share the commits of
everything else. A run whose steps log nothing writes nothing here.
Like the step's result, records still in flight when the engine dies are lost; the attempt
is then interrupted and the next one logs under its own number.

**Reading.** :func:`read_logs` (``engine.logs``, ``GET /api/runs/{id}/logs``): the run's
records in the order they were logged (each attempt's in its own order, attempts merged by
time), optionally one step's, one attempt's, and the counts of what was dropped. Pruning
deletes a run's records with it (``_prune.py``) and its archive line carries them
(``_archive.py``). The ``logs`` database is sealed like the other user data.
"""

from __future__ import annotations

import heapq
import logging
import struct
from typing import Any

from actorflow.errors import RunNotFound
from actorflow.store import _keys as K
from actorflow.store._protocol import Op, Store
from actorflow.store._records import dump_record, load_record

__all__ = [
    "DROPPED_SEQ",
    "MAX_MESSAGE",
    "MAX_RECORDS",
    "LogTally",
    "archived_logs",
    "close_tally",
    "keep_level",
    "keep_record",
    "read_logs",
]

#: Most records kept per step attempt; later ones are only counted.
MAX_RECORDS = 1000
#: Longest message kept, in bytes of UTF-8; a longer one is cut and marked.
MAX_MESSAGE = 8192
#: The ``seq`` of an attempt's dropped count.
DROPPED_SEQ = 0xFFFFFFFF
#: A level above every real one: nothing is kept (``step_logs="off"``).
_OFF = logging.CRITICAL + 100

_ATTEMPT = struct.Struct(">I")


def keep_level(setting: str) -> int:
    """The least level kept for ``EngineConfig.step_logs`` (a level name, or ``"off"``)."""
    if setting.upper() == "OFF":
        return _OFF
    return int(logging.getLevelName(setting.upper()))


class LogTally:
    """One task's kept and dropped records, per step path (a chunk's items are steps too)."""

    __slots__ = ("dropped", "kept")

    def __init__(self) -> None:
        self.kept: dict[str, int] = {}
        self.dropped: dict[str, int] = {}


def _message(message: Any) -> str:
    """``message`` as valid text of at most :data:`MAX_MESSAGE` bytes (plus the mark)."""
    data = str(message).encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if len(data) <= MAX_MESSAGE:
        return data.decode("utf-8")
    cut = data[:MAX_MESSAGE].decode("utf-8", "ignore")  # never half a character
    return f"{cut}... [truncated: {len(data)} bytes]"


def keep_record(
    ops: list[Op],
    tally: LogTally,
    run_id: str,
    step: str,
    attempt: int,
    at: float,
    level: int,
    message: Any,
) -> None:
    """Add the op that keeps one record to ``ops`` (or count it, past the bound)."""
    n = tally.kept.get(step, 0)
    if n < MAX_RECORDS:
        tally.kept[step] = n + 1
        record = {"time": at, "level": logging.getLevelName(level), "message": _message(message)}
        ops.append((K.LOGS, K.log_key(run_id, step, attempt, n), dump_record(record)))
        return
    dropped = tally.dropped.get(step, 0) + 1
    tally.dropped[step] = dropped
    if dropped & (dropped - 1) == 0:  # 1, 2, 4, 8...: a count survives a crash, roughly
        ops.append(_dropped_op(run_id, step, attempt, dropped))


def close_tally(ops: list[Op], tally: LogTally, run_id: str, attempt: int) -> None:
    """The attempt ended: add the final dropped counts to ``ops``."""
    for step, dropped in tally.dropped.items():
        ops.append(_dropped_op(run_id, step, attempt, dropped))


def _dropped_op(run_id: str, step: str, attempt: int, dropped: int) -> Op:
    return (
        K.LOGS,
        K.log_key(run_id, step, attempt, DROPPED_SEQ),
        dump_record({"dropped": dropped}),
    )


def read_logs(
    store: Store, run_id: str, step: str | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """What a run's steps logged (see the module docstring).

    Args:
        store: the store to read.
        run_id: the run.
        step: only this step's records (its path, as its step record names it).
        attempt: only this attempt's records (of every step, unless ``step`` is given).

    Returns:
        ``{"records": [...], "dropped": [...]}``: each record ``{"time", "level", "step",
        "attempt", "message"}`` (``time`` in seconds since the epoch, taken where the step
        ran; ``level`` a name such as ``"INFO"``), in the order they were logged; each
        dropped entry ``{"step", "attempt", "count"}``: records of that attempt past the
        bound, counted but not kept.

    Raises:
        RunNotFound: no such run.
    """
    if not isinstance(run_id, str) or not run_id:
        raise RunNotFound(str(run_id))
    if store.get(K.RUNS, K.run_key(run_id)) is None:
        raise RunNotFound(run_id)
    return _read(store, run_id, step, attempt)


def archived_logs(store: Store, run_id: str) -> dict[str, Any] | None:
    """A run's records for its archive line (None if it has none)."""
    found = _read(store, run_id, None, None)
    return found if found["records"] or found["dropped"] else None


def _read(store: Store, run_id: str, step: str | None, attempt: int | None) -> dict[str, Any]:
    head = len(K.log_prefix(run_id))
    prefix = K.log_prefix(run_id, step)
    if step is not None and attempt is not None:
        prefix += _ATTEMPT.pack(attempt)
    runs: list[list[dict[str, Any]]] = []  # one list per attempt, each in its own order
    dropped: list[dict[str, Any]] = []
    current: tuple[str, int] | None = None
    for key, raw in store.scan(K.LOGS, prefix):
        path, number, seq = K.decode_log_key(key, head)
        if attempt is not None and number != attempt:
            continue
        rec = load_record(raw, f"log record {key!r}")
        if seq == DROPPED_SEQ:
            dropped.append({"step": path, "attempt": number, "count": int(rec["dropped"])})
            continue
        if current != (path, number):
            current = (path, number)
            runs.append([])
        runs[-1].append(
            {
                "time": rec.get("time"),
                "level": rec.get("level"),
                "step": path,
                "attempt": number,
                "message": rec.get("message"),
            }
        )
    # Merged by time; each attempt keeps its own order even if the clock stepped back.
    merged = list(heapq.merge(*runs, key=_time)) if len(runs) > 1 else (runs[0] if runs else [])
    return {"records": merged, "dropped": dropped}


def _time(record: dict[str, Any]) -> float:
    at = record["time"]
    return float(at) if isinstance(at, int | float) else 0.0
