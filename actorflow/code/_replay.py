"""Replaying a history against the current code, without an engine: the determinism check.

``actorflow replay RUN`` and :func:`actorflow.testing.replay` use this to tell, before a
deploy, whether today's code still takes the path recorded runs took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actorflow.code._driver import Command, Driver
from actorflow.code._history import VALUED, Entry, History, load_history, unpack_value
from actorflow.errors import NondeterminismError
from actorflow.store._codec import decode_value, is_json_compatible
from actorflow.views import error_from_record

__all__ = ["ReplayResult", "replay", "replay_entries"]


def replay_entries(
    driver: Driver, entries: Sequence[Entry], decode: Callable[[list[Any]], Sequence[Any]]
) -> list[list[Any]]:
    """Feed a history to a driver, activation by activation, comparing commands.

    Stops at the first divergence (``driver.panic`` is then set). Returns the resolutions of
    trailing open records (recorded, not yet applied by a completed activation).
    """
    carried: list[list[Any]] = []
    for entry in entries:
        carried.extend(entry.r)
        if entry.c is None:
            continue
        decoded = [decode(r) for r in carried]
        carried = []
        driver.activate(decoded, entry.t, expected=entry.c)
        if driver.panic is not None:
            break
    return carried


@dataclass(frozen=True)
class ReplayResult:
    """What replaying a history against the current code found.

    Attributes:
        ok: the code took exactly the recorded path (no divergence, no panic).
        run_id: the history's run.
        workflow_id: its workflow.
        activations: activations replayed.
        commands: commands the code issued during the replay.
        events: resolutions and commands in the history.
        seconds: how long the replay took.
        outcome: ``waiting`` (the function waits where the history ends), ``completed``,
            ``failed``, ``continued``, ``cancelled``, or ``panicked``.
        error: the divergence or panic, as ``Type: message``.
        position: for a divergence, its position in the history.
        expected: for a divergence, the recorded command (None: the history has none).
        actual: for a divergence, the command the code issued (None: none).
        result: for ``completed``, what the function returned.
    """

    ok: bool
    run_id: str
    workflow_id: str
    activations: int
    commands: int
    events: int
    seconds: float
    outcome: str
    error: str | None = None
    position: int | None = None
    expected: str | None = None
    actual: str | None = None
    result: Any = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (``actorflow replay --json``)."""
        out = asdict(self)
        if not is_json_compatible(out["result"]):
            out["result"] = repr(out["result"])
        return out


class _Checker:
    """A host that carries out nothing: replay only compares."""

    def issue(self, cmd: Command) -> None:
        pass

    def settled(self, cmd: Command) -> None:
        pass

    def update_done(self, update_id: str, task: asyncio.Task[Any]) -> None:
        pass

    def dropped(self, cmd: Command) -> None:
        pass


def replay(
    history: dict[str, Any] | str | Path | History,
    fn: Callable[..., Awaitable[Any]],
    *,
    failure_types: tuple[type[BaseException], ...] = (),
    fetch: Callable[[str], bytes | None] | None = None,
) -> ReplayResult:
    """Replay a recorded history against ``fn`` and report whether it is deterministic.

    Args:
        history: an exported history (``engine.export_history(run_id)``), a JSON file
            holding one, or a loaded :class:`History`.
        fn: the workflow function (or the ``@engine.workflow`` object).
        failure_types: the workflow's ``failure_types``, to tell failures from panics.
        fetch: reads stored values by reference (replaying straight from a store).

    Returns:
        A :class:`ReplayResult`; ``ok`` is False on the first divergence, which it names.
    """
    h = load_history(history)
    target = getattr(fn, "fn", fn)
    started = time.perf_counter()
    values = h.values

    def get(ref: str) -> bytes | None:
        if ref in values:
            return values[ref]
        return fetch(ref) if fetch is not None else None

    def decode(res: list[Any]) -> Sequence[Any]:
        kind = res[0]
        if kind in VALUED:
            raw = unpack_value(res[-2], res[-1], get, "history")
            return (*res[:-2], decode_value(raw, "history value"))
        if kind == "err":
            return ("err", res[1], error_from_record(res[2], h.run_id))
        return tuple(res)

    args = decode_value(h.args, "history args")
    args = list(args) if isinstance(args, list | tuple) else [args]
    driver = Driver(target, args, h.run_id, h.workflow_id, _Checker(), failure_types)
    driver.ctx.args = tuple(args)
    try:
        replay_entries(driver, h.entries, decode)
    except Exception as err:  # an undecodable history
        driver.panic = driver.panic or err
    issued = driver.seq
    outcome = driver.outcome()
    driver.close()
    seconds = time.perf_counter() - started
    activations = sum(1 for e in h.entries if e.c is not None)
    base: dict[str, Any] = dict(
        run_id=h.run_id,
        workflow_id=h.workflow_id,
        activations=activations,
        commands=issued,
        events=h.events,
        seconds=seconds,
    )
    if outcome is None:
        return ReplayResult(ok=True, outcome="waiting", **base)
    kind, value = outcome
    if kind != "panic":
        name = {
            "completed": "completed",
            "failed": "failed",
            "continue": "continued",
            "cancelled": "cancelled",
        }[kind]
        result = value if kind == "completed" else None
        return ReplayResult(ok=True, outcome=name, result=result, **base)
    problem: BaseException = value
    if isinstance(problem, NondeterminismError):
        return ReplayResult(
            ok=False,
            outcome="panicked",
            error=f"NondeterminismError: {problem}",
            position=problem.position,
            expected=problem.expected,
            actual=problem.actual,
            **base,
        )
    return ReplayResult(
        ok=False,
        outcome="panicked",
        error=f"{type(problem).__name__}: {problem}",
        **base,
    )
