"""What reaches runs from outside: events, approvals, signals, queries, updates, state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actorflow._types import new_run_id
from actorflow.engine._handle import _value, _wait
from actorflow.errors import ClientError
from actorflow.runtime.kernel._messages import (
    QueryRun,
    SignalRun,
    UpdateRun,
)
from actorflow.runtime.kernel._promise import Promise, then
from actorflow.runtime.supervision._external import (
    list_approvals,
    publish,
    resume,
)
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.workers._state import State

if TYPE_CHECKING:
    pass

from actorflow.engine._base import (
    _MAX_IDEMPOTENCY_KEY,
    _check_part,
)
from actorflow.engine._runs import Runs

__all__ = ["Events"]


class Events(Runs):
    """Events, approvals, signals, queries, updates and state (see the engine package)."""

    def publish(
        self, event: str, payload: Any = None, *, key: str | None = None, ttl: Any = None
    ) -> int:
        """Publish an event; returns once it is durably recorded.

        Every step waiting for ``event`` (``.wait_for_event``) whose key matches gets it. An
        event with a ``key`` that no step with that key waits for yet is kept for ``ttl``
        (default: the engine's ``event_ttl``) and taken by the first such wait.

        Args:
            event: the event's name.
            payload: its data (the waiting step's output).
            key: routes the event to waits with this key (e.g. an order id).
            ttl: how long an untaken keyed event is kept (a duration).

        Returns:
            How many waiting steps it was delivered to.

        Raises:
            ClientError: a bad name, key or ttl.
            InvalidPayload: the payload cannot be stored.
        """
        delivered: int = self._publish(event, payload, key, ttl).result()
        return delivered

    async def publish_async(
        self, event: str, payload: Any = None, *, key: str | None = None, ttl: Any = None
    ) -> int:
        """Awaitable twin of :meth:`publish`."""
        delivered: int = await _value(self._offload(self._publish, event, payload, key, ttl))
        return delivered

    def _publish(self, event: str, payload: Any, key: str | None, ttl: Any) -> Promise[int]:
        follower = self._follower
        if follower is not None:
            return follower.request("publish", event, payload, key, ttl)
        _, done, delivered = publish(self._require_core(new_work=True), event, payload, key, ttl)
        return then(done, delivered)

    def resume(self, token: str, payload: Any = None) -> None:
        """Resume a run paused at ``human_in_the_loop``; ``payload`` is the node's output.

        Returns once the resume is durable.

        Raises:
            ApprovalNotFound: no approval has this token.
            ApprovalAlreadyResolved: it was resumed already (a token works once).
            ApprovalExpired: its timeout passed.
        """
        self._resume(token, payload).result()

    async def resume_async(self, token: str, payload: Any = None) -> None:
        """Awaitable twin of :meth:`resume`."""
        await _wait(self._offload(self._resume, token, payload))

    def _resume(self, token: str, payload: Any) -> Promise[Any]:
        follower = self._follower
        if follower is not None:
            return follower.request("resume", token, payload)
        return resume(self._require_core(new_work=True), token, payload)

    def _signal(
        self,
        run_id: str,
        name: str,
        payload: Any,
        key: str | None = None,
        args: Sequence[Any] | None = None,
    ) -> Promise[bool]:
        """Send a signal: ``payload`` is its one argument, or ``args`` (not both) its list."""
        if args is not None:
            if payload is not None:
                raise ClientError(f"signal {name!r}: give payload or args, not both")
            if not isinstance(args, list | tuple):
                raise ClientError(f"signal {name!r}: args: expected a list, got {args!r}")
            args = list(args)
        follower = self._follower
        if follower is not None:
            # A key of its own makes the signal safe to send again to the next leader.
            return follower.request(
                "signal", run_id, name, payload, key or f"af:{new_run_id()}", args
            )
        core = self._require_core(new_work=True)
        _check_part(name, "signal: name", K.MAX_NAME)
        if key is not None:
            _check_part(key, "idempotency_key", _MAX_IDEMPOTENCY_KEY)
        what = f"payload of signal {name!r}" if args is None else f"args of signal {name!r}"
        data = encode_value(payload if args is None else args, what)
        fut: Promise[bool] = Promise()
        core.route(run_id).tell(SignalRun(run_id, name, data, fut, key, args is not None))
        return fut

    def _query(self, run_id: str, name: str, args: tuple[Any, ...]) -> Promise[Any]:
        follower = self._follower
        if follower is not None:
            return follower.request("query", run_id, name, args)
        core = self._require_core()
        _check_part(name, "query: name", K.MAX_NAME)
        fut: Promise[Any] = Promise()
        core.route(run_id).tell(QueryRun(run_id, name, tuple(args), fut))
        return fut

    def _update(self, run_id: str, name: str, payload: Any) -> Promise[Any]:
        follower = self._follower
        if follower is not None:
            return follower.request("update", run_id, name, payload)
        core = self._require_core(new_work=True)
        _check_part(name, "update: name", K.MAX_NAME)
        data = encode_value(payload, f"payload of update {name!r}")
        fut: Promise[Any] = Promise()
        core.route(run_id).tell(UpdateRun(run_id, name, data, str(new_run_id()), fut))
        return fut

    def approvals(
        self, status: str | None = "waiting", run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Approvals (pending by default), oldest first, each a dict with its ``token``.

        Args:
            status: ``"waiting"``, ``"resumed"``, ``"expired"``, ``"cancelled"``, or None
                for all.
            run_id: only this run's.
        """
        return self._read(list_approvals, status, run_id)

    @property
    def state(self) -> State:
        """The engine's global persistent state (``.of(workflow_id)``: a workflow's)."""
        return self._state
