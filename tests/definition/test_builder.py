from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import actorflow as af
from actorflow.definition import parse_duration
from actorflow.errors import DefinitionError
from tests import steps


def test_builder_chains_and_builds_an_immutable_spec() -> None:
    wf = af.Workflow("orders", retry=af.Retry(attempts=2), step_timeout="5s")
    assert wf.step("a", steps.noop).action("b", steps.noop, timeout=1).step("c", steps.noop) is wf
    spec = wf.build()
    assert [s.name for s in spec.steps] == ["a", "b", "c"]
    assert [s.kind for s in spec.steps] == ["step", "action", "step"]
    assert spec.steps[0].timeout == 5.0 and spec.steps[1].timeout == 1.0
    assert spec.steps[0].retry.attempts == 2
    assert spec.steps[0].fn.ref == "tests.steps:noop"  # importable: by reference
    assert wf.build() is spec
    with pytest.raises(AttributeError):
        spec.id = "x"  # type: ignore[misc]


def test_local_functions_travel_by_value() -> None:
    offset = 5
    spec = af.Workflow("w").step("a", lambda ctx: offset).build()
    assert spec.steps[0].fn.ref is None and spec.steps[0].fn.blob


def test_every_problem_is_listed_once() -> None:
    def two_args(a: Any, b: Any) -> None: ...

    wf = (
        af.Workflow("bad", concurrency=0, timeout="soon")
        .step("a", steps.noop)
        .step("a", steps.noop)
        .step("", steps.noop)
        .step("b", "not callable")  # type: ignore[arg-type]
        .step("c", two_args)
        .step("d", steps.noop, timeout=-1)
        .step("e", steps.noop, retry="twice")  # type: ignore[arg-type]
    )
    with pytest.raises(DefinitionError) as info:
        wf.build()
    problems = info.value.problems
    text = str(info.value)
    assert len(problems) == 8, problems
    assert "workflow 'bad' has 8 problems" in text
    assert any("duplicate name" in p and "'a'" in p for p in problems)
    assert any("concurrency" in p for p in problems)
    assert any("timeout" in p and "soon" in p for p in problems)
    assert any("name" in p and "non-empty" in p for p in problems)
    assert any("'b'" in p and "callable" in p for p in problems)
    assert any("'c'" in p and "(ctx)" in p and "signature" in p for p in problems)
    assert any("'d'" in p and "positive duration" in p for p in problems)
    assert any("'e'" in p and "af.Retry" in p for p in problems)


def test_empty_workflow_and_bad_id() -> None:
    with pytest.raises(DefinitionError, match="has no steps"):
        af.Workflow("empty").build()
    with pytest.raises(DefinitionError, match="workflow id"):
        af.Workflow("a\x00b").step("x", steps.noop).build()


def test_no_steps_after_build() -> None:
    wf = af.Workflow("w").step("a", steps.noop)
    wf.build()
    with pytest.raises(DefinitionError, match="already built"):
        wf.step("b", steps.noop)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("10m", 600),
        ("24h", 86400),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        (3, 3),
        (0.25, 0.25),
        (dt.timedelta(minutes=2), 120),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text, "timeout") == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5", "five seconds", "5x", "-5s", -1, 0, True, None, "nan"])
def test_bad_durations_name_the_field(bad: Any) -> None:
    with pytest.raises(DefinitionError, match="timeout"):
        parse_duration(bad, "timeout")


def test_zero_delay_allowed_where_asked() -> None:
    assert parse_duration("0s", "retry.delay", allow_zero=True) == 0


def test_retry_policy() -> None:
    r = af.Retry(attempts=4, backoff="exponential", delay="1s", max_delay="3s")
    assert [r.delay_for(n) for n in (1, 2, 3, 4)] == [1, 2, 3, 3]
    fixed = af.Retry(attempts=3, backoff="fixed", delay=2, jitter=0.5)
    assert fixed.delay_for(3) == 2
    assert fixed.delay_for(1, random=0.999) == pytest.approx(1.001)
    nr = af.Retry(non_retryable=(steps.NotRetryable, "KeyError"))
    assert not nr.is_retryable(["tests.steps.NotRetryable", "builtins.Exception"])
    assert not nr.is_retryable(["builtins.KeyError", "builtins.LookupError"])
    assert nr.is_retryable(["builtins.ValueError", "builtins.Exception"])
    # subclasses match: the MRO names include the base
    assert not af.Retry(non_retryable=(LookupError,)).is_retryable(
        ["builtins.KeyError", "builtins.LookupError"]
    )


def test_retry_lists_every_bad_field() -> None:
    with pytest.raises(DefinitionError) as info:
        af.Retry(attempts=0, backoff="linear", delay="x", jitter=2, non_retryable=(42,))  # type: ignore[arg-type]
    assert len(info.value.problems) == 5
    for field in ("attempts", "backoff", "delay", "jitter", "non_retryable"):
        assert any(f"retry.{field}" in p for p in info.value.problems)
