"""Running one step outside the local worker pool: on a Dask or Ray worker, or inline.

The inline, Dask and Ray transports send a task (the tuple :func:`task_tuple
<actorflow.runtime.dispatch._remote.task_tuple>` builds) to :func:`execute`, which
runs the step with a :class:`StepContext` whose requests (``ctx.steps[...]``, a large value by
reference, ``ctx.state``, services, heartbeats, log records, "I have started") go to a
*link*: anything with ``call((op, task_key, run_id, workflow_id, step, arg))`` that returns
the engine's answer. On a cluster the link is an authenticated connection back to the
engine (``workers/_link.py``); an inline task calls the engine directly.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from actorflow.store._codec import encode_value
from actorflow.workers._interceptors import run_step
from actorflow.workers._protocol import CALL_ARGS, CALL_CHUNK, CALL_HANDLER, CALL_ITEM

__all__ = ["Intercept", "Link", "execute"]

#: Functions by content key, for this process's life (shared by every task it runs).
_functions: dict[str, Callable[..., Any]] = {}


class Link(Protocol):
    """Where a running step's requests go."""

    def call(self, msg: tuple[Any, ...]) -> Any:
        """Send ``(op, task_key, run_id, workflow_id, step, arg)``; return the answer."""
        ...


#: ``intercept(workflow_id, step_path, fn, how) -> fn``: the test harness's hook to mock
#: and record steps (``how`` is 0 for ``fn(ctx)``, 1 for ``fn(item, ctx)``, 4 for
#: ``fn(*args)``, 8 for an error handler).
Intercept = Callable[[str, str, Callable[..., Any], int], Callable[..., Any]]


class TaskHost:
    """What a step's context asks the engine, through a link (a worker's ``Host``).

    Args:
        link: where requests go.
        task_key: the task's key (the engine's name for it).
        run_id: the run.
        workflow_id: its workflow.
        services: the cache of set-up services (default: the process's own).
    """

    def __init__(
        self,
        link: Link,
        task_key: int,
        run_id: str,
        workflow_id: str,
        services: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.link = link
        self.task_key = task_key
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.step = ""
        #: Set for a step on a thread of the engine's process: ``ctx.log`` then sends its
        #: records at this level and above here (``workers/_context.py``).
        self.thread_log_level: int | None = None
        if services is not None:
            self.services_cache = services

    def request(self, op: str, arg: Any) -> Any:
        """Ask the engine (``op`` as in the dispatcher's ``answer``)."""
        return self.link.call((op, self.task_key, self.run_id, self.workflow_id, self.step, arg))

    def heartbeat(self, details: Any) -> None:
        """Record a heartbeat with ``details``."""
        data = None if details is None else encode_value(details, "heartbeat details")
        self.request("beat", data)

    def fetch_output(self, name: str) -> bytes | None:
        """An earlier step's encoded output (``ctx.steps[name]``)."""
        value: bytes | None = self.request("output", name)
        return value


def execute(
    task: tuple[Any, ...],
    host: TaskHost,
    *,
    intercept: Intercept | None = None,
    chain: Sequence[Any] = (),
) -> tuple[bool, Any, float, float]:
    """Run one task; report that it started, then return its outcome.

    ``chain``: the interceptors each step attempt runs through (``workers/_interceptors``).

    Returns:
        ``(ok, encoded output or error tuple, started, ended)``; for a chunk of tiny item
        steps, ``(True, [(ok, data, started, ended), ...], started, ended)``.
    """
    from actorflow.workers._context import CURRENT, RunInfo, StepContext
    from actorflow.workers._main import error_tuple, load_function

    (_, run_id, step, attempt, workflow_id, key, ref, blob, payload, last,
     item, index, call, error, details) = task  # fmt: skip
    started = time.time()

    def one(
        step_name: str, last_v: Any, item_v: Any, index_v: Any, err: Any, det: Any, how: int
    ) -> tuple[bool, Any, float, float]:
        host.step = step_name
        t = time.time()
        ctx = StepContext(
            RunInfo(run_id, workflow_id, step_name, attempt),
            payload,
            last_v,
            host.fetch_output,
            item_v,
            index_v,
            err,
            host=host,
            details=det,
        )
        token = CURRENT.set(ctx)
        try:
            f = fn
            if intercept is not None:
                f = intercept(workflow_id, step_name, fn, CALL_HANDLER if err is not None else how)

            def invoke() -> Any:
                out = (
                    f(*ctx.item) if how == CALL_ARGS
                    else f(ctx.item, ctx) if how & CALL_ITEM
                    else f(ctx)
                )  # fmt: skip
                if inspect.iscoroutine(out):
                    import asyncio  # only async steps need it

                    out = asyncio.run(out)
                return out

            result = run_step(chain, ctx.run, fn, invoke)
            data = encode_value(result, f"output of step {step_name!r}")
            return True, data, t, time.time()
        except BaseException as exc:
            return False, error_tuple(exc), t, time.time()
        finally:
            CURRENT.reset(token)

    try:
        fn = load_function(_functions, key, ref, blob)
    except BaseException as exc:
        return False, error_tuple(exc), started, time.time()
    if call & CALL_CHUNK:  # a chunk of tiny item steps
        outcomes = [one(s, lv, iv, ix, None, None, call & CALL_ITEM) for s, lv, iv, ix in item]
        return True, outcomes, started, time.time()
    return one(step, last, item, index, error, details, call)
