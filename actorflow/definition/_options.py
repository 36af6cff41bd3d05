"""Step options: durations and the retry policy."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, Literal, cast

from actorflow.errors import DefinitionError
from actorflow.store import _keys as K

__all__ = [
    "UNLIMITED",
    "Retry",
    "parse_duration",
    "parse_retention",
    "qualified_name",
    "validate_name",
]

#: ``attempts`` of a policy with no limit (Temporal's ``maximum_attempts=0``).
UNLIMITED = 2**62

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(us|ms|s|m|h|d|w)")

Duration = float | int | str | _dt.timedelta


def parse_duration(value: Any, what: str, *, allow_zero: bool = False) -> float:
    """Parse a duration into seconds.

    Accepts numbers (seconds), ``datetime.timedelta``, and strings such as ``"500ms"``,
    ``"5s"``, ``"10m"``, ``"24h"``, ``"2d"``, ``"1h30m"``, ``"1.5s"``.

    Args:
        value: the duration.
        what: the field's name, used in the error message.
        allow_zero: accept 0 (delays may be zero; timeouts may not).

    Raises:
        DefinitionError: naming ``what`` and the accepted forms.
    """
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, total = 0, 0.0
        for m in _PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            seconds = total
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise DefinitionError(
            f"{what}: expected a duration such as 500ms, 5s, 10m, 24h or a number of seconds, "
            f"got {value!r}"
        )
    if seconds < 0 or (seconds == 0 and not allow_zero):
        low = "zero or positive" if allow_zero else "positive"
        raise DefinitionError(f"{what}: expected a {low} duration, got {value!r}")
    return seconds


#: Spellings of "keep finished runs forever" for ``retention``.
FOREVER = ("forever", "never", "none", "0")


def parse_retention(value: Any, what: str = "retention") -> float:
    """Parse a retention period into seconds; 0.0 means keep forever.

    Accepts a duration (``"30d"``, ``"12h"``, seconds, ``timedelta``), or ``0``, ``None``
    or ``"forever"`` for no retention.

    Raises:
        DefinitionError: naming ``what`` and the accepted forms.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in FOREVER):
        return 0.0
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        value = float(value)  # seconds, as an environment variable gives them
    try:
        return parse_duration(value, what, allow_zero=True)
    except DefinitionError:
        raise DefinitionError(
            f"{what}: expected a duration such as '30d' or '12h', a number of seconds, or "
            f"0 / None / 'forever' to keep finished runs forever, got {value!r}"
        ) from None


def qualified_name(t: type) -> str:
    """``module.QualName`` of a type, as used to match exception types across processes."""
    return f"{t.__module__}.{t.__qualname__}"


