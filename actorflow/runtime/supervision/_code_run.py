"""A code workflow run's state, its driver, and its activations.

``CodeSupervisor`` is built of two parts: ``CodeRun`` (this module: the run's driver, the
workflow function on its deterministic loop, fed resolutions and replayed from history;
the commands it issues, carried out once an activation completes; the run's records) <-
``CodeSupervisor`` (``_code.py``: the run's events, signals, queries and updates,
continuing as new, panics and restarts, and ending).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self, cast

from actorflow._tracebacks import format_error
from actorflow._types import RunStatus, StepStatus
from actorflow.code._definition import CodeWorkflowSpec
from actorflow.code._driver import Command, Driver
from actorflow.code._history import VALUED, Entry, read_history, unpack_value
from actorflow.errors import NondeterminismError, StepFailed
from actorflow.runtime.supervision import _code_commands as C
from actorflow.runtime.supervision._nodes import error_info
from actorflow.runtime.supervision._run import RunMachine, open_run, unhold
from actorflow.runtime.supervision._steps import Leaf
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value
from actorflow.store._records import dump_record, inline_output
from actorflow.views import error_from_record

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

__all__ = ["CodeRun"]

log = logging.getLogger("actorflow.workflow")

#: Where a run's result goes when it does not fit in its run record.
RESULT_REF = "#result"


def _failure_record(exc: BaseException) -> dict[str, Any]:
    """The run error of a failed code workflow."""
    record = getattr(exc, "_actorflow_record", None)
    if isinstance(exc, StepFailed) and isinstance(record, dict):
        return record  # a step's (or child's) failure: result() raises it as for graphs
    info = error_info(exc)
    return {
        "kind": "workflow",
        "type": info.type,
        "types": list(info.types),
        "message": str(exc),
        "traceback": info.traceback,
        "user_traceback": info.user_traceback,
        "exc": base64.b64encode(info.pickled).decode() if info.pickled else None,
        "step": None,
        "attempt": None,
    }


def _panic_record(exc: BaseException) -> dict[str, Any]:
    full, user = format_error(exc)
    rec: dict[str, Any] = {
        "kind": "panic",
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": full,
        "user_traceback": user,
    }
    if isinstance(exc, NondeterminismError):
        rec["position"] = exc.position
        rec["expected"] = exc.expected
        rec["actual"] = exc.actual
    return rec


class CodeRun(RunMachine):
    """A code workflow run and its driver (see the module docstring)."""

    code = True
    # Slots: ten thousand waiting runs each keep one of these (and a driver) in memory.
    __slots__ = (
        "_result",
        "carried",
        "continued_as",
        "driver",
        "hseq",
        "leaves",
        "new_cmds",
        "panic_error",
        "queued",
        "quiet",
        "restart_at",
        "restarts",
        "signal_keys",
        "spec",
        "states",
        "unwritten",
    )

    def __init__(self, core: Any, compiled: Any, run_id: str) -> None:
        super().__init__(core, compiled, run_id, b"J[]")
        self.spec: CodeWorkflowSpec = compiled.spec
        self.panic_error: dict[str, Any] | None = None
        self.continued_as: str | None = None
        self.restarts = 0
        self.restart_at: float | None = None
        self.driver: Driver | None = None
        #: Engine state of live commands, by seq (steps, maps, sleeps, waits, children).
        self.states: dict[int, C.State] = {}
        #: Leaves of work in flight, by path (steps and map items), for worker reports.
        self.leaves: dict[str, Leaf] = {}
        self.hseq = 0  # the next history record's number
        self.unwritten: list[Entry] = []
        self.carried: list[list[Any]] = []  # resolutions of open records, not yet applied
        self.queued: list[tuple[list[Any], Any]] = []  # resolutions found while issuing
        self.new_cmds: list[Command] = []  # issued in the current activation
        self.quiet = False  # in the sticky cache with nothing unwritten
        self._result = b"Jnull"
        self.signal_keys: set[str] = set()  # idempotency keys of signals not yet durable

    @classmethod
    def new(
        cls,
        core: Any,
        compiled: Any,
        run_id: str,
        payload: bytes,
        idempotency_key: str | None,
        parent: tuple[str, str] | None = None,
        depth: int = 0,
        priority: int = 0,
        mocks: dict[str, Any] | None = None,
        attrs: dict[str, Any] | None = None,
        memo: dict[str, Any] | None = None,
    ) -> Self:
        """A new run: record it (queued or running) and start the function."""
        sup = cls(core, compiled, run_id)
        open_run(sup, payload, idempotency_key, parent, depth, priority, mocks, attrs, memo)
        return sup

    @classmethod
    def load(cls, core: Any, compiled: Any, rec: dict[str, Any]) -> Self:
        """Rebuild a run from its records; replay its history unless queued or panicked."""
        run_id = rec["id"]
        sup = cls(core, compiled, run_id)
        sup.load_header(rec, b"J[]")
        sup.restarts = int(rec.get("restarts") or 0)
        sup.restart_at = rec.get("restart_at")
        sup.panic_error = rec.get("panic")
        entries, sup.hseq = read_history(core.store, run_id)
        waited = sup.status == RunStatus.WAITING_FOR_DEFINITION
        if waited:
            sup.status = RunStatus.RUNNING  # its workflow is defined again (recorded below)
        if sup.status == RunStatus.RUNNING and entries:
            sup._replay(entries)
            if sup.driver is not None and sup.driver.cancel_reason is not None:
                sup.cancel_reason = sup.driver.cancel_reason  # cancelled, still cleaning up
        elif sup.status == RunStatus.QUEUED:
            sup.carried = [r for e in entries for r in e.r]  # signals sent while it queued
        if waited:
            sup.status = RunStatus.WAITING_FOR_DEFINITION
            unhold(sup)
        return sup

    def _args(self) -> list[Any]:
        args = decode_value(self.payload, f"arguments of run {self.run_id}")
        return list(args) if isinstance(args, list | tuple) else [args]

    def _new_driver(self) -> Driver:
        spec = self.spec
        driver = Driver(
            spec.fn, self._args(), self.run_id, self.workflow_id, self, spec.failure_types
        )
        driver.ctx.args = tuple(self._args())
        self.driver = driver
        return driver

    def _begin(self, now: float) -> None:
        self.started_at = now
        if self.spec.timeout is not None:
            self.deadline = now + self.spec.timeout
            self._timer(self.deadline, "deadline")
        self._put_run()
        try:
            self._new_driver()
        except Exception as exc:  # the arguments do not decode, or the function is not async
            self._panic(exc)
            return
        carried, self.carried = self.carried, []
        self._activate([(r, self._decode(r)) for r in carried], now)

    def _replay(self, entries: list[Entry]) -> None:
        """Rebuild the live function from the history (nothing runs again)."""
        from actorflow.code._replay import replay_entries

        driver = self._new_driver()
        carried: list[list[Any]] = []
        try:
            carried = replay_entries(driver, entries, self._decode)
        except Exception as exc:  # a history that cannot be decoded: corrupted or changed
            driver.panic = driver.panic or exc
        self.carried = carried
        self.new_cmds = []

    def _decode(self, res: list[Any]) -> tuple[Any, ...]:
        """A stored resolution as the driver takes it (values decoded, errors rebuilt)."""
        kind = res[0]
        what = f"history of run {self.run_id}"
        if kind in VALUED:
            raw = unpack_value(res[-2], res[-1], self._fetch, what)
            value = decode_value(raw, what)
            return (*res[:-2], value)
        if kind == "err":
            return ("err", res[1], self._exception(res[2]))
        return tuple(res)

    def _fetch(self, ref: str) -> bytes | None:
        return self.core.store.get(K.VALUES, K.step_key(self.run_id, ref))

    def _exception(self, err: dict[str, Any]) -> BaseException:
        exc = error_from_record(err, self.run_id)
        exc._actorflow_record = err  # type: ignore[attr-defined]
        return exc

    def wake(self, packed: list[Any], decoded: Sequence[Any]) -> None:
        """Something the function waits for happened: record it and run the function."""
        if self.finished:
            return
        if self.status != RunStatus.RUNNING or self.driver is None:
            # Panicked (or queued): the fact is durable all the same, and is applied when
            # the run restarts (or starts).
            self.carried.append(packed)
            self.unwritten.append(Entry(self.core.clock.now(), [packed], None))
            return
        self._activate([(packed, decoded)], self.core.clock.now())

    def _activate(self, resolutions: list[tuple[list[Any], Any]], now: float) -> None:
        """One activation (and those that resolutions found while issuing commands cause)."""
        while True:
            driver = self.driver
            if driver is None or self.finished:
                return
            self.new_cmds = []
            replies = len(self.fx.replies)
            try:
                issued = driver.activate([d for _, d in resolutions], now)
            except Exception as exc:
                # A divergence raised outside user code, or an engine bug: the run panics.
                driver.panic = driver.panic or exc
                issued = []
            packed = [p for p, _ in resolutions]
            if driver.panic is not None:
                del self.fx.replies[replies:]  # its updates are answered after the restart
                self.unwritten.append(Entry(now, packed, None))
                self._panic(driver.panic)
                return
            self.unwritten.append(Entry(now, packed, [c.recorded() for c in issued]))
            outcome = driver.outcome()
            if outcome is not None:
                # Children it started and did not await are started all the same: their
                # parent-close policy then says what becomes of them (abandon: they live on).
                # Search attributes it set last are the run's final ones.
                for cmd in self.new_cmds:
                    if cmd.kind in ("child", "attrs"):
                        C.start(self._supervisor, cmd)
                self.new_cmds = []
                self._ended(outcome)
                return
            for cmd in self.new_cmds:
                C.start(self._supervisor, cmd)
            self.new_cmds = []
            if not self.queued:
                return
            resolutions, self.queued = self.queued, []

    def issue(self, cmd: Command) -> None:
        """A live command: carried out once the activation is known to complete."""
        self.new_cmds.append(cmd)

    def dropped(self, cmd: Command) -> None:
        """The function cancelled a command's future (its run's cancel, or its own choice)."""
        if cmd in self.new_cmds:
            self.new_cmds.remove(cmd)  # issued and cancelled in one activation: never started
            return
        state = self.states.get(cmd.seq)
        if state is not None:
            C.cancel_one(self._supervisor, state)

    def settled(self, cmd: Command) -> None:
        """A signal wait took a signal within the function: its record says so."""
        state = self.states.get(cmd.seq)
        if state is not None:
            C.finish_wait(self._supervisor, state, "signal")

    def update_done(self, update_id: str, task: asyncio.Task[Any]) -> None:
        """An update handler finished: answer its caller once this activation is durable."""
        if self.driver is None or self.driver.replaying:
            return  # replayed: its caller was answered when it first ran (or is gone)
        if task.cancelled():
            answer: tuple[Any, Any] = (None, RuntimeError("the update handler was cancelled"))
        elif task.exception() is not None:
            answer = (None, task.exception())
        else:
            answer = (task.result(), None)
        self.fx.replies.append((self.run_id, update_id, *answer))

    def queue_resolution(self, packed: list[Any], decoded: Sequence[Any]) -> None:
        """A command resolved while being issued (a buffered event): its own activation."""
        self.queued.append((packed, decoded))

    def take_history(self) -> None:
        """Fold this write's history records into the effects."""
        for entry in self.unwritten:
            self.fx.ops.append((K.HISTORY, K.history_key(self.run_id, self.hseq), entry.record()))
            self.hseq += 1
        self.unwritten = []
        self.quiet = False

    def passive(self) -> bool:
        """True when no work of the run is in a worker: it only waits (timers, signals...)."""
        if self.finished or self.status == RunStatus.QUEUED or self.fx.tasks:
            return False
        return all(leaf.status != StepStatus.RUNNING for leaf in self.leaves.values())

    def evict(self) -> None:
        """Leave memory (the sticky cache is full): the next event rebuilds it by replay."""
        if self.driver is not None:
            self.driver.close()
            self.driver = None

    def _put_run(self) -> None:
        rec = self.run_header()
        rec["kind"] = "code"
        rec["restarts"] = self.restarts
        if self.panic_error is not None:
            rec["panic"] = self.panic_error
        if self.restart_at is not None:
            rec["restart_at"] = self.restart_at
        if self.continued_as is not None:
            rec["continued_as"] = self.continued_as
        if self.status == RunStatus.COMPLETED:
            value: bytes = self._result
            inline = inline_output(value)
            if inline is not None:
                rec["result"] = inline
            else:
                rec["result_ref"] = RESULT_REF
                self.fx.ops.append((K.VALUES, K.step_key(self.run_id, RESULT_REF), value))
        self.fx.ops.append((K.RUNS, K.run_key(self.run_id), dump_record(rec)))

    # -- the supervisor this part belongs to -----------------------------------------------

    @property
    def _supervisor(self) -> CodeSupervisor:
        """This run, typed as the supervisor it is (the commands take one)."""
        return cast("CodeSupervisor", self)

    if TYPE_CHECKING:  # defined by the CodeSupervisor above (types only here)

        def _panic(self, exc: BaseException) -> None:
            """The function raised or diverged: the run panics."""

        def _ended(self, outcome: tuple[str, Any]) -> None:
            """The function returned or raised for good."""
