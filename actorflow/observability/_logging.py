"""JSON log records and a one-call handler for the ``actorflow`` logger."""

from __future__ import annotations

import datetime as dt
import logging
from typing import IO, Any

import orjson

__all__ = ["JsonFormatter", "log_to"]

#: Extra fields that records about runs carry, copied to the JSON object when present.
RUN_FIELDS = ("run_id", "workflow_id", "step", "attempt")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line.

    Keys: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the run fields a
    record carries (``run_id``, ``workflow_id``, ``step``, ``attempt``), ``exc`` (the
    formatted exception, if any) and any ``extra_fields`` given here.

    Args:
        extra_fields: more record attributes to copy when present.
    """

    def __init__(self, extra_fields: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._fields = RUN_FIELDS + tuple(extra_fields)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self._fields:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # default=str: an odd extra value must never make a log line fail.
        return orjson.dumps(out, default=str).decode()


def log_to(
    stream: IO[str], *, json: bool = False, level: int | str = logging.INFO
) -> logging.Handler:
    """Send the ``actorflow`` logger's records at ``level`` and above to ``stream``.

    Args:
        stream: e.g. ``sys.stderr``.
        json: one JSON object per line (:class:`JsonFormatter`); else readable text with
            the run fields appended.
        level: the logger's level.

    Returns:
        The handler (remove it from ``logging.getLogger("actorflow")`` to undo).
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json else _TextFormatter())
    logger = logging.getLogger("actorflow")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{n}={record.__dict__[n]}" for n in RUN_FIELDS if record.__dict__.get(n)]
        return f"{text} [{' '.join(fields)}]" if fields else text
