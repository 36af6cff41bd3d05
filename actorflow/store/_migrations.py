"""Store format migrations: bring a store written by an earlier release up to this format.

:func:`~actorflow.store._protocol.ensure_format` calls :func:`migrate` when a writable store
has an older format number. Each step only adds what the new format has and the old one
lacked, derived from records already there, in batches of bounded size; the new format
number is written last, in the final batch, so a migration cut short (a crash, a full
disk) is simply done again at the next open. Steps are idempotent: writing an index entry
that exists changes nothing.

==========  ======================================================================
to format   what it adds
==========  ======================================================================
3           ``index`` ``e`` entries (finished runs by end time, for retention) and
            ``a`` entries (approvals by run, so a pruned run's approvals go with it);
            approvals keyed by their token are keyed by its SHA-256 (a key is never
            sealed, and a token resumes a run)
4           nothing to convert. Runs may now have the status ``waiting_for_definition``
            and graph workflows' structures are kept under their shapes
            (``runtime/supervision/_plans.py``); the number keeps a release that knows neither from
            opening the store (it would fail such a run, or be unable to read it)
5           nothing to convert. Step records may now be compact (no ``path``, defaults
            left out: ``store/_records.py``); records already written keep their full
            shape and are read as they are. The number keeps a release that expects every
            step record to name its path from opening the store
==========  ======================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from actorflow._types import RunStatus
from actorflow.errors import ActorflowError
from actorflow.store import _keys as K
from actorflow.store._records import dump_record, load_record

if TYPE_CHECKING:  # the protocol module calls migrate(): types only, no import cycle
    from actorflow.store._protocol import Op, Store

__all__ = ["migrate"]

log = logging.getLogger("actorflow.store")

#: Most ops per migration transaction (a short write, even on a large store).
_BATCH = 10_000

_TERMINAL = frozenset(s.value for s in RunStatus if s.terminal)


def migrate(store: Store, version: int) -> int:
    """Migrate ``store`` from format ``version`` to this code's format.

    Returns:
        The number of index entries written.
    """
    written = 0
    for step_from in range(version, K.FORMAT_VERSION):
        step = _STEPS.get(step_from)
        if step is None:
            continue
        pending: list[Op] = []
        for op in step(store):
            pending.append(op)
            if len(pending) >= _BATCH:
                store.write(pending)
                written += len(pending)
                pending = []
        pending.append((K.META, K.FORMAT_KEY, str(step_from + 1).encode()))
        store.write(pending)
        written += len(pending) - 1
        log.info("store migrated from format %d to %d", step_from, step_from + 1)
    return written


def _to_3(store: Store) -> Iterator[Op]:
    """Format 2 -> 3: the end-time index of finished runs, the approvals-by-run index."""
    after: bytes | None = None
    while True:
        rows = store.scan(K.RUNS, after=after, limit=1000)
        if not rows:
            break
        for key, raw in rows:
            run_id = key.decode()
            try:
                rec = load_record(raw, f"run {run_id}")
            except ActorflowError:
                log.error("migration: run %s has an unreadable record; it is left alone", run_id)
                continue
            ended = rec.get("ended_at")
            if rec.get("status") in _TERMINAL and isinstance(ended, int | float):
                yield (K.INDEX, K.end_index_key(str(rec["workflow"]), ended, run_id), b"")
        after = rows[-1][0]
    for key, raw in store.scan(K.APPROVALS):
        try:
            rec = load_record(raw, "approval")
        except ActorflowError:
            continue
        if key != K.approval_key(str(rec.get("token") or key.decode(errors="replace"))):
            # Keyed by the token itself (format 2): keyed by its hash now, the token moving
            # into the (sealed) record, so that no key holds a secret.
            # (The new record first: a migration cut between the two finds both and ends
            # the same way the next time.)
            token = key.decode()
            yield (K.APPROVALS, K.approval_key(token), dump_record({**rec, "token": token}))
            yield (K.APPROVALS, key, None)
            key = K.approval_key(token)
        owner = rec.get("run_id")
        if isinstance(owner, str) and owner:
            yield (K.INDEX, K.approval_index_key(owner, key), b"")


def _to_4(store: Store) -> Iterator[Op]:
    """Format 3 -> 4: nothing to convert (see the table above); only the number moves."""
    return iter(())


def _to_5(store: Store) -> Iterator[Op]:
    """Format 4 -> 5: nothing to convert (see the table above); only the number moves."""
    return iter(())


_STEPS: dict[int, Callable[[Store], Iterator[Op]]] = {2: _to_3, 3: _to_4, 4: _to_5}
