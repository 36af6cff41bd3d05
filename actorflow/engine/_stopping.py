"""Stopping the engine: drain or not, stop the actors in order, release the store."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from actorflow.engine._sharing import claims
from actorflow.errors import (
    EngineNotRunning,
)

if TYPE_CHECKING:
    pass

from actorflow.engine._base import (
    log,
)
from actorflow.engine._starting import Starting

__all__ = ["Stopping"]


class Stopping(Starting):
    """Shutdown (see the engine package)."""

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the engine. Unfinished runs stay in the store and resume at the next start.

        A step that was running when the engine stopped has an ``interrupted`` attempt and
        runs again as a new attempt at the next start. A step that was dispatched but had
        not started (it waited for a worker, or in a worker's queue) is no attempt: it runs
        at the next start under the same attempt number, and does not count towards
        ``max_interruptions``.

        Args:
            drain: first let the steps in flight finish and record their results (no new
                step starts); False kills them at once (they are retried on recovery).
            timeout: seconds to wait for the drain before stopping anyway.
        """
        self._stopping = True  # refuse new work at once, before waiting for the lock
        with self._lock:
            follower, self._follower = self._follower, None
        if follower is not None:
            # (outside the lock: the follower's lock thread may be waiting for it to lead)
            follower.stop()
            claims.release(self._facade)
            self._hold_collector(False)
            self._stopping = False
            log.info("engine stopped (it was a follower)")
            return
        with self._lock:
            core = self._core
            if core is None:
                self._stopping = False
                return
            if self._server is not None:
                # Followers first: what they sent and got no answer for, they send again
                # to the next leader; nothing more is taken here.
                self._server.stop()
                self._server = None
            if self._background is not None:
                self._background.stop()
                self._background = None
            self._stop_actors(drain, timeout)
            if core.blobs is not None:
                core.blobs.stop()
            core.callbacks.shutdown(wait=False, cancel_futures=True)
            self._lifecycle.close()  # what was recorded is delivered before stop() returns
            self._core = None
            core.waiters.fail_all(
                EngineNotRunning(
                    "the engine stopped before the run finished; it resumes when an engine "
                    "starts on the same store"
                )
            )
            store, self._store = self._store, None
            if store is not None:
                self._release_store(store)
            claims.release(self._facade)
            self._hold_collector(False)
            self._stopping = False
            log.info("engine stopped")

    def install_signal_handlers(
        self,
        drain_timeout: float = 30.0,
        signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
        *,
        exit: bool = True,
    ) -> None:
        """Stop gracefully on SIGTERM and SIGINT (a deploy, Ctrl-C).

        On the first signal the engine takes no new work (triggers, events, resumes raise
        :class:`~actorflow.EngineNotRunning`; webhooks answer 503), lets the steps in flight
        finish and records their results for up to ``drain_timeout`` seconds, commits and
        syncs the store, and stops; steps still running then are killed and, like every
        unfinished run, resume at the next start. Then the process exits with status 0
        (``SystemExit``), unless ``exit`` is False. A second signal while draining exits at
        once (``os._exit(1)``): every commit is atomic, so the store stays consistent and the
        unfinished steps run again at the next start. Call it from the main thread (Python
        runs signal handlers there).

        Args:
            drain_timeout: seconds to let steps in flight finish.
            signals: the signals to handle.
            exit: raise ``SystemExit(0)`` once stopped.
        """
        draining = threading.Event()

        def handle(signum: int, frame: Any) -> None:
            if draining.is_set():
                log.warning("signal %d again while draining: exiting at once", signum)
                os._exit(1)
            draining.set()
            log.info("signal %d: draining steps in flight (up to %gs)", signum, drain_timeout)
            self.stop(drain=True, timeout=drain_timeout)
            if exit:
                raise SystemExit(0)

        for signum in signals:
            signal.signal(signum, handle)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(drain=True)
