"""What every store-reading command shares: where the store is, opening it, finding a run.

Why a module of its own: ``_main`` (the parser and the simple commands) and the commands in
their own modules (``_plan``, ``_replay``, ``_store``, ``_versions``) all open the store
the same way; keeping it here lets each of them import it without importing ``_main``,
which imports them.
"""

from __future__ import annotations

import os
from typing import Any

from actorflow.cli._output import UsageError
from actorflow.errors import RunNotFound
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from actorflow.store._protocol import Store

__all__ = ["default_data_dir", "read_only", "resolve"]


def default_data_dir() -> str:
    """``$ACTORFLOW_DATA_DIR``, else ``.actorflow`` (the engine's default)."""
    return os.environ.get("ACTORFLOW_DATA_DIR") or ".actorflow"


def read_only(data_dir: str | None) -> Any:
    """The store opened read-only, unsealed with the configured codecs (env, pyproject)."""
    from actorflow.config import EngineConfig
    from actorflow.store._sealing import sealed

    cfg = EngineConfig.from_sources()
    store = LmdbStore(data_dir or default_data_dir(), read_only=True)
    return sealed(store, cfg.codecs, cfg.codec_keys)


def resolve(store: Store, prefix: str) -> str:
    """The id of the one run whose id is ``prefix`` or starts with it."""
    if store.get(K.RUNS, K.run_key(prefix)) is not None:
        return prefix
    matches = [k.decode() for k, _ in store.scan(K.RUNS, prefix.encode(), limit=2)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        missing = RunNotFound(prefix)
        missing.args = (f"no run with id or id prefix {prefix!r}",)
        raise missing
    raise UsageError(f"run id prefix {prefix!r} is ambiguous; give more characters")
