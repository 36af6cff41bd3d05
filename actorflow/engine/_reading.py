"""Reading the engine: runs, statistics, lifecycle events, metrics, health, the ASGI app."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from actorflow._extras import require
from actorflow._types import RunStatus
from actorflow.errors import (
    ClientError,
    ConfigError,
    DefinitionError,
)
from actorflow.runtime.kernel._lifecycle import (
    LifecycleEvent,
    RunFinished,
    RunStarted,
    StepAttempted,
)
from actorflow.store import _keys as K
from actorflow.store._logs import read_logs
from actorflow.views import (
    RunDetails,
    RunSummary,
    inspect_run,
    list_runs,
)

if TYPE_CHECKING:
    pass

from actorflow.engine._base import (
    _breakers,
)
from actorflow.engine._events import Events

__all__ = ["Reading"]

#: Seconds ``health()`` waits for an actor's answer, and the timer lag it tolerates.
_HEALTH_WAIT = 2.0
_MAX_LAG = 5.0


class Reading(Events):
    """Inspection, health, metrics and serving (see the engine package)."""

    def inspect(self, run_id: str) -> RunDetails:
        """Everything recorded about a run: status, timings, steps, attempts, errors.

        Raises:
            RunNotFound: no such run.
        """
        return self._read(inspect_run, run_id)

    def logs(
        self, run_id: str, step: str | None = None, *, attempt: int | None = None
    ) -> dict[str, Any]:
        """What a run's steps logged through ``ctx.log``, kept with the run.

        Read from the store: also on a stopped engine, and on a follower. Records at the
        ``step_logs`` level (``"INFO"`` unless configured) and above are kept, at most 1,000
        per step attempt, each message cut to 8 KiB (docs/observability.md).

        Args:
            run_id: the run.
            step: only this step's records: its path, as ``inspect`` names it
                (``"lines[3]/price"`` inside a loop, ``"fetch#2"`` for a repeated name).
            attempt: only this attempt's records (from 1).

        Returns:
            ``{"records": [...], "dropped": [...]}``: each record ``{"time", "level",
            "step", "attempt", "message"}`` in the order they were logged (``time`` in
            seconds since the epoch, taken where the step ran); each dropped entry
            ``{"step", "attempt", "count"}``: how many records of that attempt came past
            the bound and were counted, not kept.

        Raises:
            RunNotFound: no such run.
            ClientError: ``step`` or ``attempt`` is not what is expected.
        """
        if step is not None:
            problem = K.part_problem(step, "step", K.MAX_PATH)
            if problem is not None:
                raise ClientError(problem)
        if attempt is not None and (
            not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt < 2**31
        ):
            raise ClientError(f"attempt: expected an integer >= 1 or None, got {attempt!r}")
        return self._read(read_logs, run_id, step, attempt)

    def runs(
        self,
        workflow: str | None = None,
        status: str | RunStatus | None = None,
        limit: int | None = 50,
        *,
        before: str | None = None,
        since: float | None = None,
        until: float | None = None,
        where: Mapping[str, Any] | None = None,
        id_prefix: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[RunSummary]:
        """Runs, newest first.

        Args:
            workflow: only this workflow's runs.
            status: only runs in this status (``"failed"``, ``RunStatus.RUNNING``...).
            limit: at most this many (None: all).
            before: a page's cursor: runs older than this run id (the previous page's last).
            since: only runs triggered at or after this time (seconds since the epoch).
            until: only runs triggered before this time.
            where: search attributes: ``{"customer": "c-42", "amount>": 100}``: each key an
                attribute's name, alone (equal) or followed by ``>``, ``>=``, ``<``, ``<=``
                or ``!=``; every condition must hold. Read from the attributes' index: an
                equality pages newest first without reading other runs; a range alone reads
                its attribute's matching entries, then the page's records.
            id_prefix: only runs whose id starts with this (the start of an id copied from
                a log line, say); read from the runs' own order, newest first.
            idempotency_key: only the runs triggered with this key (one per workflow at
                most; with ``workflow``, that workflow's), looked up, not scanned for.

        Raises:
            ClientError: a filter that cannot be read (named).
        """
        return self._read(
            list_runs,
            workflow,
            status,
            limit,
            before,
            since,
            until,
            where,
            id_prefix,
            idempotency_key,
        )

    def statistics(self) -> dict[str, Any]:
        """What the engine is doing (not for hot loops).

        Returns:
            ``queue_depth`` (tasks waiting for a worker), ``busy_workers``, ``workers``,
            ``restarts`` (worker deaths replaced), ``recycled`` (workers replaced at
            ``max_tasks_per_worker`` / ``max_memory_per_worker``), ``commit_batch``
            (mean and largest writes per commit), ``dispatch_latency_ms`` (p50 and p99, from
            a task reaching the dispatcher to its send to a worker), ``live_runs`` and
            ``sticky_runs`` (waiting code workflow runs kept in memory), ``shm`` (shared
            memory: ``segments``, ``bytes``, ``in_use`` (neither free nor a cached copy),
            ``lent`` / ``reused`` / ``refused`` segment requests, blobs written),
            ``breakers`` (each circuit breaker's state and counters, by name), ``retention``
            (finished runs ``pruned`` and ``passes`` made since start, the
            ``longest_write_ms`` of a batch of deletes), and the raw counters under ``pool``
            and ``store`` (``store["rejected"]``: writes the store refused for their
            content, each failing only its sender).
        """
        if self._follower is not None:
            return self._forward("statistics")  # type: ignore[no-any-return]
        core = self._require_core()
        out: dict[str, Any] = {}
        assert core.dispatcher is not None and core.writer is not None
        pool = core.dispatcher.proxy().statistics().get(timeout=10).__dict__
        store = core.writer.proxy().stats.get(timeout=10).as_dict()
        out["queue_depth"] = pool["queued"]
        out["busy_workers"] = pool["busy"]
        out["workers"] = pool["workers"]
        out["restarts"] = pool["restarts"]
        out["recycled"] = pool["recycled"]
        out["commit_batch"] = {"mean": store["mean_batch"], "largest": store["largest_batch"]}
        out["dispatch_latency_ms"] = {"p50": pool["latency_p50_ms"], "p99": pool["latency_p99_ms"]}
        out["pool"] = pool
        out["store"] = store
        out["live_runs"] = sum(s.proxy().live_runs.get(timeout=10) for s in core.shards)
        out["sticky_runs"] = sum(s.proxy().sticky_runs.get(timeout=10) for s in core.shards)
        # Runs a deploy left without their definition (see docs/operations.md).
        waiting = K.status_index_prefix(RunStatus.WAITING_FOR_DEFINITION)
        out["waiting_for_definition"] = len(core.store.scan(K.INDEX, waiting))
        out["shm"] = core.blobs.statistics() if core.blobs is not None else {}
        out["breakers"] = {b.name: b.snapshot() for b in _breakers(core)}
        assert core.scheduler is not None
        out["timers"] = core.scheduler.proxy().pending.get(timeout=10)
        out["scheduler_lag"] = core.scheduler.proxy().lag.get(timeout=10)
        background = self._background
        out["retention"] = background.pruner.statistics() if background is not None else {}
        return out

    def subscribe(
        self, fn: Callable[[LifecycleEvent], Any], *kinds: type[LifecycleEvent]
    ) -> Callable[[], None]:
        """Call ``fn(event)`` for each lifecycle event, once it is durable.

        Events are :class:`~actorflow.RunStarted`, :class:`~actorflow.StepAttempted` and
        :class:`~actorflow.RunFinished` (frozen dataclasses), delivered in the order they
        were recorded, on a thread of their own (a subscriber's errors are logged). Works
        before and after :meth:`start`; events of a stopped engine were all delivered when
        :meth:`stop` returns.

        Args:
            fn: the subscriber.
            *kinds: only these event types (default: all).

        Returns:
            A function that unsubscribes.

        Raises:
            ClientError: ``fn`` is not callable, or a kind is not an event type.
        """
        if not callable(fn):
            raise ClientError(f"subscribe: fn: expected a callable, got {fn!r}")
        for kind in kinds:
            if kind not in (RunStarted, StepAttempted, RunFinished):
                raise ClientError(
                    "subscribe: kinds: expected af.RunStarted, af.StepAttempted or "
                    f"af.RunFinished, got {kind!r}"
                )
        unsubscribe = self._lifecycle.subscribe(fn, tuple(kinds))
        follower = self._follower
        if follower is not None:
            follower.want_events()
        return unsubscribe

    def metrics(self) -> str:
        """The engine's Prometheus metrics, in the text format (``GET /metrics`` serves it).

        Runs started and finished by workflow and status, step attempts by outcome, step
        duration histograms by workflow and step, store commit durations and batch sizes,
        queue depth, running steps, workers, worker restarts, recycles, timeouts and
        crashes, live runs, pending timers, scheduler lag, and circuit breakers. Counts start
        at zero when the engine starts.

        Raises:
            MissingExtra: prometheus-client is not installed (the ``metrics`` extra).
            EngineNotRunning: the engine is not running.
        """
        require("prometheus_client", "engine.metrics() (GET /metrics)")
        from actorflow.observability._metrics import exposition, registry_for

        if self._follower is not None:
            return self._forward("metrics")  # type: ignore[no-any-return]
        self._require_core()
        if self._registry is None:
            self._registry = registry_for(self)
        return exposition(self._registry)

    @property
    def alive(self) -> bool:
        """Liveness (``GET /healthz``): running, and not halted by a store failure.

        False once a commit failed for a fault of the store (an I/O error, corruption): the
        engine then refuses all work until it is restarted, so an orchestrator should
        restart the process. A full disk is not a halt (work resumes when space returns; see
        :meth:`health`), nor is one write the store refused for its content.
        """
        if self._follower is not None:
            return True  # it forwards, or waits for a leader (readiness says which)
        return self._core is not None and self._failure is None

    def health(self) -> dict[str, Any]:
        """Liveness and readiness (``GET /healthz``, ``GET /readyz``).

        Is the engine alive (not halted by a store failure), is the store writable, are
        workers alive, does the scheduler keep up with timers?

        Returns:
            ``{"alive": bool, "ready": bool, "checks": {"store": {...}, "workers": {...},
            "scheduler": {...}}}``, each check with ``ok`` and what it saw.
        """
        follower = self._follower
        if follower is not None:
            seen = follower.health()
            seen["checks"]["collector"] = self._collector_check()
            return seen
        core = self._core
        if core is None:
            return {
                "alive": False,
                "ready": False,
                "role": "stopped",
                "checks": {"engine": {"ok": False, "detail": "stopped"}},
            }
        checks: dict[str, dict[str, Any]] = {}
        failure = self._failure
        full = self._full
        checks["store"] = {
            "ok": failure is None and full is None,
            "detail": (
                f"halted: a commit failed ({failure}); restart the engine"
                if failure is not None
                else f"full, commits wait for space: {full}"
                if full is not None
                else "writable"
            ),
        }
        try:
            assert core.dispatcher is not None
            alive = core.dispatcher.proxy().statistics().get(timeout=_HEALTH_WAIT).workers
            checks["workers"] = {"ok": alive > 0, "alive": alive}
        except Exception as exc:
            checks["workers"] = {"ok": False, "detail": f"dispatcher not answering: {exc}"}
        checks["workers"]["executor"] = self._executor.name
        try:
            assert core.scheduler is not None
            lag = core.scheduler.proxy().lag.get(timeout=_HEALTH_WAIT)
            checks["scheduler"] = {"ok": lag <= _MAX_LAG, "lag_seconds": round(lag, 3)}
        except Exception as exc:
            checks["scheduler"] = {"ok": False, "detail": f"scheduler not answering: {exc}"}
        server = self._server
        if server is not None:
            checks["followers"] = {"ok": True, "connected": server.followers}
        checks["collector"] = self._collector_check()
        return {
            "alive": failure is None,
            "ready": all(c["ok"] for c in checks.values()),
            "role": "leader",
            "checks": checks,
        }

    def schedules(self) -> list[dict[str, Any]]:
        """The schedules of the running engine: spec, last and next slot, counts.

        Each has a ``name`` (``"<workflow>#<n>"``, what :meth:`pause_schedule` takes),
        ``paused``, its ``note``, and ``next`` None while paused (see docs/triggers.md).
        """
        if self._follower is not None:
            return self._forward("schedules")  # type: ignore[no-any-return]
        self._require_core()
        background = self._background
        return background.schedules.describe() if background is not None else []

    def _webhooks(self) -> list[tuple[str, Any]]:
        """(workflow id, webhook spec) of every defined workflow, checked for clashes."""
        out: list[tuple[str, Any]] = []
        seen: dict[tuple[str, str], str] = {}
        problems = []
        for wid, wf in sorted(self._definitions.items()):
            for spec in wf.build().webhooks:
                other = seen.setdefault((spec.path, spec.method), wid)
                if other != wid or (spec.path, spec.method, wid) in [
                    (s.path, s.method, w) for w, s in out
                ]:
                    problems.append(
                        f"on_webhook({spec.path!r}, {spec.method!r}): also used by workflow "
                        f"{other!r}; each path and method starts one workflow"
                    )
                    continue
                out.append((wid, spec))
        if problems:
            raise DefinitionError(problems)
        return out

    def asgi(
        self,
        *,
        read_only: bool = False,
        dashboard: bool = True,
        token: str | None = None,
        rate_limit: float | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> Any:
        """One ASGI app: webhooks, the JSON REST API, the dashboard, metrics and health.

        The dashboard is at ``/``, metrics at ``/metrics``, health at ``/healthz`` and
        ``/readyz``. Mount it in a service, or run it with ``actorflow serve module:engine``
        (uvicorn on uvloop, bound to 127.0.0.1 unless told otherwise). Its lifespan starts
        the engine if it is not running yet; mounted under a prefix (``app.mount("/flows",
        engine.asgi())``) it gets no lifespan events, so pass :meth:`lifespan` to the outer
        app. Every route, the dashboard included, works under the prefix. Until the engine
        runs, a mounted app that nothing started answers 503 saying so (``/readyz`` too).
        Routes are listed in ``actorflow/triggers/_http.py``.

        Args:
            read_only: refuse (403) the API's actions (trigger, cancel, retry, resume,
                publish, signal, update, restart); webhooks still start runs. The dashboard
                then shows no action buttons.
            dashboard: serve the dashboard at ``/``.
            token: a bearer token the REST API, the dashboard and ``/metrics`` require
                (webhooks keep their signatures; health checks stay open); default: the
                ``api_token`` setting (``ACTORFLOW_API_TOKEN``), empty for none. Open the
                dashboard once with ``/?token=...``; it keeps the token in a cookie.
            rate_limit: requests per second allowed per client address (bursts of twice
                that), answered 429 with ``Retry-After`` past it; health checks are exempt.
                Default: the ``api_rate_limit`` setting (``ACTORFLOW_API_RATE_LIMIT``); 0
                for none.
            allowed_hosts: host names served besides those of the ``allowed_hosts`` setting
                (``ACTORFLOW_ALLOWED_HOSTS``) and the address a request arrived on. Every
                request but webhooks and health checks must name one in its ``Host`` (else
                400), and one that changes state must be JSON (or carry
                ``X-Actorflow-Client``) from no other site (else 415 / 403); see
                ``docs/operations.md``.

        Raises:
            MissingExtra: Starlette is not installed (the ``serve`` extra).
            DefinitionError: a definition is invalid, or two webhooks share a path and method.
            ConfigError: ``rate_limit`` or ``allowed_hosts`` is not valid.
        """
        require("starlette", "engine.asgi()")
        from actorflow.triggers._http import build_app

        chosen = self.config.api_token if token is None else token
        rate = self.config.api_rate_limit if rate_limit is None else rate_limit
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
            raise ConfigError(f"rate_limit: expected requests per second >= 0, got {rate!r}")
        return build_app(
            self._facade,
            read_only=read_only,
            dashboard=dashboard,
            token=chosen,
            rate_limit=rate,
            allowed_hosts=allowed_hosts,
        )

    def lifespan(
        self, app: Any = None, *, drain_timeout: float = 30.0
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Start the engine for a service's lifetime: ``FastAPI(lifespan=engine.lifespan)``.

        An async context manager for the lifespan of the app that mounts :meth:`asgi`
        (FastAPI, Starlette), or to enter in a lifespan of your own: ``async with
        engine.lifespan(app): yield``. It starts the engine in a thread (``start`` blocks)
        and, at shutdown, stops it there, letting steps in flight finish. An engine already
        running is left alone, then and at shutdown. See ``docs/embedding.md``.

        Args:
            app: the app whose lifespan this is (frameworks pass it; unused).
            drain_timeout: seconds the stop at shutdown waits for steps in flight.
        """
        from actorflow.triggers._lifespan import lifespan

        return lifespan(self._facade, drain_timeout)
