"""Turn what a flow recorded into immutable specs, collecting every problem on the way.

Nothing stops at the first mistake: each problem is noted with where it is and what was
expected, and the builder raises one :class:`~actorflow.errors.DefinitionError` listing them all.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actorflow.definition._breaker import CircuitBreaker
from actorflow.definition._cache import Cache
from actorflow.definition._flow import (
    ITEM,
    Flow,
    RawBranch,
    RawCancel,
    RawForEach,
    RawParallel,
    RawSleep,
    RawStep,
    RawSubflow,
    RawWait,
    RawWhile,
)
from actorflow.definition._options import NO_RETRY, Retry, parse_duration, validate_name
from actorflow.definition._queue import Queue
from actorflow.definition._spec import (
    ArmSpec,
    BranchSpec,
    CancelSpec,
    ForEachSpec,
    FunctionRef,
    NodeSpec,
    ParallelSpec,
    SleepSpec,
    StepSpec,
    SubflowSpec,
    WaitSpec,
    WhileSpec,
    function_ref,
)
from actorflow.errors import DefinitionError
from actorflow.store import _keys as K

__all__ = ["DEFAULT_CONCURRENCY", "Context", "build_flow", "path_problems", "validate_name"]

#: Items of a for_each in flight at once unless told otherwise.
DEFAULT_CONCURRENCY = 1000


@dataclass
class Context:
    """What building needs to know and collects: defaults, problems, names seen."""

    default_retry: Retry = NO_RETRY
    step_timeout: float | None = None
    problems: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    #: A problem with the graph's structure was found (the error raised is a GraphError).
    structural: bool = False

    def graph(self, problem: str) -> None:
        """Note a problem with the structure of the graph."""
        self.problems.append(problem)
        self.structural = True

    def name(self, name: Any, what: str) -> bool:
        """Check a node name (valid, unique at any depth); False if it is unusable."""
        problem = validate_name(name, what)
        if problem is not None:
            self.problems.append(problem)
            return False
        if name in self.names:
            self.graph(f"{what}: duplicate name {name!r}; names must be unique at any depth")
            return False
        self.names.add(name)
        return True


def path_problems(block: tuple[NodeSpec, ...], prefix: int = 0) -> list[str]:
    """Nodes whose step path could pass the store's :data:`~actorflow.store._keys.MAX_PATH`.

    A node inside loops is stored under ``loop[index]/.../name``; with the longest index each
    loop allows, that path must still fit, or its records could not be written at run time.
    """
    out: list[str] = []
    for node in block:
        length = prefix + len(node.name.encode())
        if length > K.MAX_PATH:
            out.append(
                f"{node.name[:40]!r}: its step path (with the loops around it) can reach "
                f"{length} bytes, over the limit of {K.MAX_PATH}: use shorter names"
            )
        if isinstance(node, BranchSpec | ParallelSpec):
            for arm in node.arms:
                out.extend(path_problems(arm.block, prefix))
        elif isinstance(node, WhileSpec | ForEachSpec):
            out.extend(path_problems(node.body, length + len("[]/") + K.INDEX_DIGITS))
    return out


def build_flow(flow: Flow, ctx: Context, where: str) -> tuple[NodeSpec, ...]:
    """The nodes of ``flow``, with its structural mistakes reported."""
    for note in flow._notes:
        ctx.graph(f"{where}: {note}")
    for branch in flow._stack:
        ctx.graph(f"{where}: if_ {branch.name!r} is not closed with endif()")
    return _block(flow._block, ctx)


def _block(raw_block: list[Any], ctx: Context) -> tuple[NodeSpec, ...]:
    out: list[NodeSpec] = []
    for raw in raw_block:
        node = _node(raw, ctx)
        if node is not None:
            out.append(node)
    return tuple(out)


def _node(raw: Any, ctx: Context) -> NodeSpec | None:
    if isinstance(raw, RawStep):
        return _step(raw, ctx, f"{raw.kind} {raw.name!r}")
    if isinstance(raw, RawBranch):
        return _branch(raw, ctx)
    if isinstance(raw, RawParallel):
        return _parallel(raw, ctx)
    if isinstance(raw, RawWhile):
        return _while(raw, ctx)
    if isinstance(raw, RawForEach):
        return _for_each(raw, ctx)
    if isinstance(raw, RawSubflow):
        return _subflow(raw, ctx)
    if isinstance(raw, RawSleep):
        return _sleep(raw, ctx)
    if isinstance(raw, RawWait):
        return _wait(raw, ctx)
    assert isinstance(raw, RawCancel)
    if not isinstance(raw.reason, str):
        ctx.problems.append(f"cancel: reason must be a string, got {raw.reason!r}")
    ctx.names.add(raw.name)
    return CancelSpec(raw.name, str(raw.reason))


# -- leaves ----------------------------------------------------------------------------------


def _step(raw: RawStep, ctx: Context, where: str) -> StepSpec | None:
    ok = ctx.name(raw.name, f"{where}: name")
    args = 2 if raw.call == "item" else 1
    expected = "(item, ctx)" if args == 2 else "(ctx)"
    fn_ok = _check_callable(raw.fn, args, f"{where}: fn", expected, ctx)
    timeout = _duration(raw.timeout, f"{where}: timeout", ctx)
    heartbeat = _duration(raw.heartbeat_timeout, f"{where}: heartbeat_timeout", ctx)
    retry = ctx.default_retry
    if raw.retry is not None:
        if isinstance(raw.retry, Retry):
            retry = raw.retry
        else:
            ctx.problems.append(f"{where}: retry: expected af.Retry(...), got {raw.retry!r}")
    handler = _handler(raw.on_error, where, ctx)
    if raw.breaker is not None and not isinstance(raw.breaker, CircuitBreaker):
        ctx.problems.append(
            f"{where}: breaker: expected af.CircuitBreaker(...), got {raw.breaker!r}"
        )
    if raw.cache is not None and not isinstance(raw.cache, Cache):
        ctx.problems.append(
            f"{where}: cache: expected af.Cache(key=..., ttl=...), got {raw.cache!r}"
        )
    if raw.queue is not None and not isinstance(raw.queue, Queue):
        ctx.problems.append(f"{where}: queue: expected af.Queue(...), got {raw.queue!r}")
    if not (ok and fn_ok):
        return None
    ref = _ref(raw.fn, f"{where}: fn", ctx)
    if ref is None:
        return None
    return StepSpec(
        name=raw.name,
        kind="action" if raw.kind == "action" else "step",
        fn=ref,
        timeout=timeout if raw.timeout is not None else ctx.step_timeout,
        retry=retry,
        on_error=handler,
        call="item" if raw.call == "item" else "ctx",
        heartbeat_timeout=heartbeat,
        breaker=raw.breaker if isinstance(raw.breaker, CircuitBreaker) else None,
        cache=raw.cache if isinstance(raw.cache, Cache) else None,
        queue=raw.queue if isinstance(raw.queue, Queue) else None,
    )


def _subflow(raw: RawSubflow, ctx: Context) -> SubflowSpec | None:
    where = f"subflow {raw.name!r}"
    ok = ctx.name(raw.name, f"{where}: name")
    if (p := validate_name(raw.workflow_id, f"{where}: workflow_id")) is not None:
        ctx.problems.append(p)
        ok = False
    if raw.input is not None:
        ok = _check_callable(raw.input, 1, f"{where}: input", "(ctx)", ctx) and ok
    handler = _handler(raw.on_error, where, ctx)
    if not ok:
        return None
    return SubflowSpec(raw.name, raw.workflow_id, raw.input, handler)


def _sleep(raw: RawSleep, ctx: Context) -> SleepSpec | None:
    where = f"sleep {raw.name!r}"
    ok = ctx.name(raw.name, f"{where}: name")
    seconds = _duration(raw.duration, f"{where}: duration", ctx, allow_zero=True)
    if not ok or seconds is None:
        if raw.duration is None:
            ctx.problems.append(f"{where}: duration: expected a duration, got None")
        return None
    return SleepSpec(raw.name, seconds)


def _wait(raw: RawWait, ctx: Context) -> WaitSpec | None:
    kind = "wait_for_event" if raw.kind == "event" else "human_in_the_loop"
    where = f"{kind} {raw.name!r}"
    ok = ctx.name(raw.name, f"{where}: name")
    problems = ctx.problems
    n = len(problems)
    timeout = _duration(raw.timeout, f"{where}: timeout", ctx)
    if raw.on_timeout not in ("fail", "continue"):
        problems.append(
            f"{where}: on_timeout: expected 'fail' or 'continue', got {raw.on_timeout!r}"
        )
    if raw.kind == "event":
        if (p := validate_name(raw.event, f"{where}: event")) is not None:
            problems.append(p)
        if isinstance(raw.key, str):
            if (p := K.part_problem(raw.key, f"{where}: key", K.MAX_USER_KEY)) is not None:
                problems.append(p)
        elif raw.key is not None:
            _check_callable(raw.key, 1, f"{where}: key", "(ctx) or a string", ctx)
        if raw.match is not None:
            _check_callable(raw.match, 2, f"{where}: match", "(ctx, payload)", ctx)
    else:
        if not isinstance(raw.description, str):
            problems.append(f"{where}: description: expected a string, got {raw.description!r}")
        if raw.on_pause is not None:
            _check_callable(raw.on_pause, 2, f"{where}: on_pause", "(token, ctx)", ctx)
        if raw.metadata is not None:
            try:
                import orjson

                orjson.dumps(raw.metadata)
            except TypeError as exc:
                problems.append(f"{where}: metadata: expected JSON-compatible data ({exc})")
    if not ok or len(problems) > n:
        return None
    return WaitSpec(
        raw.name,
        "event" if raw.kind == "event" else "approval",
        event=raw.event,
        key=raw.key,
        match=raw.match,
        timeout=timeout,
        on_timeout=raw.on_timeout,
        default=raw.default,
        description=raw.description,
        on_pause=raw.on_pause,
        metadata=raw.metadata,
    )


# -- composites ------------------------------------------------------------------------------


def _branch(raw: RawBranch, ctx: Context) -> BranchSpec | None:
    where = f"if_ {raw.name!r}"
    ok = ctx.name(raw.name, f"{where}: name")
    # An unclosed if_ is reported by build_flow, which sees the flow's open blocks.
    arms: list[ArmSpec] = []
    seen: set[str] = set()
    for arm in raw.arms:
        arm_where = f"{where}, arm {arm.name!r}"
        if arm.pred is not None:
            if (p := validate_name(arm.name, f"{arm_where}: name")) is not None:
                ctx.problems.append(p)
                ok = False
            ok = _check_callable(arm.pred, 1, f"{arm_where}: predicate", "(ctx)", ctx) and ok
        if arm.name in seen:
            ctx.graph(f"{arm_where}: duplicate arm name")
            ok = False
        seen.add(arm.name)
        arms.append(ArmSpec(arm.name, _block(arm.block, ctx), arm.pred))
    return BranchSpec(raw.name, tuple(arms)) if ok else None


def _parallel(raw: RawParallel, ctx: Context) -> ParallelSpec | None:
    what = "race" if raw.race else "parallel"
    where = f"{what} {raw.name!r}"
    ok = ctx.name(raw.name, f"{where}: name")
    branches = raw.branches
    pairs: list[tuple[Any, Any]] = []
    if isinstance(branches, Mapping):
        pairs = list(branches.items())
    elif isinstance(branches, list | tuple):
        pairs = [(_name_of(b), b) for b in branches]
    else:
        ctx.graph(f"{where}: expected a list or dict of branches, got {branches!r}")
        return None
    if not pairs:
        ctx.graph(f"{where}: needs at least one branch")
        ok = False
    arms: list[ArmSpec] = []
    seen: set[str] = set()
    for i, (name, body) in enumerate(pairs):
        arm_where = f"{where}, branch {i + 1}"
        if name is None:
            ctx.graph(f"{arm_where}: needs a name: use a named function or flow, or a dict by name")
            ok = False
            continue
        if (p := validate_name(name, f"{arm_where}: name")) is not None:
            ctx.problems.append(p)
            ok = False
            continue
        if name in seen:
            ctx.graph(f"{arm_where}: duplicate branch name {name!r}")
            ok = False
        seen.add(name)
        block = _body(body, ctx, f"{arm_where} ({name!r})", step_name=name, item=False)
        if block is None:
            ok = False
            continue
        arms.append(ArmSpec(name, block))
    return ParallelSpec(raw.name, tuple(arms), raw.race) if ok else None


def _while(raw: RawWhile, ctx: Context) -> WhileSpec | None:
    where = f"while_ {raw.name!r}"
    ok = ctx.name(raw.name, f"{where}: name")
    ok = _check_callable(raw.pred, 1, f"{where}: predicate", "(ctx)", ctx) and ok
    limit = raw.max_iterations
    if limit is None or not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        ctx.graph(f"{where}: max_iterations: expected an integer >= 1, got {limit!r}")
        ok = False
    body = _body(raw.body, ctx, where, step_name=_fn_name(raw.body, f"{raw.name}_body"), item=False)
    if not ok or body is None:
        return None
    return WhileSpec(raw.name, raw.pred, body, limit)


def _for_each(raw: RawForEach, ctx: Context) -> ForEachSpec | None:
    what = "batch" if raw.size is not None else "for_each"
    where = f"{what} {raw.name!r}"
    ok = ctx.name(raw.name, f"{where}: name")
    ok = _check_callable(raw.items, 1, f"{where}: items", "(ctx)", ctx) and ok
    concurrency = raw.concurrency if raw.concurrency is not None else DEFAULT_CONCURRENCY
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        ctx.graph(f"{where}: concurrency: expected an integer >= 1, got {concurrency!r}")
        ok = False
    size = raw.size
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        ctx.graph(f"{where}: size: expected an integer >= 1, got {size!r}")
        ok = False
    step_name = _fn_name(raw.body, f"{raw.name}_item")
    body = _body(raw.body, ctx, where, step_name=step_name, item=True)
    if not ok or body is None:
        return None
    return ForEachSpec(raw.name, raw.items, body, concurrency, size)


def _body(
    body: Any, ctx: Context, where: str, *, step_name: str, item: bool
) -> tuple[NodeSpec, ...] | None:
    """A body or branch: a flow, a builder ``fn([item,] flow)``, or a step function."""
    if isinstance(body, Flow):
        block = build_flow(body, ctx, where)
    elif callable(body) and _is_builder(body):
        flow = Flow(step_name)
        try:
            if item:
                body(ITEM, flow)
            else:
                body(flow)
        except Exception as exc:
            ctx.problems.append(f"{where}: the body builder raised {type(exc).__name__}: {exc}")
            return None
        block = build_flow(flow, ctx, where)
    elif callable(body):
        two = item and _arity(body) == 2
        raw = RawStep(step_name, body, "step", None, None, call="item" if two else "ctx")
        step = _step(raw, ctx, f"{where}: step {step_name!r}")
        return (step,) if step is not None else None
    else:
        ctx.graph(f"{where}: expected a step function, a flow or a builder, got {body!r}")
        return None
    if not block:
        ctx.graph(f"{where}: has no steps")
        return None
    return block


# -- helpers ---------------------------------------------------------------------------------


def _is_builder(fn: Callable[..., Any]) -> bool:
    """A builder's last parameter is named ``flow`` or annotated as a Flow."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    last = params[-1]
    annotation = last.annotation
    return last.name == "flow" or annotation is Flow or annotation in ("Flow", "af.Flow")


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional)


