"""``executor=af.DaskExecutor(...)``: steps run on a Dask cluster.

The Dask transport is a :class:`~actorflow.runtime.dispatch._remote.ClusterTransport`:
supervisors, the store and recovery do not know where steps run. What differs from local
workers, and why:

- **Start and timeout.** A task may wait in Dask's queue; its timeout counts from the moment
  it starts on a worker (the step asks to start over the callback link), like a local
  step's. At the timeout the step fails with ``StepTimeout`` and the worker process running
  it is restarted (``Client.restart_workers``), which is the only way to stop Python code in
  a Dask worker; anything else running in that worker fails with it and is retried by
  policy.
- **Crashes.** When a worker dies, Dask itself runs its tasks again elsewhere, up to the
  scheduler's ``allowed-failures``; only then does the future fail (``KilledWorker``), which
  is reported as a crash (``WorkerCrashed``). So a step may run twice without an attempt
  being recorded for the first run (steps are at-least-once anyway; use
  ``ctx.idempotency_key``).
- **Large values** travel as Dask moves data, not through the engine's shared memory: a
  ``B`` value (or a large payload) goes as a reference that the step fetches over the
  callback link only if it reads it.
- **Requests** go over the callback link (``_link.py`` says why not Dask's own channels).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from actorflow._extras import require
from actorflow.runtime.dispatch._remote import ClusterTransport
from actorflow.runtime.dispatch._transport import Task, TransportHost
from actorflow.workers._dask import run_task

__all__ = ["DaskExecutor", "DaskTransport"]

log = logging.getLogger("actorflow.dispatcher")

#: How long a restart of a timed-out step's Dask worker may take.
RESTART_TIMEOUT = 60


class DaskExecutor:
    """Run steps on a ``dask.distributed`` cluster (``pip install actorflow[dask]``).

    Give one of ``address``, ``cluster`` or ``client``. Use workers with one thread each
    (``LocalCluster(threads_per_worker=1)``, ``dask worker --nthreads 1``): a step past its
    timeout is stopped by restarting the worker process it runs in, which also stops
    anything else running there.

    Args:
        address: the scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``.
        cluster: a cluster object (``LocalCluster``, ``SSHCluster``...).
        client: an existing ``distributed.Client`` (the engine does not close it).
        callback_host: the address Dask workers use to reach this engine (default: the
            local address that routes to the scheduler; ``127.0.0.1`` for a local one).
        restart_on_timeout: restart the worker running a step past its timeout (or a
            cancelled one), so the step really stops; False leaves it running and ignores
            its result.

    Raises:
        ValueError: none or several of ``address``, ``cluster``, ``client``.
        MissingExtra: ``dask.distributed`` is not installed (the ``dask`` extra).
    """

    name = "dask"

    def __init__(
        self,
        address: str | None = None,
        *,
        cluster: Any = None,
        client: Any = None,
        callback_host: str | None = None,
        restart_on_timeout: bool = True,
    ) -> None:
        given = [x for x in (address, cluster, client) if x is not None]
        if len(given) != 1:
            raise ValueError(
                "DaskExecutor: expected exactly one of address=, cluster= or client=, "
                f"got {len(given)}"
            )
        if address is not None and not isinstance(address, str):
            raise ValueError(f"DaskExecutor address: expected a string, got {address!r}")
        self.address = address
        self.cluster = cluster
        self.client = client
        self.callback_host = callback_host
        self.restart_on_timeout = restart_on_timeout
        require("distributed", "af.DaskExecutor")  # here, not at start: the mistake is here

    def connect(self) -> tuple[Any, bool]:
        """A client of the cluster, and whether the engine owns it (closes it at stop)."""
        distributed = require("distributed", "af.DaskExecutor")
        if self.client is not None:
            return self.client, False
        target = self.cluster if self.cluster is not None else self.address
        return distributed.Client(target, set_as_default=False), True

    def transport(self, core: TransportHost) -> DaskTransport:
        """The engine's Dask transport (the :class:`~actorflow.Executor` protocol)."""
        return DaskTransport(core, self)

    def __repr__(self) -> str:
        where = self.address or (self.cluster and type(self.cluster).__name__) or "client"
        return f"DaskExecutor({where})"


class DaskTransport(ClusterTransport):
    """Runs tasks on a Dask cluster (see the module docstring)."""

    halted = "Dask worker restarted"
    where = "Dask"

    def __init__(self, core: TransportHost, executor: DaskExecutor) -> None:
        super().__init__(core, executor)
        self._dask = executor
        self._client: Any = None

    def connect(self) -> tuple[str | None, bool]:
        self._client, owns = self._dask.connect()
        return _scheduler_address(self._client), owns

    def disconnect(self) -> None:
        self._client.close()

    def worker_count(self) -> int:
        return len(self._client.scheduler_info().get("workers", {}))

    def launch(self, task: Task, args: tuple[Any, ...]) -> tuple[Any, Any]:
        key = f"actorflow-{task.spec.run_id}-{task.id}"
        future = self._client.submit(run_task, args, key=key, pure=False, retries=0)
        return future, future

    def forget(self, task: Task) -> None:
        if task.handle is not None:
            task.handle.cancel()  # no restart: the client closes next

    def halt(self, task: Task) -> None:
        """Cancel ``task``, and restart its worker if it runs."""
        if task.handle is not None:
            task.handle.cancel()
        if task.worker and self._dask.restart_on_timeout:
            worker = task.worker

            def restart() -> None:
                try:
                    self._client.restart_workers(
                        [worker], timeout=RESTART_TIMEOUT, raise_for_error=False
                    )
                except Exception as exc:
                    log.warning("could not restart Dask worker %s: %s", worker, exc)

            # Off the dispatcher's thread: a restart takes a while.
            threading.Thread(target=restart, name="actorflow-dask-restart", daemon=True).start()


def _scheduler_address(client: Any) -> str | None:
    try:
        return str(client.scheduler.address)
    except Exception:
        return None
