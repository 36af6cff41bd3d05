"""OpenTelemetry spans for runs and steps (``pip install 'actorflow[otel]'``).

``af.observability.trace(engine)`` (before ``engine.start()``) subscribes to the engine's
lifecycle events and exports, through the OpenTelemetry SDK's tracer provider (the global
one, or the one given):

- a span per run, ``run <workflow>``, from its start to its final status (error status for a
  failed run); a child run is a trace of its own, linked to its parent run's span;
- a span per step attempt, ``step <path>``, a child of its run's span, from its start to
  its end in the worker, with its outcome and, for a failure, the error.

Spans are exported when they end, with their recorded times. Their ids are derived from the
run id, step path and attempt (``workers/_tracing.py``), so the same run keeps the same trace
across engine restarts, and each worker rebuilds its step's context from ``ctx.run``: spans a
step function makes with the OpenTelemetry API are children of its step's span, in the
worker process, with no id in the wire protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from actorflow._extras import require
from actorflow.errors import ConfigError
from actorflow.runtime.kernel._lifecycle import RunFinished, RunStarted, StepAttempted
from actorflow.workers import _tracing as ids

__all__ = ["trace"]

log = logging.getLogger("actorflow.observability")


def _ns(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1e9)


class _Exporter:
    """Turns lifecycle events into finished spans for the provider's processors."""

    def __init__(self, engine: Any, provider: Any) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from actorflow._version import __version__

        self._engine = engine
        self._provider = provider
        self._scope = InstrumentationScope("actorflow", __version__)
        self._runs: dict[str, tuple[float, str | None]] = {}  # run id -> (start, parent)

    def __call__(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            self._runs[event.run_id] = (event.at, event.parent_run_id)
        elif isinstance(event, StepAttempted):
            self._step(event)
        elif isinstance(event, RunFinished):
            self._run(event)

    def _context(self, run_id: str, span_id: int) -> Any:
        from opentelemetry import trace

        return trace.SpanContext(
            ids.trace_id(run_id),
            span_id,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )

    def _export(self, span: Any) -> None:
        # The SDK's processors take finished spans; ours are finished when made.
        self._provider._active_span_processor.on_end(span)

    def _step(self, e: StepAttempted) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanKind, Status, StatusCode

        ok = e.outcome == "succeeded"
        status = Status(StatusCode.OK) if ok else Status(StatusCode.ERROR, e.error or e.outcome)
        span = ReadableSpan(
            name=f"step {e.step}",
            context=self._context(e.run_id, ids.step_span_id(e.run_id, e.step, e.attempt)),
            parent=self._context(e.run_id, ids.run_span_id(e.run_id)),
            resource=self._provider.resource,
            attributes={
                "actorflow.run_id": e.run_id,
                "actorflow.workflow_id": e.workflow_id,
                "actorflow.step": e.step,
                "actorflow.attempt": e.attempt,
                "actorflow.outcome": e.outcome,
            },
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=_ns(e.started_at if e.started_at is not None else e.ended_at),
            end_time=_ns(e.ended_at),
            instrumentation_scope=self._scope,
        )
        self._export(span)

    def _run(self, e: RunFinished) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        known = self._runs.pop(e.run_id, None)
        if known is None:  # started before this engine did: read when from the store
            try:
                details = self._engine.inspect(e.run_id)
                known = (details.created_at, None)
            except Exception:
                known = (e.at, None)
        start, parent = known
        failed = e.status in ("failed", "panicked")
        status = (
            Status(StatusCode.ERROR, e.error or str(e.status)) if failed else Status(StatusCode.OK)
        )
        links = []
        if parent is not None:
            links.append(Link(self._context(parent, ids.run_span_id(parent))))
        attributes: dict[str, Any] = {
            "actorflow.run_id": e.run_id,
            "actorflow.workflow_id": e.workflow_id,
            "actorflow.status": str(e.status),
        }
        if parent is not None:
            attributes["actorflow.parent_run_id"] = parent
        span = ReadableSpan(
            name=f"run {e.workflow_id}",
            context=self._context(e.run_id, ids.run_span_id(e.run_id)),
            parent=None,
            resource=self._provider.resource,
            attributes=attributes,
            links=tuple(links),
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=_ns(start),
            end_time=_ns(e.at),
            instrumentation_scope=self._scope,
        )
        self._export(span)


def trace(engine: Any, tracer_provider: Any = None) -> Any:
    """Export OpenTelemetry spans for the engine's runs and steps; call before ``start()``.

    Args:
        engine: the engine (not yet started: its workers must start with trace context on).
        tracer_provider: an ``opentelemetry.sdk.trace.TracerProvider`` (default: the global
            one, which must be an SDK provider).

    Returns:
        A function that stops the export.

    Raises:
        MissingExtra: OpenTelemetry's SDK is not installed (the ``otel`` extra).
        ConfigError: the provider is not an SDK provider, or the engine is already running.
    """
    otel = require("opentelemetry.trace", "af.observability.trace()")
    sdk = require("opentelemetry.sdk.trace", "af.observability.trace()")
    provider = tracer_provider if tracer_provider is not None else otel.get_tracer_provider()
    if not isinstance(provider, sdk.TracerProvider):
        raise ConfigError(
            "trace: tracer_provider: expected an opentelemetry.sdk.trace.TracerProvider "
            f"(set one with trace.set_tracer_provider), got {type(provider).__name__}"
        )
    if engine.running:
        raise ConfigError("trace: call it before engine.start() (workers start with it on)")
    engine.config = dataclasses.replace(engine.config, tracing=True)
    ids.ENABLED = True  # inline steps run in this process
    return engine.subscribe(_Exporter(engine, provider))
