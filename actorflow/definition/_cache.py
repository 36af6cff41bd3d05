"""A step's cache, as cronflow's: ``.step(name, fn, cache=af.Cache(key=fn, ttl="1h"))``.

Before a step's first attempt the engine computes ``key(ctx)`` (in the engine, like a
predicate: it must be quick and read only ``ctx``). If a run of the same workflow recorded
the same step with the same key less than ``ttl`` ago, the step is not run: its output is
the cached one, and its record says so (one attempt, kind ``cached``). Otherwise it runs,
and its output is kept for ``ttl`` from its success, in the engine's state (scope
``#cache/<workflow>``, swept when expired), written in the same commit as the step's record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from actorflow.definition._options import parse_duration
from actorflow.errors import DefinitionError

__all__ = ["Cache", "cache_digest"]


@dataclass(frozen=True)
class Cache:
    """Reuse a step's output across runs while its key is the same (see the module docstring).

    Args:
        key: ``key(ctx)``: a JSON value (a string, a list, a dict...) that says what the step's
            output depends on, e.g. ``lambda ctx: ctx.payload["city"]``.
        ttl: how long an output is reused after the step that made it succeeded (a duration:
            ``"1h"``, ``"7d"``, seconds).

    Raises:
        DefinitionError: ``key`` is not callable, or ``ttl`` is not a positive duration.
    """

    key: Callable[[Any], Any]
    ttl: Any

    def __post_init__(self) -> None:
        if not callable(self.key):
            raise DefinitionError(f"af.Cache: key: expected a function of ctx, got {self.key!r}")
        object.__setattr__(self, "ttl", parse_duration(self.ttl, "af.Cache: ttl"))

    def describe(self) -> dict[str, Any]:
        """What the stored definition says of it."""
        return {"ttl": self.ttl, "key": getattr(self.key, "__qualname__", repr(self.key))}


def cache_digest(value: Any) -> str:
    """A stable digest of a key's value: the SHA-256 of its canonical JSON.

    Raises:
        TypeError: the value is not JSON (a key must say the same on every engine).
    """
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise TypeError(f"a cache key must be a JSON value, got {value!r} ({exc})") from None
    return hashlib.sha256(data).hexdigest()
