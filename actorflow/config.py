"""Engine configuration: constructor arguments, ``ACTORFLOW_*`` variables, ``pyproject.toml``.

Precedence, strongest first: an explicit argument to :class:`~actorflow.Engine`, then the
environment variable, then the ``[tool.actorflow]`` table of the nearest ``pyproject.toml``
(the current directory or a parent), then the default. Every field is validated on
construction and a bad one raises :class:`~actorflow.errors.ConfigError` naming the field
and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from actorflow import _platform
from actorflow.errors import ConfigError, DefinitionError, MissingExtra

__all__ = ["EngineConfig"]

Durability = Literal["sync", "fast"]
StoreKind = Literal["lmdb", "memory"]
StartMethod = Literal["forkserver", "spawn"]
Role = Literal["auto", "leader", "follower"]
Collector = Literal["freeze", "python"]

_ENV_PREFIX = "ACTORFLOW_"
_ARTICLE = {"int": "an", "float": "a"}


@dataclass(frozen=True)
class EngineConfig:
    """Every setting of an engine.

    Attributes:
        data_dir: directory of the embedded LMDB store (``ACTORFLOW_DATA_DIR``).
        store: ``"lmdb"`` (durable, default) or ``"memory"`` (the in-memory twin, for tests).
        durability: ``"sync"`` fsyncs every group commit; ``"fast"`` leaves flushing to the OS
            (survives a crash of the process, not of the machine).
        workers: worker processes, or ``"auto"`` for the CPU count.
        shards: supervisor shard actors; runs are spread over them by id.
        start_method: ``"forkserver"`` (the default on Linux) or ``"spawn"`` (the default
            elsewhere, e.g. macOS); never plain fork. Both import ``preload`` in every worker.
        map_size: initial LMDB map size in bytes; it grows on demand.
        max_map_size: the most the map may grow to, in bytes (0: until the disk is full);
            also ``"10GiB"``... Past it (or on a full disk) commits wait and new work is
            refused with ``StoreFull`` until space returns.
        recreate_store: start a new, empty store in a ``data_dir`` that shows a store lived
            there (its ``actorflow.json`` marker or ``lock.mdb``) but whose ``data.mdb`` is
            missing or empty. Without it such a directory is refused with
            ``StoreCorrupted``, so a lost data file never passes for an empty store.
        max_batch: most writes in one group commit.
        prefetch: most tasks queued inside a busy worker behind the one it runs, so it never
            waits for the engine (the dispatcher aims at ~50 ms of queued work; 0 disables).
        chunk_budget: seconds of work one chunk of a for_each's tiny items aims at (default
            0.02). Items of a step that takes at most a fifth of it are sent in chunks of
            that much work: more items per task costs the engine less per item, fewer
            spreads uneven items better and loses less to a crashed worker. ``actorflow
            tune`` measures it for a workflow (docs/tuning.md).
        kill_grace: seconds between SIGTERM and SIGKILL when a worker must die.
        restart_limit: worker deaths tolerated within ``restart_window`` seconds before the
            restart breaker opens.
        restart_window: the window of ``restart_limit``, in seconds.
        breaker_cooldown: seconds the breaker stays open before workers are started again.
        role: how an engine shares its ``data_dir`` with engines in other processes
            (``ACTORFLOW_ROLE``). ``"auto"`` (default): the first to start leads (runs the
            actors, workers, timers and schedules), every other one follows (forwards to the
            leader) and takes over when the leader goes; ``"leader"``: lead or fail with
            ``StoreInUse``; ``"follower"``: always follow, never take over (a process that
            only serves requests). See docs/embedding.md.
        collector: how the process's cyclic garbage collector runs while the engine does
            (``ACTORFLOW_COLLECTOR``). ``"freeze"`` (default): the survivors of each full
            collection are frozen (``gc.freeze()``), so the next one walks only newer
            objects and does not stall every thread and event loop for tens of
            milliseconds when thousands of runs are in flight; cycles among frozen objects
            are collected at a periodic thaw. ``"python"``: leave the collector alone. See
            docs/embedding.md ("The garbage collector").
        leader_wait: seconds a follower's call waits for a leader to answer (while none
            answers: the leader died and another is taking over) before it fails with
            ``EngineNotRunning``.
        preload: modules each worker imports at start, so a replacement is ready at once.
        worker_start_timeout: seconds to wait for the initial workers at ``start()``.
        event_ttl: seconds a keyed event published before anyone waits for it is kept.
        sweep_interval: seconds between background sweeps of expired state and events.
        max_body: largest HTTP request body the ASGI app accepts, in bytes.
        schedules: run the workflows' cron and interval schedules and their poll triggers
            (False: only other triggers start runs, e.g. on all but one engine of a
            deployment).
        sticky_cache_size: most waiting code workflow runs kept in memory as suspended
            coroutines (0: none); others are rebuilt by replay at their next event.
        sticky_cache_ttl: seconds a waiting code workflow run stays in that cache (0: no
            limit but the size).
        max_tasks_per_worker: replace a worker after it ran this many tasks (0: never).
        max_memory_per_worker: replace a worker, between tasks, once its resident memory
            (not counting shared pages: libraries, mapped large values) passes this many
            bytes (0: never); also ``"512MB"``, ``"2GiB"``... A step whose worker passes
            twice this while it runs (a memory blow-up) is killed and fails as a
            ``WorkerCrashed``, retried by its policy.
        max_interruptions: a step whose attempts the engine's death (a crash, a kill, a
            restart while it ran) interrupted this many times is not run again: it fails
            (``StepFailed``, kind ``interrupted``), so a step that kills the engine cannot
            keep it in a crash loop (0: no limit). Interrupted attempts do not count against
            the step's retry policy. A step recorded but not yet started when the engine
            stops (``engine.stop``, drained or not) is no attempt, so it counts neither.
        shm_threshold: out-of-band buffers (numpy arrays, large bytes...) of more than this
            many bytes travel between the engine and workers through shared memory, not the
            pipe (0: never); also ``"1MiB"``...
        shm_max_bytes: most bytes of shared-memory segments at once (0: a quarter of the
            machine's memory); past it, or past what ``/dev/shm`` has free (less a headroom
            for its other users), large values go through the pipe.
        blob_write_delay: seconds between recording a large value and writing its bytes to
            the store; a value its run no longer needs by then is never written (until then,
            its shared-memory segment is the copy that survives an engine crash).
        api_token: a bearer token ``engine.asgi()`` requires for its REST API, dashboard and
            metrics (empty: none); best from ``ACTORFLOW_API_TOKEN``; never shown.
        api_rate_limit: requests per second ``engine.asgi()`` allows each client address
            (0: no limit); past it, 429 with ``Retry-After``.
        interceptors: ``af.Interceptor`` instances (or ``"module:name"`` of one, or of a class
            made without arguments) run around workflow starts, signals, queries, updates
            and step attempts (these in the worker processes): see docs/observability.md.
        tracing: run steps inside their OpenTelemetry span's context (set by
            ``af.observability.trace(engine)``, which also exports the spans).
        codecs: the codec chain sealing stored user data (payloads, outputs, errors,
            history, state, events, approvals, and large values' blob files, in chunks;
            only records written from then on), in the order applied: ``"zstd"`` or
            ``"gzip"``, then ``"aesgcm"``; e.g. ``("zstd", "aesgcm")`` or ``"zstd,aesgcm"``.
            ``"zstd"`` and ``"aesgcm"`` need the ``codecs`` extra (else ``MissingExtra``).
        codec_keys: AES keys as ``"key-id:base64"`` (16, 24 or 32 bytes each); the first
            encrypts, all decrypt (rotation). Best set from ``ACTORFLOW_CODEC_KEYS``; never
            shown in reprs, logs or errors.
        max_run_depth: the deepest a run may be (a top-level run is at depth 0, a subflow's
            or ``ctx.child``'s run one deeper than its parent); a step that would start a
            child past it fails with ``RunDepthExceeded``, never retried (0: no limit).
        allowed_hosts: host names ``engine.asgi()`` answers to besides the address a
            connection arrived on (and ``localhost`` on loopback): ``"engine.example.com"``,
            ``".example.com"`` (the domain and its sub-domains), ``"*"`` (any); a request
            naming another ``Host`` gets a 400 (DNS rebinding). Comma-separated in
            ``ACTORFLOW_ALLOWED_HOSTS``. A page whose ``Origin`` is one of these names (not
            through ``"*"``) may also change state, for a dashboard behind a proxy.
        retention: how long finished runs (completed, failed, cancelled, continued as new)
            are kept after they end, for workflows without a ``retention`` of their own: a
            duration (``"30d"``, ``"12h"``, seconds; ``ACTORFLOW_RETENTION``), or 0, None or
            ``"forever"`` to keep them forever. Default 30 days. Past it a run is deleted
            with everything it owns, in the background (every ``sweep_interval``).
        step_logs: the least level of the ``ctx.log`` records kept with their run, for
            ``engine.logs`` (``"DEBUG"``, ``"INFO"``, the default, ``"WARNING"``, ``"ERROR"``,
            ``"CRITICAL"``), or ``"off"`` to keep none; at most 1,000 records of 8 KiB per
            step attempt (docs/observability.md). The ``actorflow.step`` logger still gets
            the records its own level lets through.
    """

    data_dir: Path = Path(".actorflow")
    store: StoreKind = "lmdb"
    durability: Durability = "sync"
    workers: int = 0  # 0 means "auto"
    shards: int = 4
    start_method: StartMethod = field(default_factory=_platform.default_start_method)
    map_size: int = 64 << 20
    max_map_size: int = 0
    recreate_store: bool = False
    role: Role = "auto"
    leader_wait: float = 30.0
    collector: Collector = "freeze"
    max_batch: int = 4096
    prefetch: int = 32
    chunk_budget: float = 0.02
    kill_grace: float = 0.5
    restart_limit: int = 20
    restart_window: float = 10.0
    breaker_cooldown: float = 5.0
    preload: tuple[str, ...] = ()
    worker_start_timeout: float = 60.0
    event_ttl: float = 86400.0
    sweep_interval: float = 60.0
    max_body: int = 1 << 20
    schedules: bool = True
    sticky_cache_size: int = 10_000
    sticky_cache_ttl: float = 0.0
    max_tasks_per_worker: int = 0
    max_memory_per_worker: int = 0
    max_interruptions: int = 20
    shm_threshold: int = 1 << 20
    shm_max_bytes: int = 0
    blob_write_delay: float = 0.2
    tracing: bool = False
    interceptors: tuple[Any, ...] = field(default=(), compare=False)
    api_token: str = field(default="", repr=False)
    api_rate_limit: float = 0.0
    codecs: tuple[str, ...] = ()
    codec_keys: tuple[str, ...] = field(default=(), repr=False)
    max_run_depth: int = 64
    allowed_hosts: tuple[str, ...] = ()
    retention: float | None = 30 * 86400.0  # normalised: seconds, 0.0 keeps runs forever
    step_logs: str = "INFO"  # normalised: upper case
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.store not in ("lmdb", "memory"):
            problems.append(f"store: expected 'lmdb' or 'memory', got {self.store!r}")
        if self.durability not in ("sync", "fast"):
            problems.append(f"durability: expected 'sync' or 'fast', got {self.durability!r}")
        if self.role not in ("auto", "leader", "follower"):
            problems.append(f"role: expected 'auto', 'leader' or 'follower', got {self.role!r}")
        if self.collector not in ("freeze", "python"):
            problems.append(f"collector: expected 'freeze' or 'python', got {self.collector!r}")
        if self.start_method not in ("forkserver", "spawn"):
            problems.append(
                f"start_method: expected 'forkserver' or 'spawn', got {self.start_method!r}"
            )
        elif self.start_method not in _platform.start_methods():
            problems.append(
                f"start_method: {self.start_method!r} is not available on this platform "
                f"(it offers {', '.join(_platform.start_methods())})"
            )
        for name in (
            "workers", "shards", "map_size", "max_batch", "prefetch", "restart_limit", "max_body",
            "sticky_cache_size", "max_tasks_per_worker", "max_memory_per_worker",
            "shm_threshold", "shm_max_bytes", "max_map_size", "max_interruptions",
        ):  # fmt: skip
            value = getattr(self, name)
            low = (
                1 if name in ("shards", "map_size", "max_batch", "restart_limit", "max_body") else 0
            )
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{name}: expected an integer >= {low}, got {value!r}")
        for name in (
            "kill_grace", "restart_window", "breaker_cooldown", "worker_start_timeout",
            "event_ttl", "sweep_interval", "chunk_budget",
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name}: expected a positive number of seconds, got {value!r}")
        rate = self.api_rate_limit
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
            problems.append(f"api_rate_limit: expected requests per second >= 0, got {rate!r}")
        delay = self.blob_write_delay
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            problems.append(f"blob_write_delay: expected seconds >= 0, got {delay!r}")
        ttl = self.sticky_cache_ttl
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl < 0:
            problems.append(f"sticky_cache_ttl: expected seconds >= 0 (0: no limit), got {ttl!r}")
        for name in ("schedules", "recreate_store"):
            flag: Any = getattr(self, name)  # typed bool, but callers may pass anything
            if not isinstance(flag, bool):
                problems.append(f"{name}: expected True or False, got {flag!r}")
        if not all(isinstance(m, str) and m for m in self.preload):
            problems.append(f"preload: expected module names, got {self.preload!r}")
        if self.allowed_hosts:
            from actorflow._hosts import host_problems

            problems.extend(host_problems(self.allowed_hosts))
        if self.codecs or self.codec_keys:
            from actorflow.store._sealing import Codecs

            try:
                Codecs(self.codecs, self.codec_keys)
            except MissingExtra:
                raise  # not a field's problem: the installation lacks the codecs extra
            except ConfigError as exc:
                problems.append(str(exc))
        if (
            self.max_map_size
            and isinstance(self.max_map_size, int)
            and self.max_map_size < self.map_size
        ):
            problems.append(
                f"max_map_size: expected 0 or at least map_size ({self.map_size}), "
                f"got {self.max_map_size!r}"
            )
        depth: Any = self.max_run_depth
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
            problems.append(f"max_run_depth: expected an integer >= 0 (0: no limit), got {depth!r}")
        logs: Any = self.step_logs
        levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "OFF")
        if isinstance(logs, str) and logs.strip().upper() in levels:
            object.__setattr__(self, "step_logs", logs.strip().upper())
        else:
            problems.append(
                "step_logs: expected a level ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL') "
                f"or 'off', got {logs!r}"
            )
        from actorflow.definition._options import parse_retention

        try:
            object.__setattr__(self, "retention", parse_retention(self.retention))
        except DefinitionError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ConfigError("invalid engine configuration: " + "; ".join(problems))

    @property
    def worker_count(self) -> int:
        """The number of worker processes (``workers``, or the CPU count for auto)."""
        if self.workers:
            return self.workers
        import psutil  # here, not at import: only an engine's start reads it

        return psutil.cpu_count(logical=True) or 1

    @property
    def shm_budget(self) -> int:
        """``shm_max_bytes``, or a quarter of the machine's memory when it is 0."""
        if self.shm_max_bytes:
            return self.shm_max_bytes
        import psutil

        return int(psutil.virtual_memory().total // 4)

    @classmethod
    def from_sources(
        cls,
        env: Mapping[str, str] | None = None,
        pyproject: str | os.PathLike[str] | Literal[False] | None = None,
        **overrides: Any,
    ) -> EngineConfig:
        """Build a config from every source, the strongest last.

        Defaults, then ``[tool.actorflow]`` in ``pyproject.toml``, then ``ACTORFLOW_*``
        variables, then ``overrides``.

        Args:
            env: the environment to read (default ``os.environ``).
            pyproject: the file to read (default: the nearest ``pyproject.toml`` from the
                current directory up; False: none).
            **overrides: explicit values; None means "not given".

        Raises:
            ConfigError: an unknown field, or a value that cannot be parsed or is out of range
                (naming the field, and the file for settings that came from one).
        """
        env = os.environ if env is None else env
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        source, table = _pyproject(pyproject)
        for name, value in table.items():
            if name not in fields:
                raise ConfigError(
                    f"{source} [tool.actorflow]: unknown setting {name!r}; "
                    f"known: {', '.join(sorted(fields))}"
                )
            values[name] = _coerce(name, value)
            if name == "data_dir" and not values[name].is_absolute():
                # Relative to the file, like the file's other paths, not to the cwd.
                values[name] = Path(source).parent / values[name]
        for name, f in fields.items():
            raw = env.get(_ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = _parse(name, f.type, raw)
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown engine setting(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(fields))}"
            )
        for name, value in overrides.items():
            if value is None and name != "retention":  # retention=None: keep runs forever
                continue
            values[name] = _coerce(name, value)
        try:
            return cls(**values)
        except ConfigError as exc:
            if not table:
                raise
            raise ConfigError(f"{exc} (settings read from {source} [tool.actorflow])") from None


def _pyproject(
    where: str | os.PathLike[str] | Literal[False] | None,
) -> tuple[str, dict[str, Any]]:
    """(path, the ``[tool.actorflow]`` table) of the pyproject file to read, or ("", {})."""
    if where is False:
        return "", {}
    if where is None:
        found = None
        for folder in (Path.cwd(), *Path.cwd().parents):
            candidate = folder / "pyproject.toml"
            if candidate.is_file():
                found = candidate
                break
        if found is None:
            return "", {}
        path = found
    else:
        path = Path(where)
    import tomllib

    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("tool", {}).get("actorflow", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.actorflow] must be a table, got {type(table).__name__}")
    return str(path), table


_BYTE_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
    "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
}  # fmt: skip


