"""The dispatcher for ``executor=af.DaskExecutor(...)``: steps run on a Dask cluster.

It is a :class:`~actorflow.runtime.dispatch._remote.RemoteDispatcher`: supervisors, the store and
recovery do not know where steps run. What differs from local workers, and why:

- **Start and timeout.** A task may wait in Dask's queue; its timeout counts from the moment
  it starts on a worker (the task says so over the callback link), like a local step's.
  At the timeout the step fails with ``StepTimeout`` and the worker process running it is
  restarted (``Client.restart_workers``), which is the only way to stop Python code in a
  Dask worker; anything else running in that worker fails with it and is retried by policy.
- **Crashes.** When a worker dies, Dask itself runs its tasks again elsewhere, up to the
  scheduler's ``allowed-failures``; only then does the future fail (``KilledWorker``), which
  is reported as a crash (``WorkerCrashed``). So a step may run twice without an attempt
  being recorded for the first run (steps are at-least-once anyway; use
  ``ctx.idempotency_key``).
- **Large values** travel as Dask moves data, not through the engine's shared memory: a
  ``B`` value (or a large payload) goes as a reference that the step fetches over the
  callback link only if it reads it.
"""

from __future__ import annotations

import functools
import logging
import secrets
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from typing import Any
from urllib.parse import urlparse

import pykka

from actorflow.config import EngineConfig
from actorflow.runtime.dispatch._remote import Finished, RemoteDispatcher, RemoteTask, step_log
from actorflow.runtime.kernel._inbox import tell
from actorflow.runtime.kernel._promise import Promise
from actorflow.store._protocol import Store
from actorflow.workers._dask import DaskExecutor, run_task

__all__ = ["DaskDispatcher"]

log = logging.getLogger("actorflow.dispatcher")


class DaskDispatcher(RemoteDispatcher):
    """Runs tasks on a Dask cluster and reports their outcome (see the module docstring).

    Args:
        config: the engine configuration.
        route: run id -> its shard's actor ref.
        store: read to answer steps' ``ctx.steps[...]`` requests.
        ready: completed once connected to the cluster.
        host: the engine core (``ctx.state``, services).
        executor: where to run.
    """

    halted = "Dask worker restarted"
    where = "Dask"

    def __init__(
        self,
        config: EngineConfig,
        route: Callable[[str], pykka.ActorRef[Any]],
        store: Store,
        ready: Promise[None],
        host: Any,
        executor: DaskExecutor,
    ) -> None:
        super().__init__(config, route, store, ready, host)
        self._executor = executor
        self._client: Any = None
        self._owns_client = False
        self._authkey = secrets.token_bytes(32)
        self._listener: Listener | None = None
        self._address: Any = None

    def open(self) -> None:
        self._client, self._owns_client = self._executor.connect()
        host = self._executor.callback_host or _callback_host(self._client)
        self._listener = Listener((host, 0), authkey=self._authkey)
        self._address = self._listener.address
        threading.Thread(target=self._accept, name="actorflow-dask-link", daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        if self._client is not None and self._owns_client:
            try:
                self._client.close()
            except Exception:
                log.debug("closing the Dask client failed", exc_info=True)

    def worker_count(self) -> int:
        return len(self._client.scheduler_info().get("workers", {}))

    def send(self, task: RemoteTask, body: tuple[Any, ...]) -> Any:
        full = (*body, step_log.getEffectiveLevel(), self._address, self._authkey)
        future = self._client.submit(run_task, full, key=task.key, pure=False, retries=0)
        future.add_done_callback(functools.partial(_collect, self.actor_ref, task.key))
        return future

    def forget(self, task: RemoteTask) -> None:
        task.handle.cancel()  # no restart: the client closes next

    def halt(self, task: RemoteTask) -> None:
        """Cancel ``task``, and restart its worker if it runs."""
        task.handle.cancel()
        if task.worker and self._executor.restart_on_timeout:
            worker = task.worker

            def restart() -> None:
                try:
                    self._client.restart_workers([worker], timeout=60, raise_for_error=False)
                except Exception as exc:
                    log.warning("could not restart Dask worker %s: %s", worker, exc)

            # Off this actor's thread: a restart takes a while.
            threading.Thread(target=restart, name="actorflow-dask-restart", daemon=True).start()

    # -- the callback link (on its own threads) ---------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError):
                return  # closed at stop
            except Exception:  # a peer that failed the handshake
                log.warning("refused a Dask worker connection (bad key)")
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="actorflow-dask-req", daemon=True
            ).start()

    def _serve(self, conn: Connection) -> None:
        while True:
            try:
                op, key, run_id, workflow_id, step, arg = conn.recv()
            except (EOFError, OSError):
                return
            try:
                value = self.answer(op, key, run_id, workflow_id, step, arg)
                reply: tuple[bool, Any] = (True, value)
            except Exception as exc:
                from actorflow.errors import ClientError

                kind = "client" if isinstance(exc, ClientError) else "engine"
                reply = (False, (kind, str(exc)))
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return


def _collect(ref: Any, key: str, future: Any) -> None:
    """A future finished (on a thread of the Dask client): fetch its result, tell the actor."""
    try:
        outcome: Any = future.result()
    except BaseException as exc:  # the task's failure (KilledWorker, CancelledError...)
        outcome = exc
    tell(ref, Finished(key, outcome))


def _callback_host(client: Any) -> str:
    """The local address that routes to the scheduler (loopback for a local cluster)."""
    try:
        address = client.scheduler.address
    except Exception:
        return "127.0.0.1"
    host = urlparse(address).hostname or "127.0.0.1"
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "0.0.0.0"
