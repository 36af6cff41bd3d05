"""What the test harness records of each step call, and the assertions on those calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actorflow.store._codec import decode_value, encode_value

__all__ = ["Call", "CallExpectation", "base_name", "same"]


def base_name(path: str) -> str:
    """A step's name from its path: ``lines[3]/price`` -> ``price``, ``fetch#2`` -> ``fetch``.

    The body of ``for_each("lines", items, fn)`` given as a plain function is named after
    its for_each: ``lines[3]/lines_item`` -> ``lines``.
    """
    parent, _, name = path.rpartition("/")
    if name.endswith("]") and "[" in name:
        name = name[: name.rindex("[")]
    head, sep, tail = name.rpartition("#")
    if sep and tail.isdigit():
        name = head
    if parent and name.endswith("_item"):
        owner = parent.rpartition("/")[2]
        owner = owner[: owner.rindex("[")] if owner.endswith("]") and "[" in owner else owner
        if name == owner + "_item":
            return owner
    return name


def same(value: Any) -> Any:
    """``value`` as a step downstream sees it (encoded and decoded: tuples become lists...)."""
    try:
        return decode_value(encode_value(value, "value"), "value")
    except Exception:
        return value


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a step (or of a mocked service action), as the harness saw it.

    Attributes:
        name: the step's name (or ``service.action``).
        path: the step's path (``lines[3]/price`` in a for_each).
        run_id: the run it belonged to.
        workflow_id: its workflow.
        attempt: the attempt number.
        args: the positional arguments: a code workflow step's ``*args``, a for_each item
            step's ``(item,)``, a service action's; ``()`` for a ``fn(ctx)`` step.
        kwargs: keyword arguments (service actions).
        payload: the run's payload (graph steps).
        last: ``ctx.last`` (graph steps).
        item: ``ctx.item`` (for_each and batch bodies).
        output: what it returned (as the next step sees it), if it returned.
        error: what it raised, if it raised.
        mocked: whether a mock answered instead of the real function.
    """

    name: str
    path: str
    run_id: str
    workflow_id: str
    attempt: int
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    payload: Any
    last: Any
    item: Any
    output: Any
    error: BaseException | None
    mocked: bool


class CallExpectation:
    """Assertions on the calls of one step (``expect_step``) or service action.

    Each method raises ``AssertionError`` with what was seen, or returns this object, so
    they chain: ``t.expect_step("charge").times(2).output({"ok": True})``.
    """

    def __init__(
        self,
        label: str,
        calls: list[Call],
        statuses: Callable[[], list[str]],
    ) -> None:
        self._label = label
        self.calls = calls
        self._statuses = statuses

    def _fail(self, what: str) -> AssertionError:
        seen = "\n".join(f"  - {_describe(c)}" for c in self.calls) or "  (no calls)"
        return AssertionError(f"{self._label}: {what}\ncalls seen:\n{seen}")

    def called(self) -> CallExpectation:
        """It was called at least once."""
        if not self.calls:
            raise self._fail("expected at least one call")
        return self

    def not_called(self) -> CallExpectation:
        """It was never called."""
        if self.calls:
            raise self._fail(f"expected no call, got {len(self.calls)}")
        return self

    def times(self, n: int) -> CallExpectation:
        """It was called exactly ``n`` times (every attempt counts)."""
        if len(self.calls) != n:
            raise self._fail(f"expected {n} call(s), got {len(self.calls)}")
        return self

    def called_with(self, *args: Any, **fields: Any) -> CallExpectation:
        """Some call had these arguments.

        Positional arguments are compared with :attr:`Call.args` (a code step's arguments,
        a for_each body's item, a service action's); keywords ``payload=``, ``last=``,
        ``item=``, ``attempt=`` with those fields of a graph step's call; any other keyword
        with a service action's keyword arguments.
        """
        known = {"payload", "last", "item", "attempt"}

        def matches(c: Call) -> bool:
            if args and same(list(c.args)) != same(list(args)):
                return False
            for key, value in fields.items():
                if key in known:
                    if key == "attempt":
                        if c.attempt != value:
                            return False
                    elif same(getattr(c, key)) != same(value):
                        return False
                elif key not in c.kwargs or same(c.kwargs[key]) != same(value):
                    return False
            return True

        if not any(matches(c) for c in self.calls):
            shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in fields.items())])
            raise self._fail(f"expected a call with ({shown})")
        return self

    def output(self, value: Any) -> CallExpectation:
        """Its last call returned ``value`` (compared as the next step would see it)."""
        done = [c for c in self.calls if c.error is None]
        if not done:
            raise self._fail(f"expected output {value!r}, but no call returned")
        if same(done[-1].output) != same(value):
            raise self._fail(f"expected output {value!r}, got {done[-1].output!r}")
        return self

    def raised(self, exc_type: type[BaseException] = Exception) -> CallExpectation:
        """Some call raised ``exc_type``."""
        if not any(c.error is not None and isinstance(c.error, exc_type) for c in self.calls):
            raise self._fail(f"expected a call raising {exc_type.__name__}")
        return self

    def status(self, expected: str) -> CallExpectation:
        """Its recorded status (``succeeded``, ``failed``, ``skipped``...) in the run."""
        found = self._statuses()
        if expected not in found:
            raise self._fail(f"expected status {expected!r}, recorded: {found or 'nothing'}")
        return self

    def skipped(self) -> CallExpectation:
        """It was skipped (a branch not taken) and never called."""
        self.not_called()
        return self.status("skipped")


def _describe(c: Call) -> str:
    parts = [f"{c.path} attempt {c.attempt}"]
    if c.args:
        parts.append(f"args={c.args!r}")
    if c.kwargs:
        parts.append(f"kwargs={dict(c.kwargs)!r}")
    if c.item is not None:
        parts.append(f"item={c.item!r}")
    if c.error is not None:
        parts.append(f"raised {type(c.error).__name__}: {c.error}")
    else:
        parts.append(f"-> {c.output!r}")
    if c.mocked:
        parts.append("(mocked)")
    return " ".join(parts)
