"""The code supervisor: one code workflow run, hosted on a shard like a graph run.

It drives a :class:`~actorflow.code._driver.Driver` and turns what the function does into
:class:`~actorflow.runtime.supervision._graph.Effects` (store ops, then tasks, timers and child
starts once durable), with the same rules as graph runs:

1. A command's record (a step's dispatch record) is in the same write as the activation that
   issued it, and its work is sent only once that write is durable.
2. A step's result and the activation it wakes (with the commands *that* issues) are one
   write: an acknowledged result is never lost, and a recorded one never runs again.
3. After a restart (or an eviction from the sticky cache) the function is replayed against
   its history, and what was in flight is taken up again through the same paths.

Each activation appends one history record (``_history.py``). An activation whose function
panics is recorded *open* (its resolutions only) and produces no other effect; the run is
marked ``panicked`` and restarted by its :class:`~actorflow.PanicPolicy`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from collections.abc import Sequence
from typing import Any

from actorflow._types import RunStatus, StepStatus
from actorflow.code._definition import CodeWorkflowSpec
from actorflow.code._driver import Command, Driver
from actorflow.code._history import VALUED, Entry, read_history, unpack_value
from actorflow.errors import ClientError, NondeterminismError, StepFailed
from actorflow.runtime._core import run_version
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptSucceeded,
    ChildFinished,
    EventDelivered,
    ResumeApproval,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence import _unstarted
from actorflow.runtime.supervision import _code_commands as C
from actorflow.runtime.supervision._nodes import error_info
from actorflow.runtime.supervision._run import Effects, RunMachine, move_status, open_run, unhold
from actorflow.runtime.supervision._steps import Leaf
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value, encode_value
from actorflow.store._records import dump_record, inline_output, load_record
from actorflow.views import error_from_record, run_depth

__all__ = ["CodeSupervisor"]

log = logging.getLogger("actorflow.workflow")

#: Where a run's result goes when it does not fit in its run record.
RESULT_REF = "#result"


class CodeSupervisor(RunMachine):
    """Owns one code workflow run: its record, its driver, its in-flight commands."""

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

    # -- construction --------------------------------------------------------------------------

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
    ) -> CodeSupervisor:
        """A new run: record it (queued or running) and start the function."""
        sup = cls(core, compiled, run_id)
        open_run(sup, payload, idempotency_key, parent, depth)
        return sup

    @classmethod
    def load(cls, core: Any, compiled: Any, rec: dict[str, Any]) -> CodeSupervisor:
        """Rebuild a run from its records; replay its history unless queued or panicked."""
        run_id = rec["id"]
        sup = cls(core, compiled, run_id)
        sup.status = RunStatus(rec["status"])
        sup.created_at = rec["created_at"]
        sup.started_at = rec.get("started_at")
        sup.idempotency_key = rec.get("idempotency_key")
        sup.deadline = rec.get("deadline")
        parent = rec.get("parent")
        sup.parent = (parent[0], parent[1]) if parent else None
        sup.depth = run_depth(core.store, rec)
        sup.restarts = int(rec.get("restarts") or 0)
        sup.restart_at = rec.get("restart_at")
        sup.panic_error = rec.get("panic")
        sup.payload = core.store.get(K.VALUES, K.payload_key(run_id)) or b"J[]"
        entries, sup.hseq = read_history(core.store, run_id)
        waited = sup.status == RunStatus.WAITING_FOR_DEFINITION
        if waited:
            sup.status = RunStatus.RUNNING  # its workflow is defined again (recorded below)
        if sup.status == RunStatus.RUNNING and entries:
            sup._replay(entries)
        elif sup.status == RunStatus.QUEUED:
            sup.carried = [r for e in entries for r in e.r]  # signals sent while it queued
        if waited:
            sup.status = RunStatus.WAITING_FOR_DEFINITION
            unhold(sup)
        return sup

    # -- the function ----------------------------------------------------------------------------

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

    # -- activations ---------------------------------------------------------------------------

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
                self._ended(outcome)
                return
            for cmd in self.new_cmds:
                C.start(self, cmd)
            self.new_cmds = []
            if not self.queued:
                return
            resolutions, self.queued = self.queued, []

    # -- the driver's host -----------------------------------------------------------------------

    def issue(self, cmd: Command) -> None:
        """A live command: carried out once the activation is known to complete."""
        self.new_cmds.append(cmd)

    def settled(self, cmd: Command) -> None:
        """A signal wait took a signal within the function: its record says so."""
        state = self.states.get(cmd.seq)
        if state is not None:
            C.finish_wait(self, state, "signal")

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

    # -- outside events (from the shard) -------------------------------------------------------

    def on_succeeded(self, msg: AttemptSucceeded) -> None:
        C.on_succeeded(self, msg)

    def on_failed(self, msg: AttemptFailed) -> None:
        C.on_failed(self, msg)

    def on_timer(self, name: str, due: float) -> None:
        if self.finished:
            return
        if name == "deadline":
            if self.deadline is None or abs(self.deadline - due) > 1e-3:
                return
            timeout = self.spec.timeout or 0.0
            self.error = {
                "kind": "run_timeout",
                "type": "actorflow.errors.RunTimeout",
                "types": ["actorflow.errors.RunTimeout"],
                "message": f"the run exceeded the workflow timeout of {timeout:g}s",
                "timeout": timeout,
            }
            self.cancel_reason = "the run exceeded its timeout"
            self._finish(RunStatus.FAILED)
            return
        if name == "restart":
            at = self.restart_at
            if self.status == RunStatus.PANICKED and at is not None and abs(at - due) <= 1e-3:
                self.restart(manual=False)
            return
        C.on_timer(self, name, due)

    def on_event(self, msg: EventDelivered) -> None:
        C.on_event(self, msg)

    def on_resume(self, msg: ResumeApproval) -> str | None:
        return "resolved"  # code workflows have no approvals (use signals or updates)

    def on_child_finished(self, msg: ChildFinished) -> None:
        C.on_child_finished(self, msg)

    def on_signal(self, name: str, payload: bytes, key: str | None = None) -> bool:
        """A signal: durable with the activation it causes.

        Returns:
            False if a signal with the same idempotency key was delivered before (this one
            is dropped).
        """
        if key is not None:
            where = K.idempotency_key(f"{self.run_id}/signal", key)
            if key in self.signal_keys or self.core.store.get(K.IDEMPOTENCY, where) is not None:
                return False
            self.signal_keys.add(key)
            self.fx.ops.append((K.IDEMPOTENCY, where, name.encode()))
        ref = f"#sig/{self.hseq + len(self.unwritten)}"  # unique: one per history record
        packed = ["sig", name, *C.pack(self, payload, ref)]
        self.wake(packed, ("sig", name, decode_value(payload, f"signal {name!r}")))
        return True

    def on_update(self, name: str, payload: bytes, update_id: str, reply: Promise[Any]) -> None:
        """An update: its handler runs in the function; ``reply`` gets its result."""
        driver = self.driver
        if self.finished or driver is None or self.status != RunStatus.RUNNING:
            reply.set_exception(ClientError(f"run {self.run_id} is {self.status}: no update"))
            return
        if name not in driver.update_handlers:
            reply.set_exception(
                ClientError(
                    f"update {name!r}: the workflow registered no such update handler "
                    f"(it has {sorted(driver.update_handlers)}); register it with ctx.on_update"
                )
            )
            return
        self.core.replies[(self.run_id, update_id)] = reply
        packed = ["upd", update_id, name, *C.pack(self, payload, f"#upd/{update_id}")]
        self.wake(packed, ("upd", update_id, name, decode_value(payload, f"update {name!r}")))

    def query(self, name: str, args: Sequence[Any]) -> Any:
        """Answer a query from the function's state (nothing is recorded)."""
        if self.driver is None or self.status == RunStatus.PANICKED:
            raise ClientError(
                f"run {self.run_id} is {self.status}: its workflow state cannot be queried"
            )
        return self.driver.query(name, args)

    def restart(self, manual: bool = True) -> bool:
        """Restart a panicked run from its history (the panic policy, or by hand)."""
        if self.status != RunStatus.PANICKED or self.finished:
            return False
        if self.restart_at is not None:
            self._drop_timer(self.restart_at, "restart")
            self.restart_at = None
        if manual:
            self.restarts = 0
        else:
            self.restarts += 1
        move_status(self, RunStatus.RUNNING)
        self.panic_error = None
        self.states.clear()
        self.leaves.clear()
        # The shard restarts a run only once its earlier writes are durable: the store
        # holds its whole history.
        entries, self.hseq = read_history(self.core.store, self.run_id)
        self._replay(entries + self.unwritten)
        self._put_run()
        log.info("run %s of %r restarted after a panic", self.run_id, self.workflow_id)
        self.resume()
        return True

    # -- resuming ------------------------------------------------------------------------------

    def resume(self) -> None:
        """Start a queued run, or take up again what a loaded run had in flight."""
        now = self.core.clock.now()
        if self.status == RunStatus.QUEUED:
            move_status(self, RunStatus.RUNNING)
            self._begin(now)
            return
        if self.status == RunStatus.PANICKED:
            if self.restart_at is not None:
                self.fx.timers.append((self.restart_at, self.run_id, "restart"))
            return
        driver = self.driver
        if driver is None:
            if self.hseq == 0 and self.status == RunStatus.RUNNING:
                self._begin(now)  # recorded but never started (a run continued as new)
            return
        if self.deadline is not None:
            self.fx.timers.append((self.deadline, self.run_id, "deadline"))
        if driver.panic is not None:
            self._panic(driver.panic)
            return
        outcome = driver.outcome()
        if outcome is not None:  # the history ends where the function ends
            self._ended(outcome)
            return
        pending = sorted(driver.pending.values(), key=lambda c: c.seq)
        self.unstarted = _unstarted.take(self.core.store, self.run_id, self.fx.ops)
        carried, self.carried = self.carried, []
        if carried:
            self._activate([(r, self._decode(r)) for r in carried], now)
        for cmd in pending:
            if self.finished or self.status != RunStatus.RUNNING:
                return
            if cmd.seq in driver.pending and cmd.seq not in self.states:
                C.resume(self, cmd)
        if self.queued and not self.finished:  # found while taking up (an event in the inbox)
            queued, self.queued = self.queued, []
            self._activate(queued, now)

    # -- ending --------------------------------------------------------------------------------

    def _ended(self, outcome: tuple[str, Any]) -> None:
        kind, value = outcome
        if kind == "completed":
            try:
                self._result = encode_value(value, f"result of run {self.run_id}")
            except Exception as exc:
                self._panic(exc)
                return
            self._finish(RunStatus.COMPLETED)
        elif kind == "failed":
            self.error = _failure_record(value)
            self._finish(RunStatus.FAILED)
        elif kind == "continue":
            self._continue(value)
        else:
            self._panic(value)

    def _continue(self, args: tuple[Any, ...]) -> None:
        from actorflow._types import new_run_id

        try:
            payload = encode_value(list(args), "continue_as_new arguments")
        except Exception as exc:
            self._panic(exc)
            return
        new_id = str(new_run_id())
        self.continued_as = new_id
        now = self.core.clock.now()
        ops = self.fx.ops
        ops.append((K.VALUES, K.payload_key(new_id), payload))
        ops.append((K.INDEX, K.status_index_key(RunStatus.RUNNING, new_id), b""))
        ops.append((K.INDEX, K.workflow_index_key(self.workflow_id, new_id), b""))
        rec = {
            "id": new_id,
            "kind": "code",
            "workflow": self.workflow_id,
            "status": RunStatus.RUNNING,
            "created_at": now,
            "started_at": None,
            "ended_at": None,
            "idempotency_key": None,
            "deadline": None,
            "error": None,
            "cancel_reason": None,
            "parent": list(self.parent) if self.parent else None,
            "continued_from": self.run_id,
        }
        newest = self.core.workflows[self.workflow_id].spec.version
        if newest != 1:
            rec["version"] = newest  # a new run: it starts on the newest version
        if self.depth:
            rec["depth"] = self.depth  # the next run of the chain takes this run's place
        ops.append((K.RUNS, K.run_key(new_id), dump_record(rec)))
        self.fx.continued = (new_id, self.workflow_id)
        self._finish(RunStatus.CONTINUED)

    def _panic(self, exc: BaseException) -> None:
        """The function failed unexpectedly: stop its work, keep its history, restart later."""
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        self.new_cmds = []
        self.queued = []
        now = self.core.clock.now()
        move_status(self, RunStatus.PANICKED)
        self.panic_error = _panic_record(exc)
        # In-flight steps are stopped and run again when it restarts; timers, event
        # registrations and children stay (what they bring is taken up then).
        self.fx.cancel_tasks = True
        self.states.clear()
        self.leaves.clear()
        policy = self.spec.panic
        if self.restarts < policy.max_restarts:
            self.restart_at = now + float(policy.delay)  # type: ignore[arg-type]
            self._timer(self.restart_at, "restart")
            then = f"restart {self.restarts + 1} of {policy.max_restarts} in {policy.delay:g}s"
        else:
            self.restart_at = None
            then = "no automatic restart left: fix the code, then engine.restart(run_id)"
        log.error(
            "run %s of %r panicked (%s: %s); %s",
            self.run_id,
            self.workflow_id,
            type(exc).__name__,
            exc,
            then,
        )
        self._put_run()

    def cancel(self, reason: str) -> bool:
        """Cancel the run: stop its steps and waits; False if it had already finished."""
        if self.finished:
            return False
        self.cancel_reason = reason
        self._finish(RunStatus.CANCELLED)
        return True

    def _on_internal_failure(self) -> None:
        self.unwritten = []

    def _finish(self, status: RunStatus) -> None:
        self._close_run(status)
        if self.restart_at is not None:
            self._drop_timer(self.restart_at, "restart")
            self.restart_at = None
        for state in self.states.values():
            C.drop(self, state, cancel_children=status != RunStatus.COMPLETED)
        self.states.clear()
        self.leaves.clear()
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        self._put_run()
        self.fx.finished = True
        self.fx.cancel_tasks = True  # steps it started and never awaited stop too

    # -- records -------------------------------------------------------------------------------

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
        "traceback": "".join(traceback.format_exception(exc)),
        "exc": base64.b64encode(info.pickled).decode() if info.pickled else None,
        "step": None,
        "attempt": None,
    }


def _panic_record(exc: BaseException) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "panic",
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    if isinstance(exc, NondeterminismError):
        rec["position"] = exc.position
        rec["expected"] = exc.expected
        rec["actual"] = exc.actual
    return rec


def finished_for_query(core: Any, run_id: str) -> CodeSupervisor | None:
    """A finished code workflow run rebuilt by replay, to answer queries; else None.

    Nothing is recorded and nothing runs: the function is fed its whole history, so its
    query handlers see the state it ended in.
    """
    raw = core.store.get(K.RUNS, K.run_key(run_id))
    if raw is None:
        return None
    rec = load_record(raw, f"run {run_id}")
    compiled = core.compiled_for(rec.get("workflow"), run_version(rec))
    status = RunStatus(rec["status"])
    if rec.get("kind") != "code" or compiled is None or not status.terminal:
        return None
    rec = {**rec, "status": RunStatus.RUNNING}  # replayed like a live run...
    sup = CodeSupervisor.load(core, compiled, rec)
    sup.status = status  # ...and answers as what it is
    sup.fx = Effects()
    return sup
