"""OpenTelemetry spans for runs and steps, and trace context inside worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import actorflow as af
from actorflow.workers import _tracing
from tests import steps

MakeEngine = Callable[..., af.Engine]


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    _tracing.ENABLED = False


def test_runs_and_steps_become_spans_with_context_in_the_worker(
    make_engine: MakeEngine, spans: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    provider, exporter = spans
    engine = make_engine()
    engine.define("traced").step("inside", steps.span_here).step(
        "flaky", steps.fail_until, retry=af.Retry(attempts=2, delay="10ms")
    )
    engine.define("bad").step("boom", steps.fail_always)
    af.observability.trace(engine, tracer_provider=provider)
    with engine:
        run = engine.trigger("traced", {"succeed_on": 2, "log": str(tmp_path / "log")})
        run.result(timeout=60)
        with pytest.raises(af.StepFailed):
            engine.trigger("bad", {}).result(timeout=60)
    got = {s.name: s for s in exporter.get_finished_spans() if s.attributes}
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == [
        "run bad",
        "run traced",
        "step boom",
        "step flaky",
        "step flaky",
        "step inside",
    ]
    run_span, step_span = got["run traced"], got["step inside"]
    assert step_span.parent is not None and step_span.parent.span_id == run_span.context.span_id
    assert step_span.context.trace_id == run_span.context.trace_id
    assert run_span.attributes["actorflow.run_id"] == run.id
    assert run_span.status.status_code == StatusCode.OK
    assert step_span.start_time <= step_span.end_time
    assert run_span.start_time <= step_span.start_time and step_span.end_time <= run_span.end_time
    flaky = sorted(
        (s for s in exporter.get_finished_spans() if s.name == "step flaky"),
        key=lambda s: s.attributes["actorflow.attempt"],
    )
    assert [s.status.status_code for s in flaky] == [StatusCode.ERROR, StatusCode.OK]
    assert "not yet (attempt 1)" in (flaky[0].status.description or "")
    assert got["run bad"].status.status_code == StatusCode.ERROR
    assert got["step boom"].parent.span_id == got["run bad"].context.span_id


def test_trace_context_reaches_the_worker(
    make_engine: MakeEngine, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    engine = make_engine()
    engine.define("ctx").step("inside", steps.span_here)
    af.observability.trace(engine, tracer_provider=provider)
    with engine:
        out = engine.trigger("ctx", {}).result(timeout=60)
    step_span = next(s for s in exporter.get_finished_spans() if s.name == "step inside")
    assert out["pid"] != os.getpid()  # a worker process
    assert out["trace_id"] == f"{step_span.context.trace_id:032x}"
    assert out["parent_span_id"] == f"{step_span.context.span_id:016x}"


def test_trace_refuses_a_running_engine_or_a_non_sdk_provider(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("x").step("one", steps.add_one)
    with pytest.raises(
        af.ConfigError, match=r"expected an opentelemetry\.sdk\.trace\.TracerProvider"
    ):
        af.observability.trace(engine, tracer_provider=object())
    with engine, pytest.raises(af.ConfigError, match=r"before engine\.start"):
        af.observability.trace(engine, tracer_provider=TracerProvider())
