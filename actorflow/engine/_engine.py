"""The Engine facade: define workflows, start the actors, trigger and inspect runs.

Its parts live in this package, one module each (see ``_base.py``).
"""

from __future__ import annotations

from actorflow.engine._scheduling import Scheduling

__all__ = ["Engine"]


class Engine(Scheduling):
    """An embedded durable workflow engine.

    Define workflows with :meth:`define`, start the engine (``with engine:`` or
    :meth:`start`), then :meth:`trigger` runs. All state lives in the store: a new engine on
    the same ``data_dir`` resumes every unfinished run.

    Args:
        data_dir: directory of the embedded LMDB store (default ``.actorflow``, or
            ``ACTORFLOW_DATA_DIR``).
        store: ``"lmdb"`` (default), ``"memory"``, or a :class:`~actorflow.store.Store`.
        clock: the clock for durable timers (default: the system clock; tests pass a
            :class:`~actorflow.ManualClock`).
        config: a complete :class:`~actorflow.EngineConfig`; other settings are then ignored.
        executor: where steps run: None or ``"process"`` (default), the engine's own worker
            processes; ``"inline"``, threads of this process (for tests: no isolation, and
            a step past its timeout is abandoned, not stopped); or
            :class:`~actorflow.DaskExecutor` (a Dask cluster).
        **settings: any :class:`~actorflow.EngineConfig` field, e.g. ``durability="fast"``,
            ``workers=4``.

    Raises:
        ConfigError: a setting is invalid.
    """
