"""Mocked steps and services of a workflow test, and every call the run made.

A mocked step answers with what the test said (a value, an exception, a function of the
call, or a simulated fault: a crash or a timeout) instead of running; a mocked service's
actions answer the same way. Every call of a step or a service action, mocked or not, is
recorded with its arguments, for ``expect_step`` and ``expect_service``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, Self

from actorflow.testing._base import (
    _UNSET,
    HarnessBase,
    _code,
    _const,
    _Mock,
    _quiet,
)
from actorflow.testing._expect import Call, base_name, same
from actorflow.workers._protocol import CALL_ARGS, CALL_HANDLER, CALL_ITEM

__all__ = ["Mocking"]


class _MockService:
    """A service double: each action is a mock (or a real callable), every call recorded."""

    def __init__(self, owner: Mocking, service_id: str, obj: Any, actions: dict[str, Any]):
        self._owner = owner
        self._id = service_id
        self._obj = obj
        self._actions = actions

    @property
    def client(self) -> Any:
        return self._obj

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._actions:
            target = self._actions[name]
        elif self._obj is not None and hasattr(self._obj, name):
            target = getattr(self._obj, name)
        else:
            raise AttributeError(
                f"mocked service {self._id!r} has no action {name!r} "
                f"(it has {sorted(self._actions) or 'only the attributes of its object'})"
            )
        owner, service_id = self._owner, self._id

        def call(*args: Any, **kwargs: Any) -> Any:
            return owner._service_call(service_id, name, target, args, kwargs)

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"<mocked service {self._id!r}>"


class Mocking(HarnessBase):
    """Mocks and recorded calls (see the module docstring)."""

    def mock_step(
        self,
        name: str,
        *,
        returns: Any = _UNSET,
        raises: Any = None,
        fn: Callable[..., Any] | None = None,
    ) -> Self:
        """Replace a step (every step of that name, in every workflow of the test).

        Give one of:

        Args:
            name: the step's name (inside a for_each, the body step's name).
            returns: the value it returns.
            raises: an exception (instance or class) it raises, on every attempt. Raise
                :class:`~actorflow.StepTimeout` or :class:`~actorflow.WorkerCrashed` to have
                the attempt recorded as a timeout or a worker crash.
            fn: a function called instead: with ``ctx`` for a graph step (``(item, ctx)``
                for a for_each body given as a plain function), with the step's arguments
                for a code workflow step.

        Returns:
            This harness, to chain calls.

        A graph step's name is checked here: no graph workflow of the test has such a
        step, and no code workflow could have it, is a ``ValueError`` at once. A code
        workflow's step names are only known when it runs: a mock that no step used is an
        ``AssertionError`` when the test ends (``close()``, the ``with`` block or the
        ``workflow_test`` fixture), so a misspelt name cannot pass silently.

        Raises:
            ValueError: none or several of ``returns``, ``raises``, ``fn``; the test has
                already started; or no step of the test's workflows has this name.
        """
        given = sum(x is not None and x is not _UNSET for x in (raises, fn)) + (
            returns is not _UNSET
        )
        if given != 1:
            raise ValueError(
                f"mock_step({name!r}): expected exactly one of returns=, raises= or fn=, "
                f"got {given}"
            )
        if fn is not None and not callable(fn):
            raise ValueError(f"mock_step({name!r}): fn: expected a callable, got {fn!r}")
        if raises is not None and not (
            isinstance(raises, BaseException)
            or (isinstance(raises, type) and issubclass(raises, BaseException))
        ):
            raise ValueError(f"mock_step({name!r}): raises: expected an exception, got {raises!r}")
        self._check_not_started(f"mock_step({name!r})")
        names = self._graph_step_names()
        if name not in names:
            if not any(_code(wf) for wf in self._definitions.values()):
                raise ValueError(
                    f"mock_step: no step named {name!r} in {sorted(self._definitions)} "
                    f"(steps: {sorted(names)})"
                )
            self._unchecked.add(name)  # a code workflow's step, known when it runs
        self._mocks[name] = _Mock(returns, raises, fn)
        return self

    def mock_service(self, service_id: str, obj: Any = None, **actions: Any) -> Self:
        """Replace a service: ``ctx.services.<id>.<action>(...)`` calls these instead.

        Args:
            service_id: the service's id.
            obj: an object whose attributes are the actions (a fake client), or None.
            **actions: actions by name: a callable called with the action's arguments, or
                any other value, returned as is.

        Returns:
            This harness.
        """
        self._check_not_started(f"mock_service({service_id!r})")
        table = {k: (v if callable(v) else _const(v)) for k, v in actions.items()}
        self._services[service_id] = _MockService(self, service_id, obj, table)
        return self

    def _graph_step_names(self) -> set[str]:
        """The step names of the test's graph workflows (a for_each body's too)."""
        names = {
            s.name for wf in self._definitions.values() if not _code(wf) for s in wf.build().steps
        }
        return names | {n[: -len("_item")] for n in names if n.endswith("_item")}

    def close(self) -> None:
        """Stop the test engine; then fail if a code-workflow mock was never used.

        Raises:
            AssertionError: ``mock_step(name)`` for a name no graph workflow has, and no
                step of that name ran (a misspelt name, or a step the test never reached).
        """
        super().close()
        if not self._unchecked:
            return
        used = {c.name for c in self._calls if c.mocked}
        unused, self._unchecked = sorted(self._unchecked - used), set()
        if unused:
            ran = sorted({c.name for c in self._calls})
            raise AssertionError(
                f"mock_step: no step named {', '.join(map(repr, unused))} ran in this test "
                f"(a code workflow's step names are known when it runs; steps that ran: "
                f"{ran or 'none'}): check the name, or drop the mock"
            )

    def _intercept(
        self, workflow_id: str, path: str, fn: Callable[..., Any], how: int
    ) -> Callable[..., Any]:
        if how == CALL_HANDLER:
            return fn  # an error handler runs as written
        name = base_name(path)
        mock = self._mocks.get(name)

        def call(*args: Any) -> Any:
            from actorflow.workers._context import CURRENT

            ctx = CURRENT.get()
            shown: tuple[Any, ...] = (
                args if how == CALL_ARGS else args[:1] if how & CALL_ITEM else ()
            )

            def invoke() -> Any:
                result = mock.answer(args, {}) if mock is not None else fn(*args)
                return asyncio.run(result) if inspect.iscoroutine(result) else result

            def describe(output: Any, error: BaseException | None) -> Call:
                return Call(
                    name=name,
                    path=path,
                    run_id=ctx.run.id,
                    workflow_id=workflow_id,
                    attempt=ctx.run.attempt,
                    args=tuple(shown),
                    kwargs={},
                    payload=_quiet(lambda: ctx.payload) if how != CALL_ARGS else None,
                    last=_quiet(lambda: ctx.last) if how != CALL_ARGS else None,
                    item=_quiet(lambda: ctx.item) if how & CALL_ITEM else None,
                    output=same(output) if error is None else None,
                    error=error,
                    mocked=mock is not None,
                )

            return self._observed(invoke, describe)

        return call

    def _service_call(
        self,
        service_id: str,
        action: str,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        from actorflow.workers._context import CURRENT

        ctx = CURRENT.get(None)
        label = f"{service_id}.{action}"

        def describe(output: Any, error: BaseException | None) -> Call:
            return Call(
                name=label,
                path=label,
                run_id=ctx.run.id if ctx is not None else "",
                workflow_id=ctx.run.workflow_id if ctx is not None else "",
                attempt=ctx.run.attempt if ctx is not None else 0,
                args=tuple(args),
                kwargs=dict(kwargs),
                payload=None,
                last=None,
                item=None,
                output=output if error is None else None,
                error=error,
                mocked=True,
            )

        return self._observed(lambda: target(*args, **kwargs), describe)

    def _observed(
        self,
        invoke: Callable[[], Any],
        describe: Callable[[Any, BaseException | None], Call],
    ) -> Any:
        """Call ``invoke()`` and record the call, whether it returned or raised."""
        output: Any = None
        error: BaseException | None = None
        try:
            output = invoke()
            return output
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._record(describe(output, error))
