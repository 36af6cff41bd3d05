"""Run and step records: JSON objects, readable without the user's code.

A run record (``runs`` database)::

    {"id", "workflow", "status", "created_at", "started_at", "ended_at", "idempotency_key",
     "plan", "deadline", "result_step", "result", "error", "cancel_reason"}

``result`` (a completed run's result) is present when it is small JSON; otherwise it is the
output of ``result_step``.

A step record (``steps`` database)::

    {"name", "node", "kind", "status", "attempt", "failures", "dispatched_at", "started_at",
     "ended_at", "next_retry_at", "error", "output", "input",
     "attempts": [{"attempt", "status", "kind", "started_at", "ended_at", "error", "pid"}]}

A completed step's output is inline in ``output`` when it is small JSON (saving a write per
step); otherwise ``output`` is absent and the encoded value is in the ``values`` database.
``input`` is the short rendering (``describe_value``: at most 200 characters, pickles as a
placeholder) of what the step was given, written by its dispatch in the record that the
dispatch writes anyway; records written before inputs were have none.

Since store format 5 a step's record is written *compact* (``Leaf.record``), because a
fan-out writes one per item and the full shape made a trivial item's record ~420 bytes
(~780 bytes of pages). A compact record has no ``path``, which is how a reader tells the two
apart; :func:`load_step` gives either its full shape, so no reader sees the difference:

- ``name`` and ``path`` are left out: the key holds the path, and the name is its last part.
- ``status`` is left out when it is ``"succeeded"``, ``kind`` when it is ``"step"``,
  ``failures`` when 0, ``attempt`` when it is the number of entries in ``attempts``,
  ``attempts`` when empty, and any time, ``error`` and ``next_retry_at`` when null.
- ``"at": [dispatched_at, us_to_start, us_to_end]`` stands for the three times of a step
  that ran (the second and third as whole microseconds after the one before).
- ``"pid": P`` without ``attempts`` stands for its one attempt: number 1, succeeded, from
  ``started_at`` to ``ended_at`` in process P, with no kind or error.
- ``"in": V`` stands for an input that is JSON of at most ``INLINE_INPUT_MAX`` bytes, as it
  is (its rendering is its text); a larger or pickled input's rendering is in ``input``.
- A fourth element ``1`` in ``at`` (or, without ``at``, ``"ii": 1``) says the step's input
  is its for_each item, which its loop keeps (``<loop path>#items`` in ``values``): a
  million items' records do not each hold a copy. ``load_step`` gives ``input_item: True``
  and the reader renders the item (``views/_read.py``). Readers of releases before it read
  the first three elements of ``at`` only.

A trivial item's record is ~70 bytes, its input included::

    {"node":1,"at":[1796418264.2412627,1591,10,1],"pid":2279,"output":144}

Records of format 4 and earlier (and those of control-flow nodes, which are few) keep the
full shape, and are read as they are.

``error`` objects: ``{"kind", "type", "types", "message", "traceback", "user_traceback",
"exc", "exitcode", "signal", "timeout", "step", "attempt"}`` where ``exc`` is the base64
pickled exception, if it could be pickled, and ``user_traceback`` the traceback without the
engine's frames (``actorflow/_tracebacks.py``; older records lack it: readers take
``traceback``). Times are seconds since the epoch.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from actorflow.errors import StoreCorrupted
from actorflow.store import _keys
from actorflow.store._codec import describe_value

__all__ = [
    "INLINE_INPUT_MAX",
    "INLINE_OUTPUT_MAX",
    "dump_record",
    "inline_output",
    "input_of",
    "load_record",
    "load_step",
    "output_of",
    "step_names",
    "step_output",
]

#: Encoded JSON outputs up to this size live inside their step record.
INLINE_OUTPUT_MAX = 2048
#: Encoded JSON inputs up to this size are kept in their step record as they are (``in``):
#: ``describe_value`` would render them as their own text (its limit is 200 characters).
INLINE_INPUT_MAX = 200


def dump_record(record: Any) -> bytes:
    """A record as JSON bytes, in a buffer of its own size.

    orjson, because records are written on every state change and it is ten times faster
    than json. But orjson 3.12 and later return bytes whose buffer is over-allocated to at
    least 4 KiB and never shrunk: a 400-byte item record waiting for its commit held 4-8
    KiB, which made a fan-out's peak memory ~2.4 KB per item. Joining with an empty bytes
    makes the right-sized copy in ~0.06 us (``bytes(memoryview(...))`` took ~0.2).
    """
    return b"".join((orjson.dumps(record), b""))


def load_record(data: bytes, what: str) -> dict[str, Any]:
    """Parse a record; a malformed one raises :class:`StoreCorrupted` naming ``what``."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StoreCorrupted(f"{what}: record is not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise StoreCorrupted(f"{what}: record is not a JSON object")
    return record


def load_step(data: bytes, path: str, what: str) -> dict[str, Any]:
    """Parse the step record of ``path`` (the step's key after its run) in its full shape.

    Raises:
        StoreCorrupted: not a JSON object, or a compact record with a malformed field.
    """
    rec = load_record(data, what)
    if "path" in rec:
        return rec  # the full shape: format 4 and earlier, and control-flow nodes
    try:
        return _expand(rec, path)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise StoreCorrupted(f"{what}: compact step record is malformed ({exc!r})") from exc


