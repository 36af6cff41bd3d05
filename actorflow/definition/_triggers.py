"""Trigger specs (webhooks, schedules, events, polls) and their checks, run at build time.

Triggers do not change a workflow's graph; they say what starts its runs. Everything that can
be checked without a request or a clock is checked at definition: cron syntax, time zone names,
paths, methods, signature schemes, JSON schemas and the secret's environment variable.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from actorflow._extras import require
from actorflow.definition._options import parse_duration
from actorflow.errors import DefinitionError
from actorflow.store import _keys as K

__all__ = [
    "EventTriggerSpec",
    "PollSpec",
    "ScheduleSpec",
    "WebhookSpec",
    "check_event_trigger",
    "check_poll",
    "check_schedule",
    "check_webhook",
    "validate_payload",
]

Signature = Literal["hmac-sha256", "github", "stripe"]
_SIGNATURES = ("hmac-sha256", "github", "stripe")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_OVERLAP = ("skip", "queue", "allow")
_CATCH_UP = ("none", "latest", "all")
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """An HTTP endpoint that starts a run with the request's JSON body as payload.

    Attributes:
        path: the URL path, e.g. ``/orders``.
        method: the HTTP method.
        secret_env: environment variable holding the signing secret (None: unsigned).
        signature: how the body is signed (None: not checked).
        schema: what the body must look like: a JSON Schema (dict), a class with
            ``model_validate`` (pydantic), or ``fn(body) -> payload`` that raises on bad input.
    """

    path: str
    method: str
    secret_env: str | None
    signature: Signature | None
    schema: Any


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When a workflow starts by itself: a cron expression or a fixed interval.

    Attributes:
        cron: five-field cron expression (None for an interval).
        interval: seconds between runs (None for cron).
        tz: IANA time zone the cron expression is read in.
        overlap: if the previous run of this schedule is still active when a slot comes:
            ``skip`` the slot, ``queue`` it until that run ends, or ``allow`` both.
        catch_up: slots missed while no engine ran: ``none``, only the ``latest``, or ``all``.
    """

    cron: str | None
    interval: float | None
    tz: str
    overlap: Literal["skip", "queue", "allow"]
    catch_up: Literal["none", "latest", "all"]

    def describe(self) -> dict[str, Any]:
        """JSON-compatible description for the stored definition."""
        return {
            "cron": self.cron,
            "interval": self.interval,
            "tz": self.tz,
            "overlap": self.overlap,
            "catch_up": self.catch_up,
        }


@dataclass(frozen=True, slots=True)
class EventTriggerSpec:
    """A published event that starts a run, with the event's payload as the run's payload.

    Attributes:
        event: the event's name (``engine.publish(event, ...)``).
        key: ``key(payload) -> str``: the event's identity; one run per identity (None: the
            publish's ``key=``, else each publish is an event of its own).
    """

    event: str
    key: Callable[[Any], Any] | None

    def describe(self) -> dict[str, Any]:
        """JSON-compatible description for the stored definition."""
        return {"event": self.event, "key": self.key is not None}


def check_event_trigger(event: Any, key: Any, problems: list[str]) -> EventTriggerSpec | None:
    """An ``on_event`` trigger, or None (each problem noted)."""
    where = f"on_event({event!r})"
    # The rules engine.publish checks (any name it accepts can start a run).
    if not isinstance(event, str) or not event:
        problem: str | None = f"{where}: event: expected a non-empty string, got {event!r}"
    else:
        problem = K.part_problem(event, f"{where}: event", K.MAX_NAME)
    if problem is not None:
        problems.append(problem)
    if key is not None and not callable(key):
        problems.append(f"{where}: key: expected a function key(payload) -> str, got {key!r}")
        return None
    return EventTriggerSpec(event, key) if problem is None else None


@dataclass(frozen=True, slots=True)
class PollSpec:
    """A function polled every ``every`` seconds; a run starts when it returns something new.

    Attributes:
        fn: ``fn()`` or ``fn(last)``: the value to compare (None: nothing this time); ``last``
            is the value that started the previous run (None before the first).
        every: seconds between the end of one poll and the start of the next.
        takes_last: ``fn`` takes the last value.
    """

    fn: Callable[..., Any]
    every: float
    takes_last: bool

    def describe(self) -> dict[str, Any]:
        """JSON-compatible description for the stored definition."""
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return {"fn": f"{getattr(self.fn, '__module__', '?')}:{name}", "every": self.every}


def check_poll(fn: Any, every: Any, problems: list[str]) -> PollSpec | None:
    """An ``on_poll`` trigger, or None (each problem noted)."""
    where = f"on_poll({getattr(fn, '__name__', fn)!r})"
    seconds = 0.0
    try:
        seconds = parse_duration(every, f"{where}: every")
    except DefinitionError as exc:
        problems.extend(exc.problems)
    else:
        if seconds <= 0:
            problems.append(f"{where}: every: expected a positive duration, got {every!r}")
    if not callable(fn):
        problems.append(f"{where}: fn: expected a function fn() or fn(last), got {fn!r}")
        return None
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        params = []  # a builtin without a signature: called without arguments
    if len(params) > 1:
        problems.append(f"{where}: fn: expected fn() or fn(last), it takes {len(params)} arguments")
        return None
    return PollSpec(fn, seconds, len(params) == 1) if seconds > 0 else None