def _name_of(body: Any) -> str | None:
    if isinstance(body, Flow):
        return body.name
    name = getattr(body, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else None


def _fn_name(body: Any, default: str) -> str:
    name = getattr(body, "__name__", None) if not isinstance(body, Flow) else None
    return name if isinstance(name, str) and name.isidentifier() else default


def _check_callable(fn: Any, args: int, what: str, expected: str, ctx: Context) -> bool:
    if not callable(fn):
        ctx.problems.append(f"{what}: expected a callable {expected}, got {fn!r}")
        return False
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True  # builtins without a signature: trust the caller
    try:
        sig.bind(*([None] * args))
    except TypeError:
        ctx.problems.append(f"{what}: expected a callable {expected}, got signature {sig}")
        return False
    return True


def _handler(handler: Any, where: str, ctx: Context) -> FunctionRef | None:
    if handler is None:
        return None
    if not _check_callable(handler, 1, f"{where}: on_error", "(ctx)", ctx):
        return None
    return _ref(handler, f"{where}: on_error", ctx)


def _ref(fn: Callable[..., Any], what: str, ctx: Context) -> FunctionRef | None:
    try:
        return function_ref(fn)
    except Exception as exc:  # cloudpickle can fail on exotic closures
        ctx.problems.append(f"{what}: cannot be sent to a worker: {exc}")
        return None


def _duration(value: Any, what: str, ctx: Context, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value, what, allow_zero=allow_zero)
    except DefinitionError as exc:
        ctx.problems.extend(exc.problems)
        return None
