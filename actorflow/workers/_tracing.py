"""Trace context inside a step: spans a step makes are children of the engine's step span.

The engine's OpenTelemetry exporter (``observability/_tracing.py``) gives each run its own
trace and each span an id derived from what it is (run id, step path, attempt), so a worker
can rebuild the parent context from the ``ctx.run`` it already has: no id travels in the wire
protocol, and the ids are the same after a restart. When tracing is on (``tracing=True``, set
by ``af.observability.trace(engine)``), each step call runs with that context attached.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

__all__ = ["ENABLED", "run_span_id", "step_scope", "step_span_id", "trace_id"]

#: Set in a worker process (and the engine process) when tracing is on.
ENABLED = False


def _int(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1  # 0 is the invalid id


def trace_id(run_id: str) -> int:
    """A run's trace id (each run is a trace; a child run links to its parent's)."""
    return _int("actorflow-trace:" + run_id, 16)


def run_span_id(run_id: str) -> int:
    """The span id of a run's span."""
    return _int("actorflow-run:" + run_id, 8)


def step_span_id(run_id: str, step: str, attempt: int) -> int:
    """The span id of one step attempt's span."""
    return _int(f"actorflow-step:{run_id}:{step}:{attempt}", 8)


@contextlib.contextmanager
def step_scope(info: Any) -> Iterator[None]:
    """Run a step with its span as the current (remote) parent, if tracing is on."""
    if not ENABLED:
        yield
        return
    try:
        from opentelemetry import context, trace
    except ImportError:  # the otel extra is not installed here: no context, no error
        yield
        return
    parent = trace.SpanContext(
        trace_id(info.id),
        step_span_id(info.id, info.step, info.attempt),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    try:
        yield
    finally:
        context.detach(token)
