"""What a transport is: how one kind of executor runs the tasks the dispatcher core hands it.

The dispatcher (``_dispatcher.py``) is one actor whatever runs the steps. It keeps the
table of tasks, their deadlines (counted from each task's start), cancels, drains, the
stop's account of what never started, the answers to what running steps ask, and the
reports to the runs' shards. A *transport* does only what differs between places steps run:

    Dispatch ─▶ Dispatcher core ── submit(tasks) ─▶ Transport ─▶ workers
                  ▲  table, deadlines,                 │  process pool: pipes, prefetch, shm
                  │  cancel, drain, stop,              │  inline: threads of this process
                  │  requests, reports                 │  Dask / Ray: futures on a cluster
                  └─ started / beat / finished / fail ─┘

A transport lives on the core's actor thread: its methods are called there, and it calls
the core's (:class:`TransportHost`) there. Work done on other threads (a Dask future's
callback, an inline step's thread, a Ray waiter) comes back as the core's messages
(:meth:`TransportHost.tell_started`, :meth:`TransportHost.tell_finished`, ...), which are
thread-safe. A transport's own messages and its pipes' readiness (``IoReady``) reach it
through :meth:`Transport.on_message`.

A task stays in the core's table from its dispatch until its transport says it is over
(``finished``, ``fail``, ``not_started``, ``drop``) or the core times it out; so a
transport never keeps a second account of what is in flight.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from actorflow.runtime.kernel._messages import ErrorInfo, TaskSpec

if TYPE_CHECKING:
    from actorflow.config import EngineConfig
    from actorflow.runtime._core import Core
    from actorflow.runtime.dispatch._core import DispatcherStats, Reports
    from actorflow.runtime.kernel._costs import CostBook
    from actorflow.runtime.kernel._inbox import SelectorInbox
    from actorflow.runtime.kernel._promise import Promise
    from actorflow.store._protocol import Store

__all__ = ["Task", "Transport", "TransportHost"]


class Task:
    """One task, from its dispatch until its outcome is reported (or it is given up).

    Attributes:
        id: the dispatcher's number for it (unique in this engine's life).
        spec: what to run.
        started: monotonic time it started (its timeout counts from here), or None.
        beat: monotonic time of its last heartbeat (its start if none).
        details: its last heartbeat's details (first, the previous attempt's).
        cancelled: its run was cancelled, or it was given up: whatever it reports is dropped.
        handle: the transport's own handle (a worker, a Dask future, a Ray object ref).
        worker: where it runs, for the record (a Dask worker's address); "" if not known.
        pid: the process running it; 0 if not known.
        logs: what it logged and kept, per step (``store/_logs.LogTally``); None until it
            logs.
    """

    __slots__ = (
        "beat",
        "cancelled",
        "details",
        "handle",
        "id",
        "logs",
        "pid",
        "spec",
        "started",
        "worker",
    )

    def __init__(self, task_id: int, spec: TaskSpec) -> None:
        self.id = task_id
        self.spec = spec
        self.started: float | None = None
        self.beat = 0.0
        self.details = spec.details
        self.cancelled = False
        self.handle: Any = None
        self.worker = ""
        self.pid = 0
        self.logs: Any = None

    def deadline(self) -> float | None:
        """When it must end (monotonic): its timeout or its heartbeat timeout, if started."""
        started = self.started
        if started is None:
            return None
        spec = self.spec
        deadline = None if spec.timeout is None else started + spec.timeout
        if spec.heartbeat_timeout is not None:
            silent = self.beat + spec.heartbeat_timeout
            deadline = silent if deadline is None else min(deadline, silent)
        return deadline


class TransportHost(Protocol):
    """What a transport may call on the dispatcher core (on the core's thread unless said).

    Declared here (the core, ``_dispatcher.Dispatcher``, implements it) so that a transport
    names what it relies on and imports nothing of the core.
    """

    config: EngineConfig
    store: Store  # for requests
    host: Core | None  # the engine core (services, ctx.state, blobs, writer); None in bare tests
    ready: Promise[None]  # completed once the transport can run tasks
    costs: CostBook  # seconds per item of each function, as the core observed them
    stats: DispatcherStats
    reports: Reports
    inbox: SelectorInbox
    tasks: dict[int, Task]

    @property
    def actor_ref(self) -> Any: ...

    @property
    def draining(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def started(self, task: Task, worker: str = "", pid: int = 0) -> None: ...

    def beat(self, task: Task, details: bytes | None) -> None: ...

    def finished(self, task: Task, ok: bool, data: Any, started: float, ended: float) -> None: ...

    def fail(self, task: Task, error: ErrorInfo) -> None: ...

    def drop(self, task: Task) -> None: ...

    def not_started(self, task: Task) -> None: ...

    def check_drained(self) -> None: ...

    def step_log(
        self, task: Task, level: int, message: str, step: str, at: float | None = None
    ) -> None: ...

    def log_level(self) -> int: ...

    def state_call(self, arg: Any, done: Callable[[bool, Any], None]) -> None: ...

    def answer(
        self, op: str, key: int, run_id: str, workflow_id: str, step: str, arg: Any
    ) -> Any: ...

    def tell_started(self, key: int, worker: str, pid: int) -> None: ...

    def tell_finished(self, key: int, outcome: Any) -> None: ...


class Transport(abc.ABC):
    """How tasks reach the place they run (see the module docstring).

    Subclasses override :meth:`submit` and :meth:`halt` at least. The defaults suit a
    transport whose tasks start on their own once sent (a cluster's queue, a thread pool):
    a step asks the core to start (``answer("start", ...)``), which the core refuses once
    it drains or stops, so such a transport has nothing to take back.

    Args:
        core: the dispatcher core it serves.
    """

    #: Where tasks run, for error messages ("the Dask task failed: ...").
    where = "remote"
    #: What stopping a task at its deadline did, for its error message.
    halted = "stopped"
    #: Whether the core's ``ready`` completes as soon as :meth:`open` returned (a pool
    #: completes it itself, once its workers said hello).
    ready_at_open = True

    def __init__(self, core: TransportHost) -> None:
        self.core = core

    def open(self) -> None:  # noqa: B027 (an optional hook)
        """Connect or start (on the core's thread, at its start); raise if it cannot run."""

    @abc.abstractmethod
    def submit(self, tasks: list[Task]) -> None:
        """Run ``tasks`` (already in the core's table), in order as far as it can."""

    @abc.abstractmethod
    def halt(self, task: Task) -> None:
        """Make sure ``task`` does nothing more (past its deadline, or cancelled).

        The core has removed it from its table (and reported its timeout) before.
        """

    def cancel(self, tasks: list[Task]) -> None:
        """Stop ``tasks`` (their runs were cancelled; each is marked ``cancelled``).

        By default each is dropped from the core's table and halted; a transport that must
        wait for a worker to let a task go drops it later.
        """
        for task in tasks:
            self.core.drop(task)
            self.halt(task)

    def withdraw(self) -> None:  # noqa: B027 (an optional hook)
        """A drain began: send nothing more, take back what was sent but has not started."""

    def stop(self) -> None:  # noqa: B027 (an optional hook)
        """The engine stops: settle what can be settled (the core accounts for the rest)."""

    def forget(self, task: Task) -> None:
        """At the stop, ``task`` is left unfinished (recovery runs it again): halt it."""
        self.halt(task)

    def close(self) -> None:  # noqa: B027 (an optional hook)
        """Disconnect (last thing at the stop)."""

    def on_message(self, message: Any) -> bool:
        """Handle a message of this transport's own; False if it is not one."""
        return False

    def next_wakeup(self) -> float | None:
        """The monotonic time this transport next needs :meth:`tick` called, or None."""
        return None

    def slack(self) -> float:
        """Seconds its workers can go on without hearing from the dispatcher.

        While results are held back anyway (``Reports``), the dispatcher may leave this
        transport's waitables unread that long, and read what came meanwhile in one go.
        0 (the default): read at once.
        """
        return 0.0

    def tick(self, now: float) -> None:  # noqa: B027 (an optional hook)
        """A wake-up it asked for (:meth:`next_wakeup`) came (or any deadline did)."""

    def worker_count(self) -> int:
        """How many workers run tasks."""
        return 0

    def failure(self, task: Task, data: Any) -> ErrorInfo | None:
        """An engine-observed failure to report instead of a step's own error, or None.

        ``data`` is the failed step's error tuple. (The inline transport turns a test
        double's ``SimulatedFault`` into a timeout or a crash here.)
        """
        return None

    def statistics(self, stats: DispatcherStats) -> None:
        """Fill in the counters only the transport knows (queued, busy, workers, latency)."""
        tasks = self.core.tasks.values()
        stats.queued = sum(1 for t in tasks if t.started is None)
        stats.busy = sum(1 for t in tasks if t.started is not None)
        try:
            stats.workers = self.worker_count()
        except Exception:
            stats.workers = 0
