"""Queues shared by workflows, as DBOS's: ``af.Queue(name, concurrency=, rate_limit=)``.

A workflow's own ``concurrency`` and ``rate_limit`` limit its runs alone. A :class:`Queue`
given to several workflows (``engine.define(..., queue=q)``, ``@engine.workflow(...,
queue=q)``) limits their runs together: at most ``concurrency`` of them are active at once
and at most ``rate_limit`` start per window, whichever workflow they belong to. Runs over
the limits are recorded as queued (durably: they survive a restart, and the runs active
before it still count) and start in order: trigger order, or, on a queue created with
``priority=True``, lowest ``trigger(..., priority=)`` first, then trigger order.

A queue is known by its name: every workflow that names it must give it the same limits
(checked when the workflow is defined), so the limits are never ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from actorflow.definition._options import parse_duration, validate_name
from actorflow.errors import DefinitionError

__all__ = ["MAX_PRIORITY", "Queue", "check_priority", "parse_rate"]

#: Priorities run from 0 (first, the default) to this (last), as DBOS's (2**31 - 1).
MAX_PRIORITY = 2**31 - 1

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


def parse_rate(
    value: Any, problems: list[str], what: str = "rate_limit"
) -> tuple[int, float] | None:
    """Parse ``"100/m"``, ``"5/10s"``... into (runs, window seconds); note a problem."""
    if value is None:
        return None
    m = _RATE.match(value) if isinstance(value, str) else None
    if m is not None:
        count, unit = int(m.group(1)), m.group(2)
        try:
            window = parse_duration(unit if unit[0].isdigit() else "1" + unit, what)
        except DefinitionError:
            window = 0.0
        if count >= 1 and window > 0:
            return count, window
    problems.append(
        f"{what}: expected runs per window such as '100/m', '10/s' or '5/10s', got {value!r}"
    )
    return None


def check_priority(value: Any, what: str = "priority") -> int:
    """``value`` as a priority (an integer from 0 to :data:`MAX_PRIORITY`).

    Raises:
        ValueError: it is not one, naming ``what``.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PRIORITY:
        return value
    raise ValueError(f"{what}: expected an integer from 0 to 2**31-1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Queue:
    """Limits shared by every workflow given this queue (see the module docstring).

    Args:
        name: the queue's name (the same rules as a workflow id).
        concurrency: most runs active at once, over all its workflows (None: no limit).
        rate_limit: most runs started per window over all its workflows, e.g. ``"100/m"``
            or ``"5/10s"`` (None: no limit).
        priority: start queued runs lowest ``trigger(..., priority=)`` first (0, the
            default, is first; ties in trigger order) instead of in trigger order alone.

    Raises:
        DefinitionError: listing every option that is not valid.
    """

    name: str
    concurrency: int | None = None
    rate_limit: str | None = None
    priority: bool = False
    #: ``rate_limit`` parsed: (runs, window seconds), or None.
    rate: tuple[int, float] | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if (p := validate_name(self.name, "queue name")) is not None:
            problems.append(p)
        c = self.concurrency
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
            problems.append(f"queue concurrency: expected an integer >= 1, got {c!r}")
        rate = parse_rate(self.rate_limit, problems, "queue rate_limit")
        given: Any = self.priority  # (typed bool, but callers may be untyped)
        if not isinstance(given, bool):
            problems.append(f"queue priority: expected True or False, got {given!r}")
        if problems:
            raise DefinitionError(problems)
        object.__setattr__(self, "rate", rate)

    @property
    def group(self) -> str:
        """The admission group its workflows share.

        ``queue/<name>``: a workflow id cannot contain ``/``, so no workflow's own group
        (its id) can be the same string.
        """
        return "queue/" + self.name

    def limits(self) -> tuple[int | None, tuple[int, float] | None, bool]:
        """(concurrency, rate, priority): what two definitions of one queue must agree on."""
        return self.concurrency, self.rate, self.priority

    def describe(self) -> dict[str, Any]:
        """The stored description (in the workflow's definition record)."""
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "rate_limit": list(self.rate) if self.rate else None,
            "priority": self.priority,
        }
