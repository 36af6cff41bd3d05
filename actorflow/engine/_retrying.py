"""Running a past run again: ``engine.retry(run_id, payload=, mock_steps=)``.

As it was (a failed or cancelled run, its input byte for byte), or with overrides, as
cronflow's replay: another payload, and steps answered without running (``mocked``), kept in
the new run's record so that recovery keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from actorflow._types import RunStatus, new_run_id
from actorflow.engine._base import _SAME, _check_part, log
from actorflow.engine._handle import RunHandle, _value
from actorflow.engine._stopping import Stopping
from actorflow.errors import ClientError
from actorflow.runtime.kernel._messages import StartRun
from actorflow.runtime.kernel._promise import Countdown, Promise, then
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.views import read_run

__all__ = ["Retrying"]


class Retrying(Stopping):
    """Retrying runs (see the engine package)."""

    def retry(
        self, run_id: str, *, payload: Any = _SAME, mock_steps: Mapping[str, Any] | None = None
    ) -> RunHandle:
        """Run a past run again: a new run of its workflow, from the beginning.

        The old run keeps its record. Without overrides the new run's input is the old
        run's stored payload (a code workflow's arguments), byte for byte, and only a failed
        or cancelled run can be retried. With overrides (as cronflow's replay) any finished
        run can be, to try a fix or a case:

        Args:
            run_id: the past run.
            payload: the new run's payload instead (a code workflow's one argument).
            mock_steps: step name (or path, ``lines[2]/price``) -> the output it returns
                in the new run without running: recorded as one attempt of kind
                ``mocked``. JSON values. A graph workflow's names are checked here; a code
                workflow's are the names its ``ctx.step`` calls record (``charge``,
                ``charge#2`` for the second call of that name).

        Returns:
            The new run's handle.

        Raises:
            RunNotFound: no such run.
            ClientError: the run has not failed or been cancelled (without overrides), has
                not finished (with them), a mock names no step of a graph workflow, or a
                mock's value is not JSON.
            InvalidPayload: the new payload cannot be stored.
        """
        new_id: str = self._retry(run_id, payload, mock_steps).result()
        return RunHandle(self._facade, new_id, self._read(read_run, new_id)["workflow"])

    async def retry_async(
        self, run_id: str, *, payload: Any = _SAME, mock_steps: Mapping[str, Any] | None = None
    ) -> RunHandle:
        """Awaitable twin of :meth:`retry`."""
        new_id = await _value(self._offload(self._retry, run_id, payload, mock_steps))
        rec = await _value(self._offload(self._read, read_run, new_id))
        return RunHandle(self._facade, new_id, rec["workflow"])

    def _retry(
        self, run_id: str, payload: Any = _SAME, mock_steps: Mapping[str, Any] | None = None
    ) -> Promise[str]:
        follower = self._follower
        overrides = payload is not _SAME or mock_steps is not None
        if follower is not None:
            if overrides:
                # (The leader takes them as plain arguments; _SAME does not travel.)
                return follower.request("retry", run_id, payload is not _SAME, payload, mock_steps)
            return follower.request("retry", run_id)
        core = self._require_core(new_work=True)
        rec = read_run(core.store, run_id)
        status = RunStatus(rec["status"])
        if not overrides and status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ClientError(
                f"run {run_id} is {status}: only a failed or cancelled run can be retried "
                "as it was (trigger the workflow again for another run, or give retry a "
                "payload= or mock_steps= to run it again with them)"
            )
        if overrides and not status.terminal:
            raise ClientError(f"run {run_id} is {status}: only a finished run can be run again")
        compiled = self._compiled(core, rec["workflow"])
        if payload is _SAME:
            data = core.store.get(K.VALUES, K.payload_key(run_id)) or b"Jnull"
        else:
            data = encode_value([payload] if compiled.code else payload, "payload", core.sink)
        mocks = _check_mocks(compiled, mock_steps)
        countdown = Countdown(1)
        new_id = new_run_id()
        core.route(new_id).tell(
            StartRun(new_id, compiled.spec.id, data, None, countdown, mocks=mocks)
        )
        log.info("run %s retried as %s", run_id, new_id)
        return then(countdown.promise, new_id)


def _check_mocks(compiled: Any, mocks: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``mock_steps`` checked: names of steps (a graph workflow's), JSON values."""
    if mocks is None:
        return None
    if not isinstance(mocks, Mapping):
        raise ClientError(f"mock_steps: expected a mapping of step name to output, got {mocks!r}")
    if not compiled.code:
        known = {s.name for s in compiled.spec.steps}
        unknown = sorted(str(k) for k in mocks if str(k).rsplit("/", 1)[-1] not in known)
        if unknown:
            raise ClientError(
                f"mock_steps: {unknown} name no step of workflow {compiled.spec.id!r} "
                f"(its steps: {sorted(known)})"
            )
    out = {}
    for name, value in mocks.items():
        _check_part(name, "mock_steps: a step name", K.MAX_PATH)
        try:
            orjson.dumps(value)
        except TypeError:
            raise ClientError(
                f"mock_steps[{name!r}]: expected a JSON value (it is kept in the run's "
                f"record), got {value!r}"
            ) from None
        out[str(name)] = value
    return out
