"""A cluster worker's side of the callback link (``runtime/dispatch/_link.py``).

One connection per worker process and engine, opened on the first task's first request and
kept for the process's life; requests on it are answered in order (a lock per link, since
a Dask worker may run several threads).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from actorflow.errors import ClientError
from actorflow.workers._context import HostLogHandler
from actorflow.workers._task import TaskHost, execute

__all__ = ["run_remote"]

_links: dict[tuple[Any, bytes], _Link] = {}
_links_lock = threading.Lock()
_step_logger = logging.getLogger("actorflow.step")


class _Link:
    """This process's connection to one engine."""

    def __init__(self, address: Any, key: bytes) -> None:
        from multiprocessing.connection import Client  # on a cluster worker only

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


def run_remote(task: tuple[Any, ...], worker: str) -> tuple[bool, Any, float, float] | None:
    """Run one step on a cluster worker (``worker``: its name, for the record).

    Args:
        task: the engine's task tuple (see :func:`~actorflow.workers._task.execute`), then
            the log level, the engine's callback address and its key.
        worker: where this runs (a Dask worker's address, a Ray node id).

    Returns:
        What :func:`~actorflow.workers._task.execute` returns, or None if the engine refused
        the start (it drains or stops: the step did not run).
    """
    *body, level, callback, authkey = task
    host = TaskHost(_link(callback, authkey), body[0], body[1], body[4])
    host.step = body[2]
    if not host.request("start", (os.getpid(), worker)):
        return None
    # This process is the engine's: its step records go back over the link.
    _step_logger.handlers[:] = [HostLogHandler(host)]
    _step_logger.propagate = False
    _step_logger.setLevel(level)
    return execute(tuple(body), host)
