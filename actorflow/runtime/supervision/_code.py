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

from collections.abc import Sequence
from typing import Any

from actorflow._types import RunStatus
from actorflow.code._history import read_history
from actorflow.errors import ClientError, NondeterminismError
from actorflow.runtime._core import run_version
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptSucceeded,
    ChildFinished,
    EventDelivered,
    ExternalDone,
    ResumeApproval,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence import _unstarted
from actorflow.runtime.supervision import _code_commands as C
from actorflow.runtime.supervision._code_run import (
    CodeRun,
    _failure_record,
    _panic_record,
    log,
)
from actorflow.runtime.supervision._run import Effects, move_status
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value, encode_value
from actorflow.store._records import dump_record, load_record
from actorflow.store._search import index_ops

__all__ = ["CodeSupervisor", "finished_for_query"]


class CodeSupervisor(CodeRun):
    """Owns one code workflow run: its record, its driver, its in-flight commands."""

    __slots__ = ()

    def on_succeeded(self, msg: AttemptSucceeded) -> None:
        C.on_succeeded(self, msg)

    def on_failed(self, msg: AttemptFailed) -> None:
        C.on_failed(self, msg)

    def on_timer(self, name: str, due: float) -> None:
        if self.finished:
            return
        if name == "deadline":
            if self.run_timed_out(due):
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

    def on_external_done(self, msg: ExternalDone) -> None:
        """What ``ctx.external(...)`` sent another run was taken (or refused) there."""
        C.on_external_done(self, msg)

    def divergence(self) -> NondeterminismError | None:
        """Why replaying this run's history took another path than the code, if it did.

        Every path that rebuilds a run by replay (recovery at start, a signal, query or
        update to a run evicted from memory, a query of a finished run, a restart) feeds
        the history to the same driver, which records the first divergence; so each asks
        here and answers the same way: with the :class:`NondeterminismError` and its
        position. A run panicked by a divergence keeps it in its panic record.
        """
        driver = self.driver
        if driver is not None and isinstance(driver.panic, NondeterminismError):
            return driver.panic
        err = self.panic_error
        if self.status == RunStatus.PANICKED and err and err.get("position") is not None:
            return NondeterminismError(
                int(err["position"]), err.get("expected"), err.get("actual"), self.run_id
            )
        return None

    def on_signal(
        self, name: str, payload: bytes, key: str | None = None, spread: bool = False
    ) -> bool:
        """A signal: durable with the activation it causes.

        ``spread``: ``payload`` is the list of the handler's arguments; it is recorded as
        ``["sig", name, "*", V]`` (one argument: ``["sig", name, V]``, as before).

        Raises:
            NondeterminismError: the run's history diverged from its code (it is panicked
                until a fix and a restart): the signal is refused, not kept, so that the
                sender knows it was not delivered.

        Returns:
            False if a signal with the same idempotency key was delivered before (this one
            is dropped).
        """
        diverged = self.divergence()
        if diverged is not None:
            raise diverged
        if key is not None:
            where = K.idempotency_key(f"{self.run_id}/signal", key)
            if key in self.signal_keys or self.core.store.get(K.IDEMPOTENCY, where) is not None:
                return False
            self.signal_keys.add(key)
            self.fx.ops.append((K.IDEMPOTENCY, where, name.encode()))
        ref = f"#sig/{self.hseq + len(self.unwritten)}"  # unique: one per history record
        value = decode_value(payload, f"signal {name!r}")
        if spread:
            self.wake(["sig", name, "*", *C.pack(self, payload, ref)], ("sig", name, "*", value))
        else:
            self.wake(["sig", name, *C.pack(self, payload, ref)], ("sig", name, value))
        return True

    def on_update(self, name: str, payload: bytes, update_id: str, reply: Promise[Any]) -> None:
        """An update: its handler runs in the function; ``reply`` gets its result."""
        diverged = self.divergence()
        if diverged is not None:
            reply.set_exception(diverged)
            return
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
        """Answer a query from the function's state (nothing is recorded).

        Raises:
            NondeterminismError: replaying the run diverged from its code: its state is not
                the one it had, so it does not answer from it.
            ClientError: no such handler, or the run cannot be queried (panicked).
        """
        diverged = self.divergence()
        if diverged is not None:
            raise diverged
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

    def resume(self, admitted_at: float | None = None) -> None:
        """Start a queued run (begun at ``admitted_at``), or take up what a loaded run had."""
        now = self.core.clock.now()
        if self.status == RunStatus.QUEUED:
            move_status(self, RunStatus.RUNNING)
            self._begin(now if admitted_at is None else admitted_at)
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
        elif kind == "cancelled":
            self.cancel_reason = str(value)
            self._finish(RunStatus.CANCELLED)
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
        # As in Temporal, the next run of the chain keeps the search attributes and memo.
        if self.search_attributes:
            rec["search_attributes"] = self.search_attributes
            ops.extend(index_ops(new_id, {}, self.search_attributes))
        if self.memo is not None:
            rec["memo"] = self.memo
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

    def cancel(self, reason: str, terminate: bool = False) -> bool:
        """Cancel the run; False if it had already finished.

        A running function is told, as in Temporal: ``["cxl", reason]`` is recorded in its
        history and ``asyncio.CancelledError`` is raised where it waits; what it awaited is
        stopped (a step's worker killed). It may catch the error, run clean-up steps and
        end as it likes; uncaught, the run ends cancelled in the same activation. Replay
        raises it at the same point, so a cancel survives a crash. A second cancel while
        the function handles the first changes nothing. A run with no live function
        (queued, panicked, waiting for its definition) ends cancelled at once, and so does
        one terminated (its code is not told).
        """
        if self.finished:
            return False
        driver = self.driver
        if (
            not terminate
            and self.status == RunStatus.RUNNING
            and driver is not None
            and not driver.main.done()
        ):
            if driver.cancel_reason is None:
                self.cancel_reason = reason
                self.wake(["cxl", reason], ("cxl", reason))
            return True
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
            C.drop(self, state)  # a child follows its parent-close policy (_code_children)
        self.states.clear()
        self.leaves.clear()
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        self._put_run()
        self.fx.finished = True
        self.fx.cancel_tasks = True  # steps it started and never awaited stop too


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
