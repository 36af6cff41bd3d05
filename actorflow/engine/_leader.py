"""The leader's side of a shared data_dir: the operations followers may ask for, and the server.

Data flow: a follower's request arrives on a connection (see :mod:`._channel`), is decoded on
that connection's thread, and handed to :class:`LocalOps`, which calls the engine's own
promise-returning internals (the same ones its local callers use: nothing here bypasses a
check or a durability rule). The promise's completion posts the reply; for a trigger that is
when the run is durably recorded, for a wait when the run has finished. Operations that block
(a retry, statistics, prune...) run on a small thread pool instead, never on an actor thread.

A follower that loses its leader repeats what is safe to repeat against the next one; a
trigger is repeated with the run id the follower chose, and :meth:`LocalOps.op_submit` starts
it only if the store does not hold it already, so no run is recorded twice.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actorflow.engine._base import _SAME
from actorflow.engine._channel import Connection, listen, peer_is_owner
from actorflow.errors import ClientError, RunNotFound
from actorflow.runtime.kernel._promise import Promise, failed, resolved
from actorflow.views import read_run

if TYPE_CHECKING:
    from actorflow.engine._engine import Engine

__all__ = ["REPEAT", "LeaderServer", "LocalOps"]

log = logging.getLogger("actorflow.engine")

#: The reply's ``ok`` when the leader did not take a request (it is stopping): the follower
#: keeps it and sends it to the next leader.
REPEAT = None

#: Engine methods a follower may call by name (each blocks, so each runs on the pool).
#: ``_triggered_schedule`` is ``trigger_schedule`` with the follower's instant, answering
#: the run's id (a handle cannot cross the channel).
_CALLS = frozenset(
    {
        "statistics",
        "schedules",
        "prune",
        "metrics",
        "pause_schedule",
        "resume_schedule",
        "_triggered_schedule",
    }
)


class LocalOps:
    """What a follower may ask of this (leading) engine, each answered by a promise.

    Args:
        engine: the leading engine.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def handle(self, op: str, args: tuple[Any, ...]) -> Promise[Any]:
        """Start ``op``; its promise completes with the answer (or the error) to send back."""
        fn = getattr(self, "op_" + op, None) if isinstance(op, str) else None
        if fn is None:
            return failed(ClientError(f"the leader has no operation {op!r}"))
        try:
            result: Promise[Any] = fn(*args)
        except Exception as exc:
            return failed(exc)
        return result

    def close(self) -> None:
        """Stop the pool (calls still running finish on their own)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- operations ------------------------------------------------------------------------

    def op_hello(self, pid: int, fingerprints: dict[str, str]) -> Promise[Any]:
        return resolved({"pid": os.getpid(), "fingerprints": self._engine._fingerprints()})

    def op_submit(
        self,
        workflow: str,
        args: tuple[Any, ...],
        key: str | None,
        run_id: str,
        resent: bool,
        priority: int = 0,
        attrs: dict[str, Any] | None = None,
        memo: dict[str, Any] | None = None,
    ) -> Promise[str]:
        if resent and key is None and self._exists(run_id):
            return resolved(run_id)  # the last leader recorded it before it went
        return self._engine._submit(workflow, tuple(args), key, run_id, priority, attrs, memo)

    def op_submit_many(
        self,
        workflow: str,
        payloads: list[Any],
        keys: list[str | None],
        run_ids: list[str],
        resent: bool,
        priority: int = 0,
        attrs: list[Any] | None = None,
        memos: list[Any] | None = None,
    ) -> Promise[list[str]]:
        if resent:
            todo = [i for i, (k, r) in enumerate(zip(keys, run_ids, strict=True))
                    if k is not None or not self._exists(r)]  # fmt: skip
            if len(todo) < len(run_ids):
                out: Promise[list[str]] = Promise()
                part = self._engine._submit_many(
                    workflow, [payloads[i] for i in todo], [keys[i] for i in todo],
                    [run_ids[i] for i in todo], priority,
                    [attrs[i] for i in todo] if attrs is not None else None,
                    [memos[i] for i in todo] if memos is not None else None,
                )  # fmt: skip

                def merge(fut: Promise[list[str]]) -> None:
                    exc = fut.exception()
                    if exc is not None:
                        out.set_exception(exc)
                        return
                    ids = list(run_ids)
                    for i, rid in zip(todo, fut.result(), strict=True):
                        ids[i] = rid
                    out.set_result(ids)

                part.add_done_callback(merge)
                return out
        return self._engine._submit_many(workflow, payloads, keys, run_ids, priority, attrs, memos)

    def op_watch(self, run_id: str) -> Promise[None]:
        fut = self._engine._watch(run_id)
        # Registered first, then checked: a run that finished just before is not missed.
        if self._engine._finished(run_id):
            self._engine._unwatch(run_id)  # completes ``fut``: nothing else would
        return fut

    def op_cancel(self, run_id: str, reason: str, terminate: bool = False) -> Promise[bool]:
        return self._engine._cancel(run_id, reason, terminate)

    def op_signal(
        self, run_id: str, name: str, payload: Any, key: str | None, args: Any = None
    ) -> Promise[bool]:
        return self._engine._signal(run_id, name, payload, key, args)

    def op_query(self, run_id: str, name: str, args: tuple[Any, ...]) -> Promise[Any]:
        return self._engine._query(run_id, name, tuple(args))

    def op_update(self, run_id: str, name: str, payload: Any) -> Promise[Any]:
        return self._engine._update(run_id, name, payload)

    def op_restart(self, run_id: str) -> Promise[bool]:
        return self._engine._restart(run_id)

    def op_publish(self, event: str, payload: Any, key: str | None, ttl: Any) -> Promise[int]:
        return self._engine._publish(event, payload, key, ttl)

    def op_resume(self, token: str, payload: Any) -> Promise[None]:
        return self._engine._resume(token, payload)

    def op_retry(
        self,
        run_id: str,
        new_payload: bool = False,
        payload: Any = None,
        mock_steps: dict[str, Any] | None = None,
    ) -> Promise[str]:
        return self._engine._retry(run_id, payload if new_payload else _SAME, mock_steps)

    def op_state(self, op: str, scope: str, args: tuple[Any, ...]) -> Promise[Any]:
        return self._pooled(self._engine._state_backend, op, scope, tuple(args))

    def op_call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Promise[Any]:
        if method not in _CALLS:
            raise ClientError(f"the leader does not offer {method!r} to followers")
        return self._pooled(getattr(self._engine, method), *args, **kwargs)

    def _pooled(self, fn: Any, *args: Any, **kwargs: Any) -> Promise[Any]:
        fut: Promise[Any] = Promise()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except Exception as exc:
                fut.set_exception(exc)

        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(4, thread_name_prefix="actorflow-leader-call")
            self._pool.submit(run)
        return fut

    def _exists(self, run_id: str) -> bool:
        try:
            self._engine._read(read_run, run_id)
        except RunNotFound:
            return False
        return True


class LeaderServer:
    """Listens for followers on the store's socket and answers their requests.

    Args:
        engine: the leading engine.
        path: the socket's path (:func:`~actorflow.engine._channel.socket_path`).
    """

    def __init__(self, engine: Engine, path: Path) -> None:
        self._engine = engine
        self.path = path
        self.ops = LocalOps(engine)
        self._sock: socket.socket | None = None
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._subscriptions: dict[Connection, Any] = {}

    @property
    def followers(self) -> int:
        """Followers connected now."""
        return len(self._conns)

    def start(self) -> None:
        """Listen; a thread accepts followers from now on."""
        self._sock = listen(self.path)
        threading.Thread(target=self._accept, name="actorflow-leader", daemon=True).start()

    def stop(self) -> None:
        """Stop listening and drop every follower (each repeats its requests elsewhere).

        Called first when the leader stops, before its actors drain: a reply that was not
        sent is a request the follower still holds, and no reply is sent for work the
        stopping engine would refuse.
        """
        with self._lock:
            self._stopping = True
            conns, self._conns = list(self._conns), set()
            subs, self._subscriptions = list(self._subscriptions.values()), {}
        for unsubscribe in subs:
            unsubscribe()
        sock = self._sock
        if sock is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            sock.close()
        for conn in conns:
            conn.close()
        self.ops.close()

    def _accept(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:  # until stop() closes the socket
            try:
                peer, _ = sock.accept()
            except OSError:
                return  # closed by stop()
            if not peer_is_owner(peer):
                log.warning("refused a connection to %s from another user", self.path)
                peer.close()
                continue
            conn = Connection(peer, "actorflow-leader-send")
            with self._lock:
                stopping = self._stopping
                if not stopping:
                    self._conns.add(conn)
            if stopping:
                conn.close()
                return
            threading.Thread(
                target=self._serve, args=(conn,), name="actorflow-leader-conn", daemon=True
            ).start()

    def _serve(self, conn: Connection) -> None:
        try:
            while True:
                rid, op, args = conn.recv()
                if op == "subscribe":
                    self._subscribe(conn)
                    continue
                if self._stopping or self._engine._stopping:
                    conn.post((rid, REPEAT, None))
                    continue
                self.ops.handle(op, args).add_done_callback(
                    functools.partial(self._reply, conn, rid)
                )
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("a follower's connection failed")
        finally:
            with self._lock:
                self._conns.discard(conn)
                unsubscribe = self._subscriptions.pop(conn, None)
            if unsubscribe is not None:
                unsubscribe()
            conn.close()

    def _reply(self, conn: Connection, rid: int, fut: Promise[Any]) -> None:
        if conn.closed:
            return
        exc = fut.exception()
        try:
            conn.post((rid, False, exc) if exc is not None else (rid, True, fut.result()))
        except Exception as error:  # a result that cannot be pickled
            conn.post((rid, False, ClientError(f"the answer cannot be sent: {error}")))

    def _subscribe(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._subscriptions:
                return

        def forward(event: Any) -> None:
            if not conn.closed:
                conn.post((0, "event", event))

        unsubscribe = self._engine.subscribe(forward)
        with self._lock:
            self._subscriptions[conn] = unsubscribe