def check_webhook(
    path: Any, method: Any, secret_env: Any, signature: Any, schema: Any, problems: list[str]
) -> WebhookSpec | None:
    """Validate webhook options; note each problem and return the spec if all are fine."""
    where = f"on_webhook({path!r})"
    n = len(problems)
    if not isinstance(path, str) or not _PATH.match(path):
        problems.append(f"{where}: path: expected a URL path starting with '/', got {path!r}")
    elif path.startswith(("/api/", "/healthz")):
        problems.append(f"{where}: path: /api/ and /healthz are the engine's own routes")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        problems.append(f"{where}: method: expected one of {list(_METHODS)}, got {method!r}")
    if signature is not None and signature not in _SIGNATURES:
        problems.append(
            f"{where}: signature: expected one of {list(_SIGNATURES)} or None, got {signature!r}"
        )
    if secret_env is not None and (not isinstance(secret_env, str) or not secret_env):
        problems.append(f"{where}: secret_env: expected an environment variable name")
    elif signature is not None and secret_env is None:
        problems.append(f"{where}: signature {signature!r} needs secret_env (the secret's name)")
    # An unset variable is not a definition error (it is read per request, and may be set by
    # deployment); the app warns at start and refuses the webhook's requests until it is set.
    if schema is not None:
        problem = _check_schema(schema)
        if problem:
            problems.append(f"{where}: schema: {problem}")
    if len(problems) > n:
        return None
    if secret_env is not None and signature is None:
        signature = "hmac-sha256"  # a secret without a scheme: the plain HMAC header
    return WebhookSpec(path, method.upper(), secret_env, signature, schema)


def _check_schema(schema: Any) -> str | None:
    if isinstance(schema, dict):
        jsonschema = require("jsonschema", "on_webhook(schema=<a JSON Schema dict>)")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            return f"not a valid JSON Schema: {exc.message}"
        return None
    if hasattr(schema, "model_validate") or callable(schema):
        return None
    return f"expected a JSON Schema dict, a pydantic model or a callable, got {schema!r}"


def validate_payload(schema: Any, body: Any) -> Any:
    """Check ``body`` against a webhook's schema and return the payload to start the run with.

    Raises:
        ValueError: naming where the body does not fit.
    """
    if schema is None:
        return body
    if isinstance(schema, dict):
        jsonschema = require("jsonschema", "on_webhook(schema=<a JSON Schema dict>)")
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(body))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ValueError(f"body at {where}: {error.message}")
        return body
    if hasattr(schema, "model_validate"):
        try:
            model = schema.model_validate(body)
        except Exception as exc:
            raise ValueError(f"body does not match {schema.__name__}: {exc}") from None
        return model.model_dump(mode="json") if hasattr(model, "model_dump") else body
    fn: Callable[[Any], Any] = schema
    try:
        result = fn(body)
    except Exception as exc:
        raise ValueError(f"body rejected by the schema: {exc}") from None
    return body if result is None else result


def check_schedule(
    cron: Any, interval: Any, tz: Any, overlap: Any, catch_up: Any, problems: list[str]
) -> ScheduleSpec | None:
    """Validate schedule options; note each problem and return the spec if all are fine."""
    where = f"on_schedule({cron!r})" if interval is None else f"on_interval({interval!r})"
    n = len(problems)
    seconds: float | None = None
    if interval is not None:
        try:
            seconds = parse_duration(interval, f"{where}: interval")
        except DefinitionError as exc:
            problems.extend(exc.problems)
    else:
        problem = _check_cron(cron)
        if problem:
            problems.append(f"{where}: cron: {problem}")
    if not isinstance(tz, str) or not tz:
        problems.append(f"{where}: tz: expected an IANA time zone name, got {tz!r}")
    else:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(
                f"{where}: tz: unknown time zone {tz!r} (expected an IANA name such as "
                "'UTC' or 'Europe/Berlin')"
            )
    if overlap not in _OVERLAP:
        problems.append(f"{where}: overlap: expected one of {list(_OVERLAP)}, got {overlap!r}")
    if catch_up not in _CATCH_UP:
        problems.append(f"{where}: catch_up: expected one of {list(_CATCH_UP)}, got {catch_up!r}")
    if len(problems) > n:
        return None
    return ScheduleSpec(cron if interval is None else None, seconds, tz, overlap, catch_up)


def _check_cron(cron: Any) -> str | None:
    if not isinstance(cron, str) or not cron.strip():
        return f"expected a cron expression such as '0 9 * * MON-FRI', got {cron!r}"
    fields = cron.split()
    if len(fields) != 5:
        return (
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)} in {cron!r}"
        )
    from croniter import croniter

    if not croniter.is_valid(cron):
        return f"{cron!r} is not a valid cron expression"
    return None
