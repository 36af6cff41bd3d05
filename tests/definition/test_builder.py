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


# -- control flow: every GraphError ---------------------------------------------------------


def _graph_problems(wf: af.Workflow) -> tuple[str, ...]:
    with pytest.raises(af.GraphError) as info:
        wf.build()
    return info.value.problems


def test_unclosed_and_stray_blocks() -> None:
    problems = _graph_problems(
        af.Workflow("w").step("a", steps.noop).if_("open", lambda c: True).step("b", steps.noop)
    )
    assert any("if_ 'open' is not closed with endif()" in p for p in problems)
    problems = _graph_problems(
        af.Workflow("w").endif().elif_("x", lambda c: 1).else_().step("a", steps.noop)
    )
    assert any("endif() without an open if_" in p for p in problems)
    assert any("elif_('x') without an open if_" in p for p in problems)
    assert any("else_() without an open if_" in p for p in problems)


def test_elif_after_else_and_double_else() -> None:
    problems = _graph_problems(
        af.Workflow("w")
        .if_("a", lambda c: 1).step("s1", steps.noop)
        .else_().step("s2", steps.noop)
        .elif_("late", lambda c: 1).step("s3", steps.noop)
        .else_()
        .endif()
    )  # fmt: skip
    assert any("elif_('late') after else_()" in p for p in problems)
    assert any("a second else_()" in p for p in problems)


def test_duplicate_names_at_any_depth() -> None:
    def body(item: Any, flow: af.Flow) -> None:
        flow.step("same", steps.noop)

    problems = _graph_problems(
        af.Workflow("w")
        .step("same", steps.noop)
        .for_each("items", lambda c: [], body)
        .parallel("p", {"x": af.Flow().step("same", steps.noop)})
    )
    assert sum("duplicate name 'same'" in p for p in problems) == 2


def test_loop_limits() -> None:
    problems = _graph_problems(
        af.Workflow("w")
        .while_("w1", lambda c: 1, steps.noop, max_iterations=None)  # type: ignore[arg-type]
        .while_("w2", lambda c: 1, af.Flow().step("n2", steps.noop), max_iterations=0)
        .for_each("f", lambda c: [], steps.double_item, concurrency=0)
        .batch("b", lambda c: [], 0, steps.sum_chunk)
        .for_each("empty", lambda c: [], af.Flow())
        .parallel("none", [])
    )
    assert any("while_ 'w1': max_iterations" in p and "None" in p for p in problems)
    assert any("while_ 'w2': max_iterations" in p and "0" in p for p in problems)
    assert any("for_each 'f': concurrency" in p for p in problems)
    assert any("batch 'b': size" in p for p in problems)
    assert any("for_each 'empty'" in p and "has no steps" in p for p in problems)
    assert any("parallel 'none': needs at least one branch" in p for p in problems)


def test_unnamed_parallel_branches_and_bad_bodies() -> None:
    problems = _graph_problems(
        af.Workflow("w").parallel("p", [lambda ctx: 1]).race("r", {"a": 42})  # type: ignore[dict-item]
    )
    assert any("needs a name" in p for p in problems)
    assert any("race 'r', branch 1 ('a'): expected a step function" in p for p in problems)


def test_subflow_to_an_unknown_workflow_is_checked_at_start(tmp_path: Any) -> None:
    engine = af.Engine(data_dir=tmp_path / "s", workers=1)
    engine.define("known").step("a", steps.noop)
    engine.define("parent").subflow("child", "nope")
    with pytest.raises(af.GraphError, match="subflow 'child': unknown workflow 'nope'"):
        engine.start()
    assert not engine.running


def test_builder_body_that_captures_the_item_fails_loudly() -> None:
    from actorflow.definition import ITEM

    with pytest.raises(TypeError, match=r"read the current item in a step as ctx\.item"):
        ITEM.price  # noqa: B018


def test_a_non_structural_problem_is_a_definition_error_not_a_graph_error() -> None:
    with pytest.raises(af.DefinitionError) as info:
        af.Workflow("w").step("a", steps.noop, timeout=-1).build()
    assert not isinstance(info.value, af.GraphError)


def test_names_no_url_path_can_address_are_refused() -> None:
    """A workflow id, a node name or an event is one segment of the REST API's paths
    (``/api/workflows/{id}/trigger``): "." and ".." would be resolved away by any client."""
    for bad in (".", ".."):
        with pytest.raises(DefinitionError, match="a URL path cannot address it"):
            af.Workflow(bad).step("x", steps.noop).build()
        with pytest.raises(DefinitionError, match="a URL path cannot address it"):
            af.Workflow("w").step(bad, steps.noop).build()  # names follow one rule
    af.Workflow("w...").step("...", steps.noop).build()  # other dots are fine
