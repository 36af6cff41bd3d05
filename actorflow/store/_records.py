"""Run and step records: JSON objects, readable without the user's code.

A run record (``runs`` database)::

    {"id", "workflow", "status", "created_at", "started_at", "ended_at", "idempotency_key",
     "plan", "deadline", "result_step", "error", "cancel_reason"}

A step record (``steps`` database)::

    {"name", "node", "kind", "status", "attempt", "failures", "dispatched_at", "started_at",
     "ended_at", "next_retry_at", "error",
     "attempts": [{"attempt", "status", "kind", "started_at", "ended_at", "error", "pid"}]}

``error`` objects: ``{"kind", "type", "types", "message", "traceback", "exc", "exitcode",
"signal", "timeout", "step", "attempt"}`` where ``exc`` is the base64 pickled exception, if it
could be pickled. Times are seconds since the epoch.
"""

from __future__ import annotations

from typing import Any

import orjson

from actorflow.errors import StoreCorrupted

__all__ = ["dump_record", "load_record"]

# orjson: records are written on every state change, and it is ten times faster than json.
dump_record = orjson.dumps


def load_record(data: bytes, what: str) -> dict[str, Any]:
    """Parse a record; a malformed one raises :class:`StoreCorrupted` naming ``what``."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StoreCorrupted(f"{what}: record is not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise StoreCorrupted(f"{what}: record is not a JSON object")
    return record
