"""Running steps on a Dask cluster: the executor users configure, and the task that runs there.

``Engine(executor=af.DaskExecutor(...))`` sends every step to a ``dask.distributed`` cluster
instead of the local worker processes; the engine keeps the store, the supervisors and every
durability rule (see ``runtime/_dask_dispatcher.py`` and ``docs/scale-out.md``).

A task runs :func:`run_task` on a Dask worker. What a step asks of the engine while it runs
(``ctx.steps[...]``, a large payload, ``ctx.state``, services, heartbeats, log records, "I
have started") goes back over one authenticated connection per worker process to a listener
the engine opens (``multiprocessing.connection``, pickled tuples, an HMAC handshake on a
random key). Dask workers never open the store.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client
from typing import Any

from actorflow.errors import ClientError
from actorflow.store._codec import encode_value

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

    def connect(self) -> tuple[Any, bool]:
        """A client of the cluster, and whether the engine owns it (closes it at stop)."""
        try:
            from distributed import Client as DaskClient
        except ImportError:  # pragma: no cover - depends on the environment
            raise ClientError(
                "DaskExecutor needs dask.distributed: pip install 'actorflow[dask]'"
            ) from None
        if self.client is not None:
            return self.client, False
        target = self.cluster if self.cluster is not None else self.address
        return DaskClient(target, set_as_default=False), True  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        where = self.address or (self.cluster and type(self.cluster).__name__) or "client"
        return f"DaskExecutor({where})"


# -- the worker side ---------------------------------------------------------------------------

_functions: dict[str, Callable[..., Any]] = {}
_links: dict[tuple[Any, bytes], _Link] = {}
_links_lock = threading.Lock()
_step_logger = logging.getLogger("actorflow.step")


class _Link:
    """This process's connection to one engine (requests are answered in order)."""

    def __init__(self, address: Any, key: bytes) -> None:
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


class _Host:
    """What a step's context asks the engine, over the link (a worker's ``Host``)."""

    def __init__(self, link: _Link, task_key: str, run_id: str, workflow_id: str) -> None:
        self.link = link
        self.task_key = task_key
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.step = ""

    def request(self, op: str, arg: Any) -> Any:
        return self.link.call((op, self.task_key, self.run_id, self.workflow_id, self.step, arg))

    def heartbeat(self, details: Any) -> None:
        data = None if details is None else encode_value(details, "heartbeat details")
        self.request("beat", data)

    def fetch_output(self, name: str) -> bytes | None:
        value: bytes | None = self.request("output", name)
        return value


class _LinkLogHandler(logging.Handler):
    def __init__(self, host: _Host) -> None:
        super().__init__()
        self.host = host

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.host.request("log", (record.levelno, record.getMessage()))
        except Exception:
            self.handleError(record)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:
        return ""


def run_task(task: tuple[Any, ...]) -> tuple[bool, Any, float, float]:
    """Run one step on a Dask worker (the task is the tuple the engine's Dask dispatcher builds).

    Returns:
        ``(ok, encoded output or error tuple, started, ended)``; for a chunk of tiny item
        steps, ``(True, [(ok, data, started, ended), ...], started, ended)``.
    """
    from actorflow.workers._context import CURRENT, RunInfo, StepContext
    from actorflow.workers._main import error_tuple, load_function

    (task_key, run_id, step, attempt, workflow_id, key, ref, blob, payload, last, level,
     item, index, call, error, details, callback, authkey) = task  # fmt: skip
    link = _link(callback, authkey)
    host = _Host(link, task_key, run_id, workflow_id)
    host.step = step
    host.request("start", (os.getpid(), _worker_address()))
    handler = _LinkLogHandler(host)
    _step_logger.handlers[:] = [handler]
    _step_logger.propagate = False
    _step_logger.setLevel(level)
    started = time.time()

    def one(
        step_name: str, last_v: Any, item_v: Any, index_v: Any, err: Any, det: Any, how: int
    ) -> tuple[bool, Any, float, float]:
        host.step = step_name
        t = time.time()
        ctx = StepContext(
            RunInfo(run_id, workflow_id, step_name, attempt),
            payload,
            last_v,
            host.fetch_output,
            item_v,
            index_v,
            err,
            host=host,
            details=det,
        )
        token = CURRENT.set(ctx)
        try:
            result = fn(*ctx.item) if how == 4 else fn(ctx.item, ctx) if how & 1 else fn(ctx)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
            data = encode_value(result, f"output of step {step_name!r}")
            return True, data, t, time.time()
        except BaseException as exc:
            return False, error_tuple(exc), t, time.time()
        finally:
            CURRENT.reset(token)

    try:
        fn = load_function(_functions, key, ref, blob)
    except BaseException as exc:
        return False, error_tuple(exc), started, time.time()
    if call in (2, 3):  # a chunk of tiny item steps
        outcomes = [one(s, lv, iv, ix, None, None, call & 1) for s, lv, iv, ix in item]
        return True, outcomes, started, time.time()
    return one(step, last, item, index, error, details, call)
