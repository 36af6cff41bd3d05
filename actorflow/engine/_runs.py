"""Operations on runs: trigger (one or many, idempotent), retry, restart, cancel, prune."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from actorflow._types import new_run_id
from actorflow.definition._queue import check_priority
from actorflow.engine._handle import RunHandle, _value, _wait
from actorflow.errors import (
    ClientError,
    EngineNotRunning,
    StoreError,
)
from actorflow.runtime.kernel._messages import (
    CancelRun,
    RestartRun,
    StartRun,
)
from actorflow.runtime.kernel._promise import Countdown, Promise, then
from actorflow.store._codec import encode_value
from actorflow.store._prune import PruneReport
from actorflow.store._search import check_attributes
from actorflow.views import (
    read_run,
)
from actorflow.workers._interceptors import StartCall

if TYPE_CHECKING:
    pass

from actorflow.engine._base import (
    _MAX_IDEMPOTENCY_KEY,
    _all,
    _check_part,
)
from actorflow.engine._retrying import Retrying

__all__ = ["Runs"]


class Runs(Retrying):
    """Operations on runs (see the engine package)."""

    def trigger(
        self,
        workflow: str,
        *args: Any,
        idempotency_key: str | None = None,
        priority: int = 0,
        search_attributes: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
    ) -> RunHandle:
        """Start a run of ``workflow``; returns once the run is durably recorded.

        Args:
            workflow: the workflow id.
            *args: a graph workflow takes one payload (``ctx.payload``; none: None); a code
                workflow's function is called as ``f(ctx, *args)``. JSON-compatible data or
                any picklable objects.
            idempotency_key: runs triggered with the same key (per workflow) are one run: the
                second call returns the first run's handle.
            priority: on a :class:`~actorflow.Queue` created with ``priority=True``, where
                the run stands among the queued runs: lowest first (0, the default, is
                first), ties in trigger order. It is kept in the run's record, so recovery
                queues it the same.
            search_attributes: name -> a string, number or boolean, indexed:
                ``runs(where={"customer": "c-42", "amount>": 100})`` finds the run without
                scanning the others (a code workflow changes them with
                ``ctx.upsert_search_attributes``).
            memo: JSON kept with the run and shown with it (``inspect().memo``), not
                indexed.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidPayload: the payload cannot be stored.
            ClientError: more than one payload for a graph workflow; a ``priority`` other
                than 0 for a workflow whose queue does not order by priority, or one that is
                not an integer from 0 to 2**31-1; a search attribute or memo that cannot be
                kept (named).
            EngineNotRunning: the engine is not started.
        """
        call = StartCall(workflow, args, idempotency_key, priority, search_attributes, memo)
        run_id: str = self._start(call)
        return RunHandle(self._facade, run_id, workflow)

    def _start(self, call: StartCall) -> str:
        """Start a run through the interceptors (``workflow_start``); its id once durable."""

        def last(c: StartCall) -> str:
            extra = (c.priority, c.search_attributes, c.memo)
            run_id: str = self._submit(c.workflow, c.args, c.idempotency_key, None, *extra).result()
            return run_id

        if not self._interceptors:
            return last(call)
        run_id: str = self._through("workflow_start", call, last)
        return run_id

    async def trigger_async(
        self,
        workflow: str,
        *args: Any,
        idempotency_key: str | None = None,
        priority: int = 0,
        search_attributes: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
    ) -> RunHandle:
        """Awaitable twin of :meth:`trigger`; concurrent triggers share group commits.

        Nothing here runs on the event loop's thread but the await (see
        ``runtime/kernel/_offload.py``): the loop keeps serving while the trigger is recorded.
        """
        if self._interceptors:
            # Interceptors are plain functions that wait on next(): a thread of their own,
            # not one of the offload's few (which must never block on a promise).
            import asyncio

            call = StartCall(workflow, args, idempotency_key, priority, search_attributes, memo)
            started: str = await asyncio.to_thread(self._start, call)
            return RunHandle(self._facade, started, workflow)
        run_id = await _value(
            self._offload(
                self._submit,
                workflow,
                args,
                idempotency_key,
                None,
                priority,
                search_attributes,
                memo,
            )
        )
        return RunHandle(self._facade, run_id, workflow)

    def trigger_many(
        self,
        workflow: str,
        payloads: Iterable[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        priority: int = 0,
        search_attributes: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        memo: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[RunHandle]:
        """Start many runs of ``workflow`` at once; returns once all are durably recorded.

        Cheaper than a ``trigger`` per payload: the runs are recorded in shared group commits
        and the call waits once.

        Args:
            workflow: the workflow id.
            payloads: one run per payload.
            idempotency_keys: a key (or None) per payload, as for :meth:`trigger`.
            priority: every run's priority, as for :meth:`trigger`.
            search_attributes: every run's (a mapping), or one per payload (a list).
            memo: every run's (a mapping), or one per payload (a list).

        Raises:
            InvalidPayload: a payload cannot be stored (its index is named); nothing was
                started.
            ClientError: ``idempotency_keys`` does not match ``payloads``.
        """
        items = list(payloads)
        keys: list[str | None] = (
            list(idempotency_keys) if idempotency_keys is not None else [None] * len(items)
        )
        if len(keys) != len(items):
            raise ClientError(
                f"idempotency_keys: expected {len(items)} keys (one per payload), got {len(keys)}"
            )
        attrs = _per_payload(search_attributes, len(items), "search_attributes")
        memos = _per_payload(memo, len(items), "memo")
        if self._interceptors:
            # Each start through the interceptors, as trigger's: one commit wait each.
            return [
                RunHandle(self._facade, self._start(StartCall(
                    workflow, (p,), keys[i], priority,
                    attrs[i] if attrs else None, memos[i] if memos else None,
                )), workflow)
                for i, p in enumerate(items)
            ]  # fmt: skip
        ids: list[str] = self._submit_many(
            workflow, items, keys, None, priority, attrs, memos
        ).result()
        return [RunHandle(self._facade, run_id, workflow) for run_id in ids]

    def _submit_many(
        self,
        workflow: str,
        items: list[Any],
        keys: list[str | None],
        run_ids: list[str] | None = None,
        priority: int = 0,
        attrs: list[Any] | None = None,
        memos: list[Any] | None = None,
    ) -> Promise[list[str]]:
        """Start a run per item; the promise completes with their ids once all are durable."""
        ids: list[str] = (
            list(run_ids) if run_ids is not None else [str(new_run_id()) for _ in items]
        )
        follower = self._follower
        if follower is not None:
            return follower.request(
                "submit_many", workflow, items, keys, ids, False, priority, attrs, memos
            )
        core = self._require_core(new_work=True)
        compiled = self._compiled(core, workflow)
        _check_priority(core, compiled.spec.id, priority)
        attrs = [
            check_attributes(a, f"search_attributes[{i}]") or None
            for i, a in enumerate(attrs or [None] * len(items))
        ]
        memos = [_check_memo(m, f"memo[{i}]") for i, m in enumerate(memos or [None] * len(items))]
        sink = core.sink
        encoded = [
            encode_value([p] if compiled.code else p, f"payloads[{i}]", sink)
            for i, p in enumerate(items)
        ]
        for i, key in enumerate(keys):
            if key is not None:
                _check_part(key, f"idempotency_keys[{i}]", _MAX_IDEMPOTENCY_KEY)
        plain = [i for i, k in enumerate(keys) if k is None]
        countdown = Countdown(len(plain))
        for i in plain:
            start = StartRun(
                ids[i], compiled.spec.id, encoded[i], None, countdown, None, 0, priority,
                None, attrs[i], memos[i],
            )  # fmt: skip
            core.route(ids[i]).tell(start)
        waits = [countdown.promise]
        for i, key in enumerate(keys):
            if key is not None:
                ids[i], fut = core.submit(
                    compiled.spec.id, encoded[i], key, None, None, priority, attrs[i], memos[i]
                )
                waits.append(fut)
        return _all(waits, ids)

    def _submit(
        self,
        workflow: str,
        args: tuple[Any, ...],
        idempotency_key: str | None,
        run_id: str | None = None,
        priority: int = 0,
        attrs: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
    ) -> Promise[str]:
        """Start a run; the promise completes with its id once it is durable."""
        follower = self._follower
        if follower is not None:
            return follower.request(
                "submit", workflow, args, idempotency_key, run_id or new_run_id(), False,
                priority, attrs, memo,
            )  # fmt: skip
        core = self._require_core(new_work=True)
        compiled = self._compiled(core, workflow)
        _check_priority(core, compiled.spec.id, priority)
        checked = check_attributes(attrs, "search_attributes") or None
        memo = _check_memo(memo, "memo")
        if compiled.code:
            data = encode_value(list(args), "arguments", core.sink)
        elif len(args) > 1:
            raise ClientError(
                f"trigger({workflow!r}, ...): a graph workflow takes one payload, got "
                f"{len(args)} arguments (pass one dict or list)"
            )
        else:
            data = encode_value(args[0] if args else None, "payload", core.sink)
        if idempotency_key is not None:
            _check_part(idempotency_key, "idempotency_key", _MAX_IDEMPOTENCY_KEY)
        new_id, fut = core.submit(
            compiled.spec.id, data, idempotency_key, None, run_id, priority, checked, memo
        )
        return then(fut, new_id)

    def run(self, run_id: str) -> RunHandle:
        """A handle for an existing run.

        Raises:
            RunNotFound: no such run.
        """
        rec = self._read(read_run, run_id)
        return RunHandle(self._facade, run_id, rec["workflow"])

    def restart(self, run_id: str) -> None:
        """Restart a panicked code workflow run from its history (after fixing the code).

        Its restart count starts again from zero. Returns once the restart is durable.

        Raises:
            RunNotFound: no such run.
            ClientError: the run is not a panicked code workflow run.
        """
        self._restart(run_id).result()

    async def restart_async(self, run_id: str) -> None:
        """Awaitable twin of :meth:`restart`."""
        await _wait(self._offload(self._restart, run_id))

    def _restart(self, run_id: str) -> Promise[bool]:
        follower = self._follower
        if follower is not None:
            return follower.request("restart", run_id)
        core = self._require_core(new_work=True)
        read_run(core.store, run_id)  # RunNotFound for an unknown id
        fut: Promise[bool] = Promise()
        core.route(run_id).tell(RestartRun(run_id, fut))
        return fut

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """What happened to a run, oldest first, as Temporal's event history lists it.

        Read back from the run's records (nothing more is recorded for it), for graph and
        code workflows alike: ``run_triggered``, ``run_started``, each attempt's
        ``step_started`` and ``step_succeeded`` / ``step_failed`` / ``step_cancelled`` /
        ``step_interrupted`` / ``step_mocked``, ``retry_scheduled``, ``branch_taken``,
        ``race_won``, ``child_started``, ``approval_requested`` and how it was resolved, a
        code workflow's ``command`` (each command its function issued),
        ``signal_received``, ``update_received``, ``cancel_requested`` and
        ``wait_timed_out``, and the run's end (``run_completed``, ``run_failed``,
        ``run_cancelled``, ``run_continued``).

        Returns:
            Dicts ``{"time", "type", "step", "attempt", "detail"}``.

        Raises:
            RunNotFound: no such run.
        """
        from actorflow.engine._history import run_history

        return self._read(run_history, run_id)

    def export_history(self, run_id: str, path: str | Path | None = None) -> dict[str, Any]:
        """A code workflow run's history as one JSON document (written to ``path`` if given).

        ``actorflow replay --history FILE module:engine`` or ``af.testing.replay(doc, fn)``
        replays it against the current code without a store.

        Raises:
            RunNotFound: no such run.
            ClientError: the run is a graph workflow's.
        """
        from actorflow.code._history import export_history

        doc = self._read(export_history, run_id)
        if path is not None:
            Path(path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return doc

    def _watch(self, run_id: str) -> Promise[None]:
        follower = self._follower
        if follower is not None:
            return follower.request("watch", run_id)
        core = self._core
        if core is None:
            fut: Promise[None] = Promise()
            fut.set_exception(
                EngineNotRunning(
                    f"run {run_id} is unfinished and no engine is running to finish it; "
                    "start the engine (with engine: ...) to resume it"
                )
            )
            return fut
        if self._failure is not None:
            fut = Promise()
            fut.set_exception(StoreError(f"the engine halted: {self._failure}"))
            return fut
        return core.waiters.watch(run_id)

    def _unwatch(self, run_id: str) -> None:
        """Release the watch of a run that is over: it wakes whoever shares it, who looks again.

        A watch registered after its run ended is never completed by the run; without this,
        the engine would keep one per ``result()`` of a finished run for its lifetime. (A
        follower's watch lives in its leader, which releases it the same way.)
        """
        core = self._core
        if core is not None:
            core.waiters.resolve(run_id)

    def _cancel(self, run_id: str, reason: str, terminate: bool = False) -> Promise[bool]:
        follower = self._follower
        if follower is not None:
            return follower.request("cancel", run_id, reason, terminate)
        core = self._require_core()
        read_run(core.store, run_id)  # RunNotFound for an unknown id
        fut: Promise[bool] = Promise()
        core.route(run_id).tell(CancelRun(run_id, str(reason), fut, terminate))
        return fut

    def prune(
        self,
        older_than: Any = None,
        *,
        workflow: str | None = None,
        dry_run: bool = False,
        archive: str | Path | None = None,
    ) -> PruneReport:
        """Delete finished runs now, with everything they own (what retention does by itself).

        Only finished runs (completed, failed, cancelled, continued as new) are pruned, and
        never a child whose parent run is unfinished. Their idempotency keys are freed: a
        trigger with the same key afterwards starts a new run.

        Args:
            older_than: prune runs that ended more than this long ago (a duration such as
                ``"30d"``; 0: every finished run); None: each workflow's retention.
            workflow: only this workflow's runs.
            dry_run: delete nothing; the report says what would go.
            archive: first append each run to this JSON-lines file (zstd-compressed if its
                name ends in ``.zst``), fsynced before the run is deleted.

        Returns:
            What was pruned: runs, blobs, bytes freed...

        Raises:
            ClientError: ``older_than`` is not a duration.
            MissingExtra: a ``.zst`` archive without the ``codecs`` extra (zstandard).
            EngineNotRunning: the engine is not started.
        """
        if self._follower is not None:
            return self._forward(  # type: ignore[no-any-return]
                "prune", older_than, workflow=workflow, dry_run=dry_run, archive=archive
            )
        self._require_core()
        background = self._background
        if background is None:
            raise EngineNotRunning("the engine is not running: start it to prune")
        pruner = background.pruner
        selection = pruner.selection(older_than, workflow)
        return pruner.run(selection, bool(dry_run), None if archive is None else str(archive))


def _check_priority(core: Any, workflow: str, priority: Any) -> None:
    """A trigger's ``priority`` is an integer, and means something for this workflow."""
    try:
        check_priority(priority)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    if priority and not core.admission.orders_by_priority(workflow):
        raise ClientError(
            f"priority: workflow {workflow!r} is not on a queue that orders by priority "
            f"(give it af.Queue(..., priority=True)), got priority={priority!r}"
        )


#: Largest memo, as JSON.
_MAX_MEMO = 64 * 1024


def _check_memo(memo: Any, what: str) -> dict[str, Any] | None:
    """A memo: a mapping of JSON, at most 64 KiB of it (it is kept in the run record)."""
    if memo is None:
        return None
    if not isinstance(memo, Mapping):
        raise ClientError(f"{what}: expected a mapping, got {memo!r}")
    try:
        size = len(orjson.dumps(memo))
    except TypeError as exc:
        raise ClientError(f"{what}: expected JSON values ({exc})") from None
    if size > _MAX_MEMO:
        raise ClientError(f"{what}: at most {_MAX_MEMO} bytes of JSON, got {size}")
    return dict(memo)


def _per_payload(value: Any, n: int, what: str) -> list[Any] | None:
    """trigger_many's ``search_attributes`` / ``memo``: one mapping for all, or a list of n."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [value] * n
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ClientError(f"{what}: expected {n} entries (one per payload), got {len(value)}")
        return list(value)
    raise ClientError(f"{what}: expected a mapping or a list of them, got {value!r}")
