"""The context a step function receives, as seen inside a worker process.

``ctx.payload`` and ``ctx.last`` arrive with the task and are decoded on first access;
``ctx.steps[name].output`` is fetched from the engine over the worker's pipe when read, so a
step pays only for the values it uses. Workers never open the store themselves.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from actorflow.store._codec import decode_value
from actorflow.workers._services import ServicesView
from actorflow.workers._state import State

__all__ = [
    "CURRENT",
    "REF_TAG",
    "Host",
    "HostLogHandler",
    "RunInfo",
    "StepContext",
    "StepOutput",
    "Steps",
    "step_context",
]


class Host(Protocol):
    """Who answers a context's requests: the worker (over its pipe) or the engine itself."""

    def request(self, op: str, arg: Any) -> Any:
        """Ask ``op`` with ``arg`` and wait for the answer."""
        ...


_MISSING: Any = object()

#: The context of the step running in this worker (``af.step_context()``).
CURRENT: contextvars.ContextVar[StepContext] = contextvars.ContextVar("actorflow_step")


def _current_host() -> Host | None:
    """The host of the step running in this thread, or None."""
    ctx = CURRENT.get(None)
    return None if ctx is None else ctx.host


def step_context() -> StepContext:
    """The context of the step running now, from inside its function.

    For code workflows' steps (``ctx.step(name, fn, *args)`` calls ``fn(*args)``, with no
    ``ctx``): ``af.step_context().heartbeat(progress)``, ``.heartbeat_details``,
    ``.idempotency_key``, ``.run``, ``.state``, ``.log``.

    Raises:
        RuntimeError: no step is running in this thread.
    """
    try:
        return CURRENT.get()
    except LookupError:
        raise RuntimeError(
            "af.step_context() is only available inside a step function run by actorflow"
        ) from None


class HostLogHandler(logging.Handler):
    """Sends a step's records to its host: the engine (a step on its thread), or a link.

    A remote worker's steps have their link's host (``workers/_link.py``); both ask ``log``.
    """

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.host.request("log", (record.levelno, self.format(record), record.created))
        except Exception:
            self.handleError(record)


def _host_logger(ctx: StepContext, level: int) -> logging.Logger:
    """A logger of this step's own whose records go to its host, at ``level`` and above.

    For a step on a thread of the engine's process: the process's ``actorflow.step`` logger
    is the engine's, which cannot tell one step's records from another's.
    """
    assert ctx.host is not None
    logger = logging.Logger("actorflow.step", level)
    logger.propagate = False
    logger.addHandler(HostLogHandler(ctx.host))
    return logger


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

    __slots__ = ("_data", "_value", "name")

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self._data = data
        self._value: Any = _MISSING

    @property
    def output(self) -> Any:
        """The step's return value (decoded on first access)."""
        if self._value is _MISSING:
            self._value = decode_value(self._data, f"output of step {self.name!r}")
        return self._value

    def __repr__(self) -> str:
        return f"<StepOutput {self.name!r}>"


class Steps(Mapping[str, StepOutput]):
    """``ctx.steps``: a read-only mapping of step name to :class:`StepOutput`.

    It holds the steps of this run that have a recorded output, as seen from the step
    running: inside a loop body, the current item's or iteration's steps first, then the
    enclosing ones. ``name in ctx.steps``, ``ctx.steps.get(name)``, ``len``, iteration and
    ``keys()`` work as on a dict. Outputs are fetched from the engine when a name is read
    (``ctx.steps[name]``), and decoded when ``.output`` is read; listing names asks the
    engine once per listing. A loop's items are not names: read them through the loop's
    own output.
    """

    __slots__ = ("_cache", "_fetch", "_names")

    def __init__(
        self, fetch: Callable[[str], bytes | None], names: Callable[[], list[str]] | None
    ) -> None:
        self._fetch = fetch
        self._names = names
        self._cache: dict[str, StepOutput] = {}

    def _lookup(self, name: object) -> StepOutput | None:
        if not isinstance(name, str):
            return None
        out = self._cache.get(name)
        if out is None:
            data = self._fetch(name)
            if data is None:
                return None
            out = self._cache[name] = StepOutput(name, data)
        return out

    def __getitem__(self, name: str) -> StepOutput:
        out = self._lookup(name)
        if out is None:
            try:
                known = ", ".join(repr(n) for n in self._list()) or "none yet"
            except Exception:  # listing is a courtesy: the missing name is the error
                known = "unknown"
            raise KeyError(
                f"no step {name!r} with a recorded output in this run (it has not completed, "
                f"or there is no such step); steps with outputs: {known}"
            )
        return out

    def __contains__(self, name: object) -> bool:
        return self._lookup(name) is not None

    def _list(self) -> list[str]:
        if self._names is None:
            raise RuntimeError("ctx.steps cannot list names here (no engine to ask)")
        return self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    def __repr__(self) -> str:
        return f"<ctx.steps {self._list()!r}>"


