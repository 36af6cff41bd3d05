"""Sharing a data_dir between engines in several processes: lead, follow, or take over.

Data flow at ``Engine.start``: :func:`open_or_follow` claims the data dir for this process
(:data:`claims`), then tries the store's lock. Holding it, the engine leads (its normal
start-up) and :func:`serve_followers` listens on the store's socket (:mod:`._leader`).
Refused it, the engine follows (:mod:`._follower`): calls are forwarded, reads go to the
store opened read-only, and the follower's lock thread calls :func:`_promote` once the lock
is free, which starts the engine's actors on the store and runs the requests still pending
locally. See ``docs/embedding.md``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

from actorflow.errors import EngineNotRunning, StoreInUse
from actorflow.runtime._core import CodeCompiled, Compiled
from actorflow.store._lmdb import LmdbStore
from actorflow.store._protocol import Store
from actorflow.store._sealing import sealed

if TYPE_CHECKING:
    from actorflow.engine._engine import Engine

__all__ = ["claims", "fingerprints", "open_or_follow", "serve_followers"]

log = logging.getLogger("actorflow.engine")


def open_or_follow(engine: Engine, compiled: dict[str, Compiled | CodeCompiled]) -> Store | None:
    """The store, opened for writing; or None: this engine follows the one that holds it."""
    cfg = engine.config
    if engine._custom_store is not None or cfg.store == "memory":
        return engine._open_store()
    claims.claim(engine)
    try:
        if cfg.role != "follower":
            try:
                return engine._open_store()
            except StoreInUse:
                if cfg.role == "leader":
                    raise
        _follow(engine, compiled)
        return None
    except BaseException:
        claims.release(engine)
        raise


def _follow(engine: Engine, compiled: dict[str, Compiled | CodeCompiled]) -> None:
    from actorflow.engine._channel import socket_path
    from actorflow.engine._follower import Follower

    cfg = engine.config
    follower = Follower(
        cfg.data_dir,
        socket_path(cfg.data_dir),
        lambda: sealed(LmdbStore(cfg.data_dir, read_only=True), cfg.codecs, cfg.codec_keys),
        fingerprints(compiled),
        engine._lifecycle.emit,
        functools.partial(_promote, engine) if cfg.role == "auto" else None,
        cfg.leader_wait,
    )
    engine._followed = compiled
    engine._follower = follower
    follower.start()
    if engine._lifecycle.active:
        follower.want_events()
    log.info("engine started as a follower: store %s", engine._store_label())


def _promote(engine: Engine, lock_fd: int) -> None:
    """Called on the follower's lock thread once it holds the store's lock: lead."""
    with engine._lock:
        follower = engine._follower
        if follower is None or engine._stopping:
            os.close(lock_fd)
            return
        cfg = engine.config
        with follower.taking_over():
            try:
                engine._lead(engine._followed, engine._open_store(lock_fd))
            except BaseException as exc:
                log.exception("this follower could not take over as the leader")
                engine._follower = None
                claims.release(engine)
                follower.stop(EngineNotRunning(f"taking over as the leader failed: {exc}"))
                return
            engine._follower = None
    log.warning(
        "the leader of %s went away: this engine (pid %d) leads now",
        cfg.data_dir,
        os.getpid(),
    )
    assert engine._server is not None
    follower.hand_over(engine._server.ops.handle)


def serve_followers(engine: Engine) -> None:
    """Listen for followers on the store's socket (a store in a data_dir only)."""
    if engine._custom_store is not None or engine.config.store == "memory":
        return
    from actorflow.engine._channel import socket_path
    from actorflow.engine._leader import LeaderServer

    server = LeaderServer(engine, socket_path(engine.config.data_dir))
    server.start()
    engine._server = server


def fingerprints(compiled: dict[str, Compiled | CodeCompiled]) -> dict[str, str]:
    """Each workflow's definition fingerprint, for a leader and follower to compare."""
    return {wid: str(c.spec.fingerprint) for wid, c in compiled.items()}


class _Claims:
    """The data dirs engines of this process hold (as leader or follower).

    LMDB allows one environment per file per process, and the store's ``flock`` does not
    tell two engines of one process apart from one: a second engine here on the same
    ``data_dir`` is refused, rather than following its neighbour through the store.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, weakref.ref[Engine]] = {}

    def claim(self, engine: Engine) -> None:
        key = os.path.realpath(engine.config.data_dir)
        with self._lock:
            ref = self._held.get(key)
            other = ref() if ref is not None else None
            if other is not None and other is not engine and other.running:
                raise StoreInUse(
                    f"store at {engine.config.data_dir} is in use by another engine in this "
                    f"process (pid {os.getpid()}): use that engine, or stop it first"
                )
            self._held[key] = weakref.ref(engine)

    def release(self, engine: Engine) -> None:
        key = os.path.realpath(engine.config.data_dir)
        with self._lock:
            ref = self._held.get(key)
            if ref is not None and ref() is engine:
                del self._held[key]


claims = _Claims()
