"""The context a step function receives, as seen inside a worker process.

``ctx.payload`` and ``ctx.last`` arrive with the task and are decoded on first access;
``ctx.steps[name].output`` is fetched from the engine over the worker's pipe when read, so a
step pays only for the values it uses. Workers never open the store themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actorflow.store._codec import decode_value

__all__ = ["RunInfo", "StepContext", "StepOutput"]

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Who is running.

    Attributes:
        id: the run id.
        workflow_id: the workflow id.
        step: the step's name.
        attempt: this execution's number, from 1.
    """

    id: str
    workflow_id: str
    step: str
    attempt: int


class StepOutput:
    """A recorded step's result, read through ``ctx.steps[name]``."""

    __slots__ = ("_fetch", "_value", "name")

    def __init__(self, name: str, fetch: Callable[[str], bytes | None]) -> None:
        self.name = name
        self._fetch = fetch
        self._value: Any = _MISSING

    @property
    def output(self) -> Any:
        """The step's return value (fetched from the engine on first access).

        Raises:
            KeyError: the step has not completed in this run, or there is no such step.
        """
        if self._value is _MISSING:
            data = self._fetch(self.name)
            if data is None:
                raise KeyError(
                    f"step {self.name!r} has no recorded output in this run "
                    "(it has not completed, or there is no such step)"
                )
            self._value = decode_value(data, f"output of step {self.name!r}")
        return self._value

    def __repr__(self) -> str:
        return f"<StepOutput {self.name!r}>"


class _Steps:
    """``ctx.steps``: outputs of the run's steps by name, fetched when read."""

    __slots__ = ("_cache", "_fetch")

    def __init__(self, fetch: Callable[[str], bytes | None]) -> None:
        self._fetch = fetch
        self._cache: dict[str, StepOutput] = {}

    def __getitem__(self, name: str) -> StepOutput:
        out = self._cache.get(name)
        if out is None:
            out = self._cache[name] = StepOutput(name, self._fetch)
        return out

    def get(self, name: str, default: Any = None) -> Any:
        """Return the output of step ``name``, or ``default`` if it has none."""
        try:
            return self[name].output
        except KeyError:
            return default


class StepContext:
    """What a step function receives as ``ctx``.

    Attributes:
        run: run id, workflow id, step name and attempt.
        steps: ``ctx.steps[name].output`` is the recorded output of an earlier step.
        idempotency_key: stable across attempts of this step in this run; pass it to outside
            systems so that a retried step does not act twice.
    """

    __slots__ = (
        "_last",
        "_last_raw",
        "_log",
        "_payload",
        "_payload_raw",
        "idempotency_key",
        "run",
        "steps",
    )

    def __init__(
        self,
        run: RunInfo,
        payload: bytes,
        last: bytes | None,
        fetch: Callable[[str], bytes | None],
    ) -> None:
        self.run = run
        self._payload_raw = payload
        self._last_raw = last
        self._payload: Any = _MISSING
        self._last: Any = _MISSING
        self.steps = _Steps(fetch)
        self.idempotency_key = f"{run.id}:{run.step}"
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records reach the engine's ``actorflow.step`` logger.

        Records carry the run id, step name and attempt as extra fields.
        """
        if self._log is None:
            self._log = logging.LoggerAdapter(
                logging.getLogger("actorflow.step"),
                {"run_id": self.run.id, "step": self.run.step, "attempt": self.run.attempt},
            )
        return self._log

    @property
    def payload(self) -> Any:
        """The run's input, as given to ``engine.trigger``."""
        if self._payload is _MISSING:
            self._payload = decode_value(self._payload_raw, "payload")
        return self._payload

    @property
    def last(self) -> Any:
        """The output of the previous step (actions excepted); None for the first step."""
        if self._last is _MISSING:
            raw = self._last_raw
            self._last = None if raw is None else decode_value(raw, "ctx.last")
        return self._last

    def __repr__(self) -> str:
        return f"<StepContext run={self.run.id} step={self.run.step!r} attempt={self.run.attempt}>"