@dataclass(frozen=True)
class Retry:
    """How a failed step is retried.

    Two vocabularies are accepted, and each keeps its own defaults. In actorflow's
    (``attempts``, ``delay``, ``max_delay``, ``non_retryable``), ``attempts`` defaults to 3.
    In Temporal's (a retry given any of ``initial_interval``, ``maximum_interval``,
    ``maximum_attempts`` or ``non_retryable_error_types``, and no ``attempts``), an absent
    ``maximum_attempts`` means no limit, as in Temporal's ``RetryPolicy``. Both default to
    a 1 s first wait, a coefficient of 2 and a longest wait of 100 times the first.

    Args:
        attempts: total executions allowed, the first included (``attempts=3``: up to two
            retries). 1 means no retry. Default: 3, or unlimited for a retry written in
            Temporal's vocabulary.
        backoff: ``"fixed"`` waits ``delay`` each time; ``"exponential"`` doubles it after
            every failure, up to ``max_delay``.
        delay: wait before the first retry (a duration; 0 retries at once).
        max_delay: cap on any single wait; default (None) is 100 times ``delay``, as
            Temporal's maximum interval.
        jitter: fraction (0..1) of each wait that is randomised downwards; ``True`` means 1
            (full jitter), which spreads retries of many runs that failed together.
        non_retryable: exception types (or their names, ``"ValueError"`` or
            ``"mymod.MyError"``) that fail the step at once. Subclasses match too.
        backoff_coefficient: how much each wait grows over the previous one (default 2.0
            for ``"exponential"``, 1.0 for ``"fixed"``).
        schedule_to_close: bound on the whole step, all attempts and waits included (a
            duration): no attempt starts after it, and a running attempt's timeout is cut to
            what is left of it.
        initial_interval: Temporal's name for ``delay``.
        maximum_interval: Temporal's name for ``max_delay``.
        maximum_attempts: Temporal's name for ``attempts`` (``0``: unlimited).
        non_retryable_error_types: Temporal's name for ``non_retryable``.

    Raises:
        DefinitionError: listing every invalid field.
    """

    attempts: int | None = None  # None: 3, or unlimited in Temporal's vocabulary (__post_init__)
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: Duration = 1.0
    max_delay: Duration | None = None
    jitter: float | bool = 0.0
    non_retryable: Sequence[type[BaseException] | str] = ()
    backoff_coefficient: float | None = None
    schedule_to_close: Duration | None = None
    # Temporal's spellings (init-only aliases, folded into the fields above).
    initial_interval: InitVar[Duration | None] = None
    maximum_interval: InitVar[Duration | None] = None
    maximum_attempts: InitVar[int | None] = None
    non_retryable_error_types: InitVar[Sequence[type[BaseException] | str] | None] = None
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(
        self,
        initial_interval: Duration | None,
        maximum_interval: Duration | None,
        maximum_attempts: int | None,
        non_retryable_error_types: Sequence[type[BaseException] | str] | None,
    ) -> None:
        problems: list[str] = []
        if self.attempts is None:
            temporal = any(
                v is not None
                for v in (
                    initial_interval,
                    maximum_interval,
                    maximum_attempts,
                    non_retryable_error_types,
                )
            )
            # Temporal's RetryPolicy retries without limit unless maximum_attempts says.
            object.__setattr__(self, "attempts", UNLIMITED if temporal else 3)
        if initial_interval is not None:
            object.__setattr__(self, "delay", initial_interval)
        if maximum_interval is not None:
            object.__setattr__(self, "max_delay", maximum_interval)
        if non_retryable_error_types is not None:
            object.__setattr__(self, "non_retryable", non_retryable_error_types)
        if maximum_attempts is not None:
            if isinstance(maximum_attempts, int) and not isinstance(maximum_attempts, bool):
                # Temporal: 0 means no limit.
                object.__setattr__(
                    self, "attempts", UNLIMITED if maximum_attempts == 0 else maximum_attempts
                )
            else:
                problems.append(
                    "retry.maximum_attempts: expected an integer >= 0 (0: unlimited), "
                    f"got {maximum_attempts!r}"
                )
        coefficient = self.backoff_coefficient
        if coefficient is None:
            coefficient = 2.0 if self.backoff == "exponential" else 1.0
        if (
            not isinstance(coefficient, int | float)
            or isinstance(coefficient, bool)
            or not 1.0 <= coefficient <= 1000.0
        ):
            problems.append(
                f"retry.backoff_coefficient: expected a number from 1 to 1000, got {coefficient!r}"
            )
        else:
            object.__setattr__(self, "backoff_coefficient", float(coefficient))
        if self.schedule_to_close is not None:
            try:
                object.__setattr__(
                    self,
                    "schedule_to_close",
                    parse_duration(self.schedule_to_close, "retry.schedule_to_close"),
                )
            except DefinitionError as exc:
                problems.extend(exc.problems)
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool):
            problems.append(f"retry.attempts: expected an integer >= 1, got {self.attempts!r}")
        elif self.attempts < 1:
            problems.append(f"retry.attempts: expected an integer >= 1, got {self.attempts}")
        if self.backoff not in ("fixed", "exponential"):
            problems.append(
                f"retry.backoff: expected 'fixed' or 'exponential', got {self.backoff!r}"
            )
        if self.max_delay is None:
            try:
                base = parse_duration(self.delay, "retry.delay", allow_zero=True)
            except DefinitionError:
                base = 0.0  # reported below
            object.__setattr__(self, "max_delay", base * 100)
        for name in ("delay", "max_delay"):
            try:
                seconds = parse_duration(getattr(self, name), f"retry.{name}", allow_zero=True)
                object.__setattr__(self, name, seconds)
            except DefinitionError as exc:
                problems.extend(exc.problems)
        jitter = self.jitter
        if isinstance(jitter, bool):
            object.__setattr__(self, "jitter", 1.0 if jitter else 0.0)
        elif not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            problems.append(f"retry.jitter: expected a fraction from 0 to 1, got {jitter!r}")
        else:
            object.__setattr__(self, "jitter", float(jitter))
        names: set[str] = set()
        items = (
            (self.non_retryable,)
            if isinstance(self.non_retryable, str | type)
            else tuple(self.non_retryable)
        )
        for item in items:
            if isinstance(item, type) and issubclass(item, BaseException):
                names.add(qualified_name(item))
            elif isinstance(item, str) and item:
                names.add(item)
            else:
                problems.append(
                    f"retry.non_retryable: expected exception types or their names, got {item!r}"
                )
        object.__setattr__(self, "non_retryable", tuple(items))
        object.__setattr__(self, "_names", frozenset(names))
        if problems:
            raise DefinitionError(problems)

    def delay_for(self, failures: int, random: float = 0.0) -> float:
        """Seconds to wait after the ``failures``-th failure (1-based).

        Args:
            failures: how many attempts have failed so far.
            random: a number in [0, 1) for jitter.
        """
        base = cast(float, self.delay)  # normalised to seconds in __post_init__
        try:
            base *= cast(float, self.backoff_coefficient) ** max(0, failures - 1)
        except OverflowError:  # thousands of failures under an unlimited policy
            base = float("inf")
        wait = min(base, cast(float, self.max_delay))
        return wait * (1.0 - float(self.jitter) * random)

    def is_retryable(self, type_names: Sequence[str]) -> bool:
        """False if any of the error's type names (its MRO) is marked non-retryable.

        Args:
            type_names: qualified names of the exception's class and its bases.
        """
        if not self._names:
            return True
        for qual in type_names:
            if qual in self._names or qual.rpartition(".")[2] in self._names:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description, for the stored definition."""
        return {
            "attempts": self.attempts,
            "backoff": self.backoff,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
            "non_retryable": sorted(self._names),
            "backoff_coefficient": self.backoff_coefficient,
            "schedule_to_close": self.schedule_to_close,
        }

    def allows(self, failures: int, type_names: Sequence[str]) -> bool:
        """True if a step that failed ``failures`` times may run again.

        The last failure's error types must be retryable; the ``schedule_to_close`` bound is
        checked by the caller.
        """
        assert self.attempts is not None  # set by __post_init__
        return failures < self.attempts and self.is_retryable(type_names)


#: The policy of a step that names none and whose workflow names none: run once.
NO_RETRY = Retry(attempts=1)


def validate_name(name: Any, what: str) -> str | None:
    """Return a problem with ``name`` (a workflow id or node name), or None if it is fine."""
    if not isinstance(name, str) or not name.strip():
        return f"{what}: expected a non-empty string, got {name!r}"
    problem = K.part_problem(name, what, K.MAX_NAME)
    if problem is not None:
        return problem
    if any(ord(c) < 32 for c in name):
        return f"{what}: must not contain control characters (NUL, newline...), got {name!r}"
    if "/" in name:
        return (
            f"{what}: must not contain '/' (it separates the parts of a step's path), got {name!r}"
        )
    return dots_problem(name, what)


def dots_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot be one segment of a URL path ("." or ".."), or None.

    Workflow ids, event names and handler names are segments of the REST API's paths
    (``/api/workflows/{id}/trigger``); a browser or an HTTP client resolves "." and ".."
    (percent-encoded too) before sending, so such a name could never be addressed.
    """
    if name in (".", ".."):
        return f"{what}: must not be {name!r} (a URL path cannot address it)"
    return None
