"""Running steps on a Dask cluster: the executor users configure, and the task that runs there.

``Engine(executor=af.DaskExecutor(...))`` sends every step to a ``dask.distributed`` cluster
instead of the local worker processes; the engine keeps the store, the supervisors and every
durability rule (see ``runtime/dispatch/_dask.py`` and ``docs/scale-out.md``).

A task runs :func:`run_task` on a Dask worker. What a step asks of the engine while it runs
(``ctx.steps[...]``, a large payload, ``ctx.state``, services, heartbeats, log records, "I
have started") goes back over one authenticated connection per worker process to a listener
the engine opens (``multiprocessing.connection``, pickled tuples, an HMAC handshake on a
random key). Dask workers never open the store.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from actorflow._extras import require
from actorflow.errors import ClientError
from actorflow.workers._task import LinkLogHandler, TaskHost, execute

__all__ = ["DaskExecutor", "run_task"]


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

    def __repr__(self) -> str:
        where = self.address or (self.cluster and type(self.cluster).__name__) or "client"
        return f"DaskExecutor({where})"


# -- the worker side ---------------------------------------------------------------------------

_links: dict[tuple[Any, bytes], _Link] = {}
_links_lock = threading.Lock()
_step_logger = logging.getLogger("actorflow.step")


class _Link:
    """This process's connection to one engine (requests are answered in order)."""

    def __init__(self, address: Any, key: bytes) -> None:
        from multiprocessing.connection import Client  # on a Dask worker only

        self.conn = Client(address, authkey=key)
        self.lock = threading.Lock()

    def call(self, msg: tuple[Any, ...]) -> Any:
        with self.lock:
            self.conn.send(msg)
            ok, value = self.conn.recv()
        if not ok:
            kind, message = value
            if kind == "client":
                raise ClientError(message)
            raise RuntimeError(f"engine could not answer {msg[0]!r}: {message}")
        return value


def _link(address: Any, key: bytes) -> _Link:
    with _links_lock:
        link = _links.get((address, key))
        if link is None:
            link = _links[(address, key)] = _Link(address, key)
        return link


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:
        return ""


def run_task(task: tuple[Any, ...]) -> tuple[bool, Any, float, float] | None:
    """Run one step on a Dask worker.

    Args:
        task: the tuple the engine's Dask dispatcher builds: the task (see
            :func:`~actorflow.workers._task.execute`), the log level, the engine's callback
            address and its key.

    Returns:
        What :func:`~actorflow.workers._task.execute` returns, or None if the engine refused
        the start (it drains or stops: the step did not run).
    """
    *body, level, callback, authkey = task
    host = TaskHost(_link(callback, authkey), body[0], body[1], body[4])
    host.step = body[2]
    if not host.request("start", (os.getpid(), _worker_address())):
        return None
    # This process is the engine's: its step records go back over the link.
    _step_logger.handlers[:] = [LinkLogHandler(host)]
    _step_logger.propagate = False
    _step_logger.setLevel(level)
    return execute(tuple(body), host)
