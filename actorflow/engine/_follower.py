"""The follower's side of a shared data_dir: forward to the leader, read, and take over.

An engine that finds the store's lock taken (another process leads) becomes a follower:

- Calls that change something (triggers, cancels, signals, resumes...) and waits for
  results become requests to the leader over the local channel (:mod:`._channel`), each a
  :class:`~actorflow.runtime.kernel._promise.Promise` completed by the reply, so the engine's sync
  and async APIs work unchanged on top.
- Reads (``inspect``, ``runs``, a run's outcome once the leader says it finished) go to the
  store, opened read-only in this process: LMDB lets any number of processes read while one
  writes, and a reader sees every commit made before it began.
- A thread tries the store's lock whenever the channel breaks (and every
  :data:`_LOCK_POLL` seconds). Whoever gets it leads: the engine starts its actors on the
  store through the normal start-up and recovery path, and the requests this follower still
  holds are run locally; the other followers connect to the new leader and repeat theirs.

What is repeated after a leader is lost: triggers (with the run id chosen here, so the new
leader starts a run only if the old one did not record it), waits for results, cancels,
queries, signals (each sent with an idempotency key, so a signal is delivered once) and
reads. A resume, update, publish, restart or retry that was in flight fails with
:class:`~actorflow.LeaderLost`: it may or may not have taken effect.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actorflow.engine._channel import Connection
from actorflow.errors import EngineNotRunning, InvalidPayload, LeaderLost, StoreError
from actorflow.runtime.kernel._promise import Promise, chain
from actorflow.store._gate import ReadGate, open_engine_lock
from actorflow.store._protocol import Store

__all__ = ["Follower"]

log = logging.getLogger("actorflow.engine")

#: Seconds between tries of the store's lock while the leader seems alive.
_LOCK_POLL = 0.1
#: Seconds between tries to connect while there is no leader to connect to.
_CONNECT_POLL = 0.02
#: Operations repeated against the next leader when the current one is lost.
_REPEATABLE = frozenset({"submit", "submit_many", "watch", "cancel", "query", "signal", "call"})


@dataclass(slots=True)
class _Pending:
    op: str
    args: tuple[Any, ...]
    promise: Promise[Any]
    since: float
    sent: int | None = None  # the connection it was sent on (None: not sent yet)
    repeat: bool = field(default=False)


class Follower:
    """Forwards an engine's calls to the leader of its store, and takes over when it goes.

    Args:
        data_dir: the store's directory.
        socket: where the leader listens.
        open_store: opens the store read-only (sealed as the engine's config says).
        fingerprints: this engine's workflow definitions, for the leader to compare.
        on_event: called with each lifecycle event the leader forwards.
        promote: ``promote(lock_fd)``, called on the lock thread once this process holds the
            store's lock; None (``role="follower"``): never take over.
        leader_wait: seconds a request waits for a leader to answer before it fails.
    """

    def __init__(
        self,
        data_dir: Path,
        socket: Path,
        open_store: Callable[[], Store],
        fingerprints: dict[str, str],
        on_event: Callable[[Any], Any],
        promote: Callable[[int], None] | None,
        leader_wait: float = 30.0,
    ) -> None:
        self._data_dir = data_dir
        self._socket = socket
        self._open_store = open_store
        self._fingerprints = fingerprints
        self._on_event = on_event
        self._promote = promote
        self._leader_wait = leader_wait
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._conn: Connection | None = None
        self._generation = 0
        self._events = False
        self._stopped = threading.Event()
        self._lost = threading.Event()  # the channel broke: try the lock now
        self._store: Store | None = None
        # Reads share the store; a take-over swaps it under the gate, alone.
        self._gate = ReadGate()
        self._open_lock = threading.Lock()
        #: The leader's pid, and the workflows whose definitions differ from the leader's.
        self.leader_pid: int | None = None
        self.mismatch: dict[str, str] = {}
        self.connected_at: float | None = None
        self._down_since = time.monotonic()
        self._leading = False  # this engine is taking over: no more connections
        self._handle: Callable[[str, tuple[Any, ...]], Promise[Any]] | None = None
        self._threads = [
            threading.Thread(target=self._run, name="actorflow-follower", daemon=True),
        ]
        if promote is not None:
            self._threads.append(
                threading.Thread(
                    target=self._lock_loop, name="actorflow-follower-lock", daemon=True
                )
            )

    def start(self) -> None:
        """Connect (in the background) and watch the lock."""
        for thread in self._threads:
            thread.start()

    @property
    def connected(self) -> bool:
        """Connected to a leader now."""
        return self._conn is not None

    def health(self) -> dict[str, Any]:
        """What ``engine.health()`` answers for a follower: ready while connected to a leader."""
        connected = self.connected
        since = self.connected_at
        leader: dict[str, Any] = {
            "ok": connected,
            "pid": self.leader_pid if connected else None,
            "detail": "connected" if connected else "no leader answers yet (one takes over soon)",
        }
        if since is not None:
            leader["connected_for_seconds"] = round(time.monotonic() - since, 3)
        return {
            "alive": True,
            "ready": connected,
            "role": "follower",
            "checks": {
                "leader": leader,
                "definitions": {
                    "ok": True,  # a rolling deploy differs for a while: said, not failed
                    "same_as_leader": not self.mismatch,
                    "differ": dict(self.mismatch),
                },
            },
        }

    # -- requests --------------------------------------------------------------------------

    def request(self, op: str, *args: Any) -> Promise[Any]:
        """Send ``op(*args)`` to the leader; the promise completes with its answer."""
        handle = self._handle
        if handle is not None:  # this engine leads now (a caller that raced the take-over)
            return handle(op, args)
        fut: Promise[Any] = Promise()
        if self._stopped.is_set():
            fut.set_exception(EngineNotRunning("the engine is stopped"))
            return fut
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            pending = _Pending(op, args, fut, time.monotonic(), repeat=op in _REPEATABLE)
            self._pending[rid] = pending
            conn = self._conn
            if conn is not None:
                try:
                    self._send(conn, rid, pending)
                except Exception as exc:
                    del self._pending[rid]
                    fut.set_exception(
                        InvalidPayload(f"{op}: its arguments cannot be sent to the leader: {exc}")
                    )
        return fut

    def want_events(self) -> None:
        """Ask the leader for lifecycle events (now, and from every leader after it)."""
        with self._lock:
            if self._events:
                return
            self._events = True
            conn = self._conn
        if conn is not None:
            conn.post((0, "subscribe", ()))

    def _send(self, conn: Connection, rid: int, pending: _Pending) -> None:
        conn.post((rid, pending.op, _args(pending)))
        pending.sent = self._generation

    # -- reads -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[Store | None]:
        """The read-only store (opened at first use); None once this engine took over."""
        with self._gate.read():
            if self._stopped.is_set() or self._leading:
                yield None
                return
            store = self._store
            if store is None:
                with self._open_lock:
                    if self._store is None:
                        self._store = self._open_reader()
                    store = self._store
            yield store

    def _open_reader(self) -> Store:
        # The leader creates the store when it starts: a follower that started with it may
        # get here first.
        deadline = time.monotonic() + self._leader_wait
        while True:
            try:
                return self._open_store()
            except StoreError:
                if time.monotonic() > deadline or not (self._data_dir / "engine.lock").exists():
                    raise
                time.sleep(0.05)

    # -- stopping and taking over ------------------------------------------------------------

    def stop(self, error: BaseException | None = None) -> None:
        """Stop following; requests still pending fail with ``error`` (EngineNotRunning)."""
        for p in self._detach():
            p.promise.set_exception(error or EngineNotRunning("the engine stopped"))
        for thread in self._threads:
            if thread is not threading.current_thread() and thread.ident is not None:
                thread.join(5)

    def _detach(
        self, handle: Callable[[str, tuple[Any, ...]], Promise[Any]] | None = None
    ) -> list[_Pending]:
        """Stop connecting and reading; return the requests still pending here."""
        self._stopped.set()
        self._lost.set()
        with self._lock:
            self._handle = handle
            conn, self._conn = self._conn, None
            pending, self._pending = list(self._pending.values()), {}
        if conn is not None:
            conn.close()
        self._close_store()
        return pending

    def _close_store(self) -> None:
        with self._gate.exclusive():
            store, self._store = self._store, None
            if store is not None:
                store.close()  # LMDB: one environment per file per process

    @contextlib.contextmanager
    def taking_over(self) -> Iterator[None]:
        """While this engine starts leading: no connection, no reads (they wait), no store.

        Requests made meanwhile stay pending (:meth:`hand_over` runs them); reads wait
        for the store this engine is opening, then use it.
        """
        with self._gate.exclusive():
            self._leading = True
            with self._lock:
                conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            store, self._store = self._store, None
            if store is not None:
                store.close()  # LMDB: one environment per file per process
            yield

    def hand_over(self, handle: Callable[[str, tuple[Any, ...]], Promise[Any]]) -> None:
        """This engine leads now: run the requests still pending here, locally.

        Called by the engine once its actors run on the store. A request that went to the
        old leader and cannot be repeated fails with :class:`~actorflow.LeaderLost`.
        """
        for p in self._detach(handle):
            if p.sent is not None and not p.repeat:
                p.promise.set_exception(_lost(p.op))
                continue
            chain(handle(p.op, _args(p)), p.promise)

    def _lock_loop(self) -> None:
        assert self._promote is not None
        fd: int | None = None
        try:
            fd = open_engine_lock(self._data_dir)
            while not self._stopped.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    self._lost.wait(_LOCK_POLL)
                    self._lost.clear()
                    continue
                lock_fd, fd = fd, None
                self._promote(lock_fd)  # owns the descriptor from here
                return
        except Exception:
            log.exception("the follower of %s cannot take over as leader", self._data_dir)
        finally:
            if fd is not None:
                os.close(fd)

    # -- the connection ----------------------------------------------------------------------

    def _run(self) -> None:
        delay = _CONNECT_POLL
        while not self._stopped.is_set() and not self._leading:
            conn = self._connect()
            if conn is None:
                self._expire()
                self._stopped.wait(delay)
                delay = min(delay * 2, 0.2)
                continue
            delay = _CONNECT_POLL
            self._serve(conn)

    def _connect(self) -> Connection | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self._socket))
        except OSError:
            sock.close()
            return None
        conn = Connection(sock, "actorflow-follower-send")
        try:
            conn.post((0, "hello", (os.getpid(), self._fingerprints)))
            rid, ok, answer = conn.recv()
            if not ok:
                raise EOFError(f"the leader refused: {answer}")
        except (EOFError, OSError) as exc:
            log.debug("connecting to the leader at %s failed: %s", self._socket, exc)
            conn.close()
            return None
        self._greeted(answer)
        with self._lock:
            if self._stopped.is_set() or self._leading:
                conn.close()
                return None
            self._generation += 1
            self._conn = conn
            self.connected_at = time.monotonic()
            for rid, p in list(self._pending.items()):
                if p.sent is not None and not p.repeat:
                    del self._pending[rid]
                    p.promise.set_exception(_lost(p.op))
                    continue
                self._send(conn, rid, p)
            if self._events:
                conn.post((0, "subscribe", ()))
        return conn

    def _greeted(self, answer: dict[str, Any]) -> None:
        pid = answer.get("pid")
        theirs: dict[str, str] = answer.get("fingerprints", {})
        mismatch: dict[str, str] = {}
        for wid, mine in self._fingerprints.items():
            other = theirs.get(wid)
            if other is None:
                mismatch[wid] = "not defined on the leader"
            elif other != mine:
                mismatch[wid] = "defined differently on the leader"
        if mismatch and (mismatch != self.mismatch or pid != self.leader_pid):
            log.warning(
                "this engine follows the leader of %s (pid %s), whose definitions differ: %s. "
                "Runs are started and run by the leader, with its definitions (a rolling "
                "deploy: they agree once every process runs the same code)",
                self._data_dir,
                pid,
                "; ".join(f"workflow {w!r}: {why}" for w, why in sorted(mismatch.items())),
            )
        self.mismatch = mismatch
        self.leader_pid = pid if isinstance(pid, int) else None
        log.info("following the leader of %s (pid %s)", self._data_dir, pid)

    def _serve(self, conn: Connection) -> None:
        try:
            while True:
                rid, ok, value = conn.recv()
                if rid == 0:
                    if ok == "event":
                        self._on_event(value)
                    continue
                with self._lock:
                    pending = self._pending.get(rid)
                    if pending is None:
                        continue
                    if ok is None:  # the leader is stopping: keep it for the next one
                        pending.sent = None
                        continue
                    del self._pending[rid]
                if ok:
                    pending.promise.set_result(value)
                else:
                    pending.promise.set_exception(value)
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("the channel to the leader failed")
        finally:
            with self._lock:
                if self._conn is conn:
                    self._conn = None
                    self.connected_at = None
                    self._down_since = time.monotonic()
            conn.close()
            self._lost.set()

    def _expire(self) -> None:
        """Fail requests that waited longer than ``leader_wait`` for any leader to answer."""
        now = time.monotonic()
        with self._lock:
            down = self._down_since
            late = [
                r for r, p in self._pending.items() if now - max(p.since, down) > self._leader_wait
            ]
            expired = [self._pending.pop(r) for r in late]
        for p in expired:
            p.promise.set_exception(
                EngineNotRunning(
                    f"no leader of {self._data_dir} answered within {self._leader_wait:g}s "
                    "(a follower forwards to the engine that holds the store's lock; is one "
                    "running?)"
                )
            )


def _args(pending: _Pending) -> tuple[Any, ...]:
    """A request's arguments as sent (again): a trigger sent before says so (``resent``)."""
    if pending.op in ("submit", "submit_many") and pending.sent is not None:
        # (workflow, args or payloads, keys, run ids, resent, ...): the leader checks first
        args = list(pending.args)
        args[4] = True
        return tuple(args)
    return pending.args


def _lost(op: str) -> LeaderLost:
    return LeaderLost(
        f"{op}: the leader went away while it was in flight, and it is not repeated "
        "automatically (it may or may not have taken effect): check, then repeat it"
    )