class StepContext:
    """What a step function (and a predicate, item selector or error handler) receives as ``ctx``.

    Attributes:
        run: run id, workflow id, step (its path: ``lines[3]/price`` inside a for_each) and
            attempt.
        steps: a read-only mapping (:class:`Steps`) of the steps with a recorded output:
            ``ctx.steps[name].output`` is an earlier step's output, ``name in ctx.steps``
            says whether it has one; inside a loop body, names resolve in the current
            iteration or item first.
        idempotency_key: stable across attempts of this step in this run; pass it to outside
            systems so that a retried step does not act twice.
        index: inside a for_each or batch body, the item's (chunk's) position; inside a while
            body, the iteration number; else None.
    """

    __slots__ = (
        "_details",
        "_error",
        "_item",
        "_last",
        "_log",
        "_payload",
        "_services",
        "_state",
        "host",
        "idempotency_key",
        "index",
        "run",
        "steps",
    )

    def __init__(
        self,
        run: RunInfo,
        payload: Any,
        last: Any,
        fetch: Callable[[str], bytes | None],
        item: Any = None,
        index: int | None = None,
        error: Any = None,
        *,
        encoded: bool = True,
        host: Host | None = None,
        details: bytes | None = None,
        names: Callable[[], list[str]] | None = None,
    ) -> None:
        self.run = run
        self.host = host  # answers requests for state and services
        # Values arrive encoded (in a worker) and are decoded on first use; the engine passes
        # values it already holds (encoded=False).
        by_ref = self._fetch_ref if host is not None else None
        self._payload = _Lazy(payload, "payload", encoded, by_ref)
        self._last = _Lazy(last, "ctx.last", encoded, by_ref)
        self._item = _Lazy(item, "ctx.item", encoded)
        self._error = _Lazy(error, "ctx.error", encoded)
        self._details = _Lazy(details, "heartbeat details", True)
        self.index = index
        if names is None and host is not None:
            names = self._step_names
        self.steps = Steps(fetch, names)
        self.idempotency_key = f"{run.id}:{run.step}"
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self._state: State | None = None
        self._services: Any = None

    def _step_names(self) -> list[str]:
        """The names ``ctx.steps`` holds, from the engine (the store's records)."""
        assert self.host is not None
        return list(self.host.request("names", None))

    def _fetch_ref(self, ref: str) -> bytes | None:
        """A large value the engine sent by reference (``payload``, ``step:<path>``)."""
        assert self.host is not None
        value: bytes | None = self.host.request("ref", ref)
        return value

    @property
    def state(self) -> State:
        """This workflow's persistent key-value state (see :class:`~actorflow.State`).

        Calls go to the engine (over the worker's pipe, in a step) and a write is durable
        before the call returns.
        """
        if self._state is None:
            host = self._require_host("ctx.state")

            def backend(op: str, scope: str, args: tuple[Any, ...]) -> Any:
                return host.request("state", (op, scope, args))

            self._state = State(backend, self.run.workflow_id)
        return self._state

    @property
    def services(self) -> Any:
        """The workflow's services: ``ctx.services.<id>.<action>(...)``.

        A service is set up once per worker process, on first use.
        """
        if self._services is None:
            self._services = ServicesView(
                self._require_host("ctx.services"), self.run.workflow_id, _current_host
            )
        return self._services

    def _require_host(self, what: str) -> Host:
        if self.host is None:
            raise RuntimeError(f"{what} is not available here (no engine to ask)")
        return self.host

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records reach the engine's ``actorflow.step`` logger.

        Records carry the run id, step name and attempt as extra fields; the engine keeps
        them with the run (``engine.logs``).
        """
        if self._log is None:
            level = getattr(self.host, "thread_log_level", None)
            self._log = logging.LoggerAdapter(
                logging.getLogger("actorflow.step") if level is None else _host_logger(self, level),
                {"run_id": self.run.id, "step": self.run.step, "attempt": self.run.attempt},
            )
        return self._log

    @property
    def payload(self) -> Any:
        """The run's input, as given to ``engine.trigger``."""
        return self._payload.get()

    @property
    def last(self) -> Any:
        """The output of the previous step (actions and sleeps passed over).

        For the first step of a for_each body it is the item; of a while body, the previous
        iteration's output; of the workflow, None.
        """
        return self._last.get()

    @property
    def item(self) -> Any:
        """Inside a for_each (batch) body, the current item (chunk); else None."""
        return self._item.get()

    @property
    def iteration(self) -> int | None:
        """Inside a while body (and in its predicate), the iteration number; else the index."""
        return self.index

    def heartbeat(self, details: Any = None) -> None:
        """Tell the engine this step is alive; ``details`` (e.g. progress) are kept.

        With a ``heartbeat_timeout``, a step silent for longer is killed and retried; the
        next attempt reads the last details as :attr:`heartbeat_details` (to resume where
        this one got to). Cheap: one message over the worker's pipe.
        """
        beat = getattr(self.host, "heartbeat", None)
        if beat is not None:
            beat(details)

    @property
    def heartbeat_details(self) -> Any:
        """The last heartbeat details of this step's previous attempt (None if none)."""
        return self._details.get()

    @property
    def error(self) -> BaseException | None:
        """In an ``on_error`` handler, the exception the step failed with; else None."""
        value = self._error.get()
        return value if isinstance(value, BaseException) else None

    def __repr__(self) -> str:
        return f"<StepContext run={self.run.id} step={self.run.step!r} attempt={self.run.attempt}>"


#: First byte of a reference the engine sends instead of a large value (``b"R" + ref``):
#: the step fetches the value only if it reads it. Never stored.
REF_TAG = 0x52


class _Lazy:
    """A value received encoded (or as a reference to it), decoded once when first read."""

    __slots__ = ("_fetch", "_raw", "_value", "_what")

    def __init__(
        self,
        raw: Any,
        what: str,
        encoded: bool,
        fetch: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self._raw = raw
        self._what = what
        self._fetch = fetch
        self._value: Any = _MISSING if encoded and raw is not None else raw

    def get(self) -> Any:
        if self._value is _MISSING:
            raw = self._raw
            if raw[0] == REF_TAG:
                if self._fetch is None:
                    raise RuntimeError(f"{self._what} is not available here (no engine to ask)")
                raw = self._fetch(bytes(raw[1:]).decode())
                if raw is None:
                    raise KeyError(f"{self._what}: the engine no longer has it")
            self._value = decode_value(raw, self._what)
            self._raw = None  # the decoded value is kept; the bytes are not needed twice
        return self._value
