"""Logging, metrics, lifecycle events and tracing of an engine.

The ``actorflow`` logger has a ``NullHandler``: an embedding service decides where records
go. Records about runs carry ``run_id``, ``workflow_id``, ``step`` and ``attempt`` as extra
fields; :class:`JsonFormatter` writes each record as one JSON object per line, and
:func:`log_to` attaches a handler in one call::

    import sys
    import actorflow as af

    af.observability.log_to(sys.stderr, json=True, level="INFO")

Prometheus metrics come from ``engine.metrics()`` (and ``GET /metrics``); typed lifecycle
events from ``engine.subscribe(fn)``; OpenTelemetry spans for runs and steps from
:func:`trace` (``pip install 'actorflow[otel]'``).
"""

from __future__ import annotations

from actorflow.observability._logging import JsonFormatter, log_to
from actorflow.observability._tracing import trace

__all__ = ["JsonFormatter", "log_to", "trace"]
