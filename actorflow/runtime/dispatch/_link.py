"""The callback link: how steps running on a cluster (Dask, Ray) reach the engine.

A step on a cluster worker asks the engine things while it runs (``ctx.steps[...]``, a
large payload by reference, ``ctx.state``, services, breakers, heartbeats, log records,
"may I start"), and each needs the engine's answer before the step goes on. The engine
opens one listener (``multiprocessing.connection``: pickled tuples over TCP, an HMAC
handshake on a random 32-byte key made per engine start); each worker process opens one
connection to it, on its first request, and keeps it (``workers/_link.py``). Cluster
workers never open the store.

Why a connection back rather than the cluster's own channels: a request is answered in
about a loopback round trip here, while Dask's queues, variables and events (and Ray's
actors) route every message through a scheduler or an actor process, adding hops and load
to the component the whole cluster depends on, and both are one-way or eventually
consistent where a step needs an answer now (the start gate must refuse a start the very
moment a drain begins). The cost is that workers must be able to reach the engine's address
(``callback_host``); ``docs/scale-out.md`` says so.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["CallbackListener", "route_host"]

log = logging.getLogger("actorflow.dispatcher")


class CallbackListener:
    """Answers the requests of remote steps, one thread per connected worker process.

    Args:
        host: the address to listen on (the one workers can reach).
        answer: ``answer(msg) -> value``; an exception is sent back as the request's failure.
        name: for thread names and log lines (``"dask"``, ``"ray"``).
    """

    def __init__(self, host: str, answer: Callable[[tuple[Any, ...]], Any], name: str) -> None:
        # Imported here: multiprocessing is for a running engine (``import actorflow`` is lean).
        from multiprocessing.connection import Listener

        self.authkey = secrets.token_bytes(32)
        self._answer = answer
        self._name = name
        self._listener = Listener((host, 0), authkey=self.authkey)
        self.address: Any = self._listener.address
        threading.Thread(target=self._accept, name=f"actorflow-{name}-link", daemon=True).start()

    def close(self) -> None:
        """Stop accepting (connections in use end with their worker processes)."""
        try:
            self._listener.close()
        except OSError:
            pass

    def _accept(self) -> None:
        listener = self._listener
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError):
                return  # closed at stop
            except Exception:  # a peer that failed the handshake
                log.warning("refused a %s worker connection (bad key)", self._name)
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name=f"actorflow-{self._name}-req", daemon=True
            ).start()

    def _serve(self, conn: Connection) -> None:
        from actorflow.errors import ClientError

        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            try:
                reply: tuple[bool, Any] = (True, self._answer(msg))
            except Exception as exc:
                kind = "client" if isinstance(exc, ClientError) else "engine"
                reply = (False, (kind, str(exc)))
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return


def route_host(address: str | None) -> str:
    """The local address that routes to ``address`` (a scheduler's or a head node's URL).

    Loopback for a local cluster; otherwise the address of the interface the OS would use
    to reach it.
    """
    if not address:
        return "127.0.0.1"
    host = urlparse(address if "://" in address else f"tcp://{address}").hostname or "127.0.0.1"
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "0.0.0.0"
