"""Immutable workflow specs: what a builder compiles to, and how functions travel.

A step function travels to workers by reference (``module:qualname``) when the worker can
import it, else as cloudpickle bytes; either way it is identified by a ``key`` so that a worker
unpickles or imports it once and caches it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import cloudpickle

from actorflow.definition._options import Retry

__all__ = ["FunctionRef", "StepSpec", "WorkflowSpec", "function_ref"]

StepKind = Literal["step", "action"]


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """How a worker finds a function.

    Attributes:
        key: cache key, unique per function (``r:module:qualname`` or ``p:<sha1>``).
        ref: ``module:qualname`` when importable, else None.
        blob: cloudpickle bytes when not importable, else None.
        display: a readable name for logs and the CLI.
        is_async: the function is ``async def``.
    """

    key: str
    ref: str | None
    blob: bytes | None
    display: str
    is_async: bool


def function_ref(fn: Callable[..., Any]) -> FunctionRef:
    """Describe ``fn`` for transport to a worker (by reference when importable)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    display = f"{module}:{qualname}" if module and qualname else repr(fn)
    is_async = inspect.iscoroutinefunction(fn)
    if module and qualname and module != "__main__" and "<" not in qualname:
        target: Any = sys.modules.get(module)
        for part in qualname.split("."):
            target = getattr(target, part, None)
        if target is fn:
            ref = f"{module}:{qualname}"
            return FunctionRef("r:" + ref, ref, None, display, is_async)
    blob = cloudpickle.dumps(fn, protocol=5)
    digest = hashlib.sha1(blob, usedforsecurity=False).hexdigest()
    return FunctionRef("p:" + digest, None, blob, display, is_async)


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step (or action) of a workflow.

    Attributes:
        name: unique within the workflow.
        kind: ``"step"`` (its output becomes ``ctx.last``) or ``"action"`` (a side effect:
            recorded, but ``ctx.last`` passes over it).
        fn: how workers find the function.
        timeout: seconds before the worker is killed, or None for no limit.
        retry: the retry policy.
    """

    name: str
    kind: StepKind
    fn: FunctionRef
    timeout: float | None
    retry: Retry

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description (no code), for the stored definition."""
        return {
            "name": self.name,
            "kind": self.kind,
            "fn": self.fn.display,
            "timeout": self.timeout,
            "retry": self.retry.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A validated, immutable workflow definition.

    Attributes:
        id: the workflow id.
        steps: the steps in order.
        timeout: seconds the whole run may take, or None.
        concurrency: most runs of this workflow active at once, or None for no limit.
        description: free text.
    """

    id: str
    steps: tuple[StepSpec, ...]
    timeout: float | None
    concurrency: int | None
    description: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description (no code), for the stored definition."""
        return {
            "id": self.id,
            "description": self.description,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "steps": [s.to_dict() for s in self.steps],
        }

    @property
    def fingerprint(self) -> str:
        """A short hash of the definition's shape, stored with each run."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
