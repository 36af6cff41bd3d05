"""A workflow test's state, and what it reads of its run.

``WorkflowTest`` is one class built as a chain of parts, each in its own module and using
the parts below it: ``HarnessBase`` (this module: the workflow, the engine made for it, the
run and what it recorded, the calls seen) <- ``Mocking`` (``_mocks.py``: mocked steps and
services, and every call observed) <- ``Driving`` (``_driver.py``: running the workflow on
the manual clock, delivering what the test scripted) <- ``WorkflowTest`` (``_harness.py``:
the expectations).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actorflow._clock import ManualClock
from actorflow._types import RunStatus
from actorflow.engine._engine import Engine
from actorflow.engine._handle import RunHandle
from actorflow.errors import (
    StepTimeout,
    WorkerCrashed,
)
from actorflow.runtime.dispatch._inline import SimulatedFault
from actorflow.runtime.kernel._inbox import Activity
from actorflow.testing._expect import Call

if TYPE_CHECKING:
    pass

__all__ = ["HarnessBase"]

_UNSET: Any = object()

_live: weakref.WeakSet[HarnessBase] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # a test that forgot close() must not keep the process alive
    for t in list(_live):
        t._stop()


@dataclass
class _Mock:
    returns: Any = _UNSET
    raises: Any = None
    fn: Callable[..., Any] | None = None

    def answer(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if self.fn is not None:
            return self.fn(*args, **kwargs)
        if self.raises is not None:
            exc = self.raises
            kind = _fault_kind(exc)
            if kind is not None:
                raise SimulatedFault(kind)
            raise exc() if isinstance(exc, type) else exc
        return self.returns


def _fault_kind(exc: Any) -> str | None:
    t = exc if isinstance(exc, type) else type(exc)
    if issubclass(t, StepTimeout):
        return "timeout"
    if issubclass(t, WorkerCrashed):
        return "crash"
    return None


@dataclass
class _Script:
    approvals: list[tuple[str, Any]] = field(default_factory=list)
    events: list[tuple[str, Any, str | None]] = field(default_factory=list)
    signals: list[tuple[str, Any, list[Any] | None, str | None]] = field(default_factory=list)


def _is(exc: BaseException, exc_type: type[BaseException]) -> bool:
    """``exc`` is an ``exc_type``, or stands in for one (a ``RemoteError`` of that type)."""
    if isinstance(exc, exc_type):
        return True
    return getattr(exc, "type_name", None) == f"{exc_type.__module__}.{exc_type.__qualname__}"


def _const(value: Any) -> Callable[..., Any]:
    def answer(*args: Any, **kwargs: Any) -> Any:
        return value

    return answer


def _quiet(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except Exception:
        return None


def _code(wf: Any) -> bool:
    from actorflow.code._definition import CodeWorkflow

    return isinstance(wf, CodeWorkflow)


class HarnessBase:
    """A workflow test's state (see the module docstring)."""

    def __init__(
        self,
        workflow: Any,
        *,
        workflows: Iterable[Any] = (),
        start: float = 1_700_000_000.0,
        timeout: float = 30.0,
        **settings: Any,
    ) -> None:
        if not hasattr(workflow, "build") or not hasattr(workflow, "id"):
            raise TypeError(
                "WorkflowTest: workflow: expected a workflow (engine.define(...) or "
                f"@engine.workflow(...)), got {workflow!r}"
            )
        self.workflow = workflow
        found: dict[str, Any] = {}
        owner = getattr(workflow, "_owner", None)
        engine = owner() if owner is not None else None
        if engine is not None:
            found.update(engine._definitions)
        for wf in workflows:
            found[wf.id] = wf
        found[workflow.id] = workflow
        self._definitions = found
        self.clock = ManualClock(start)
        self._start = start
        self._timeout = timeout
        self._settings = settings
        self._mocks: dict[str, _Mock] = {}
        self._unchecked: set[str] = set()  # mocks of names only a code workflow could have
        self._services: dict[str, Any] = {}  # service id -> its double (_mocks._MockService)
        self._calls: list[Call] = []
        self._calls_lock = threading.Lock()
        self._script = _Script()
        self._engine: Engine | None = None
        self._activity = Activity()
        self.handle: RunHandle | None = None
        self._first_call = 0  # calls before this index belong to earlier runs
        self._skipping = True  # run(): skip to the next timer whenever idle; start(): not
        _live.add(self)

    @property
    def run_id(self) -> str:
        """The current run's id."""
        return self._handle().id

    @property
    def status(self) -> RunStatus:
        """The current run's status (of the last run, if it continued as new)."""
        return self._handle().status()

    @property
    def output(self) -> Any:
        """The run's result if it completed, else None."""
        if self.status != RunStatus.COMPLETED:
            return None
        return self.result()

    def result(self) -> Any:
        """The run's result.

        Raises:
            StepFailed: (or another run error) the run failed.
            ResultTimeout: the run has not finished.
        """
        return self._handle().result(timeout=0)

    @property
    def elapsed(self) -> float:
        """Seconds of (skipped) clock time since the test began."""
        return self.clock.now() - self._start

    @property
    def calls(self) -> list[Call]:
        """Every step call seen so far, in order."""
        with self._calls_lock:
            return list(self._calls)

    def _is_code(self) -> bool:
        from actorflow.code._definition import CodeWorkflow

        return isinstance(self.workflow, CodeWorkflow)

    def _check_not_started(self, what: str) -> None:
        if self._engine is not None:
            raise ValueError(f"{what}: set mocks up before the first run()")

    def _handle(self) -> RunHandle:
        if self.handle is None:
            raise ValueError("no run yet: call run(...) first")
        return self.handle

    def _calls_of(self, name: str) -> list[Call]:
        if self.handle is None:
            raise ValueError("no run yet: call run(...) first")
        return [c for c in self.calls[self._first_call :] if c.name == name]

    def _record(self, call: Call) -> None:
        with self._calls_lock:
            self._calls.append(call)

    def close(self) -> None:
        """Stop the test engine (also done at exit, and by the pytest fixture)."""
        self._stop()

    def _stop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.stop(drain=False, timeout=5.0)