_SIZES = ("max_memory_per_worker", "shm_threshold", "shm_max_bytes", "max_map_size")


def _bytes(text: str, name: str = "max_memory_per_worker") -> int:
    """``"512MB"``, ``"2GiB"``, ``"1000000"`` as a number of bytes."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _BYTE_UNITS:
        raise ConfigError(
            f"{name}: expected bytes such as 536870912, '512MB' or '2GiB', got {text!r}"
        )
    return int(float(m.group(1)) * _BYTE_UNITS[unit])


def _coerce(name: str, value: Any) -> Any:
    if name == "data_dir":
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(f"data_dir: expected a path, got {value!r}")
        return Path(value)
    if name == "workers" and value == "auto":
        return 0
    if name in _SIZES and isinstance(value, str):
        return _bytes(value, name)
    if name == "interceptors":
        if isinstance(value, str):
            return tuple(m.strip() for m in value.split(",") if m.strip())
        return tuple(value) if isinstance(value, list | tuple) else (value,)
    if name in ("preload", "codecs", "codec_keys", "allowed_hosts"):
        if isinstance(value, str):
            return tuple(m.strip() for m in value.split(",") if m.strip())
        if not isinstance(value, list | tuple):
            what = "module names" if name == "preload" else "a list of strings"
            shown = "<hidden>" if name == "codec_keys" else repr(value)
            raise ConfigError(f"{name}: expected {what}, got {shown}")
        return tuple(value)
    return value


def _parse(name: str, type_: Any, raw: str) -> Any:
    var = _ENV_PREFIX + name.upper()
    text = str(type_)
    try:
        if name in ("data_dir", "preload", "store", "durability", "start_method", "codecs", "role",
                    "codec_keys", "allowed_hosts", "retention", "collector",
                    "interceptors"):  # fmt: skip
            return _coerce(name, raw)
        if name in _SIZES:
            return _bytes(raw, name)
        if name == "workers" and raw.strip() == "auto":
            return 0
        if text == "str":
            return raw
        if text == "int":
            return int(raw)
        if text == "float":
            return float(raw)
        if text == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(
            f"{var}: expected {_ARTICLE.get(text, 'a')} {text}, got {raw!r}"
        ) from None
    raise ConfigError(f"{var}: cannot be set from the environment")