def _expand(rec: dict[str, Any], path: str) -> dict[str, Any]:
    at = rec.pop("at", None)
    times: tuple[Any, Any, Any]
    if rec.pop("ii", 0) == 1:
        rec["input_item"] = True
    if at is not None:
        dispatched = float(at[0])
        started = dispatched + int(at[1]) / 1e6
        times = (dispatched, started, started + int(at[2]) / 1e6)
        if len(at) > 3 and at[3] == 1:
            rec["input_item"] = True
    else:
        times = (rec.get("dispatched_at"), rec.get("started_at"), rec.get("ended_at"))
    attempts = rec.get("attempts")
    if attempts is None:
        pid = rec.pop("pid", None)
        attempts = []
        if pid is not None:
            attempts.append(
                {
                    "attempt": 1,
                    "status": "succeeded",
                    "kind": None,
                    "started_at": times[1],
                    "ended_at": times[2],
                    "error": None,
                    "pid": pid,
                }
            )
    full = {
        "name": path.rpartition("/")[2],
        "path": path,
        "node": rec.get("node", 0),
        "kind": rec.get("kind", "step"),
        "status": rec.get("status", "succeeded"),
        "attempt": rec.get("attempt", len(attempts)),
        "failures": rec.get("failures", 0),
        "dispatched_at": times[0],
        "started_at": times[1],
        "ended_at": times[2],
        "next_retry_at": rec.get("next_retry_at"),
        "error": rec.get("error"),
        "attempts": attempts,
    }
    if "in" in rec:  # a small JSON input, as it is: its rendering is its text
        full["input"] = describe_value(b"J" + orjson.dumps(rec.pop("in")))
    for key, value in rec.items():
        full.setdefault(key, value)  # output, input, heartbeat, wait, child_run_id, ...
    return full


def input_of(encoded: bytes | memoryview) -> orjson.Fragment | str:
    """What a step record keeps of an encoded input: small JSON as it is, else its rendering.

    Either reads back (``load_step``) as ``input``: ``describe_value(encoded)``. Small JSON is
    kept as a fragment because it is the most common input and the cheapest to keep: no
    decoding at dispatch, and no escaping in the record (a fan-out writes one per item).
    """
    if len(encoded) <= INLINE_INPUT_MAX + 1 and encoded[0] == 0x4A:  # "J": JSON
        return orjson.Fragment(bytes(encoded[1:]))
    return describe_value(encoded)


def inline_output(encoded: bytes) -> orjson.Fragment | None:
    """The fragment to embed in a step record, or None if the output goes to ``values``."""
    if len(encoded) <= INLINE_OUTPUT_MAX and encoded[0] == 0x4A:  # "J": JSON
        return orjson.Fragment(encoded[1:])
    return None


def output_of(record: dict[str, Any], store: Any, run_id: str) -> bytes | None:
    """The encoded output of the step ``record`` describes, or None if it has none."""
    if "output" in record:
        return b"J" + orjson.dumps(record["output"])
    if record.get("status") != "succeeded":
        return None
    # Stored under its path (``lines[3]/price`` inside a loop body), which is its name at the
    # top level.
    where = record.get("path") or record["name"]
    return store.get(_keys.VALUES, _keys.step_key(run_id, where))  # type: ignore[no-any-return]


def step_output(store: Any, run_id: str, step: str) -> bytes | None:
    """The encoded output of step ``step`` of ``run_id``, or None if it has not completed."""
    raw = store.get(_keys.STEPS, _keys.step_key(run_id, step))
    if raw is None:
        return None
    return output_of(load_step(raw, step, f"step {step!r} of run {run_id}"), store, run_id)


#: A loop item's frame (``lines[3]``) or a code map's item: ``name[digits``.
_ITEM = re.compile(rb"(.+?)\[[0-9]")


def step_names(store: Any, run_id: str, step: str, page: int = 256) -> list[str]:
    """Names of the steps with a recorded output that ``ctx.steps`` sees from ``step``.

    Those of ``step``'s own frame first (``lines[3]/...`` for ``lines[3]/price``), then of
    each enclosing one, each name once. A loop's items (``lines[3]/...``, a code map's
    ``fn[3]``) are not names: the scan jumps over all of a loop's items at once, so a
    for_each of a million items costs one seek, not a million reads.
    """
    names: list[str] = []
    seen: set[str] = set()
    base = _keys.step_key(run_id, "")
    frame = step
    while True:
        cut = frame.rfind("/")
        frame = frame[: cut + 1] if cut >= 0 else ""
        prefix = base + frame.encode()
        after: bytes | None = None
        while True:
            rows = store.scan(_keys.STEPS, prefix, after=after, limit=page)
            for key, raw in rows:
                rest = key[len(prefix) :]
                item = _ITEM.match(rest)
                if item is not None:  # past every key of this loop's items: name[0 .. name[9
                    after = prefix + item.group(1) + b"[9\xff"
                    break
                after = key
                if b"/" in rest:
                    continue  # a nested frame's record (it has an item part, unless corrupt)
                name = rest.decode()
                if name in seen:
                    continue
                rec = load_step(raw, frame + name, f"step {name!r} of run {run_id}")
                if output_of(rec, store, run_id) is not None:  # as ``ctx.steps[name]`` has it
                    names.append(name)
                    seen.add(name)
            else:
                if len(rows) < page:
                    break
        if not frame:
            return names
        frame = frame[:-1]
