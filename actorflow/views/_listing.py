"""Listing runs: pages of summaries, newest first, read about a page at a time.

Run ids are time-ordered and are the ``runs`` database's keys, so a listing is a reverse
scan that starts at a key (a cursor, a time) and stops once the page is full: a page of 50
runs out of 100,000 reads about 50 records, whatever the filters. Each filter picks what
drives the scan:

- none: the ``runs`` database itself; a status or a workflow: its ``index`` entries;
- ``id_prefix``: the range of ``runs`` keys that start with it;
- ``idempotency_key``: the ``idempotency`` database, looked up once per workflow (a handful
  of gets): a key names at most one run per workflow;
- search attribute conditions (``where``): one condition's index (``store/_search.py``), the
  others checked on the page's records, read in one batch.
"""

from __future__ import annotations

from typing import Any

from actorflow._types import RunStatus
from actorflow.errors import ClientError
from actorflow.store import _keys as K
from actorflow.store._protocol import Store, get_many
from actorflow.store._records import load_record
from actorflow.store._search import Cond, matches, parse_where, scan_ids
from actorflow.views._details import RunSummary, parse_status

__all__ = ["list_runs"]


def _summary(rec: dict[str, Any]) -> RunSummary:
    ended = rec.get("ended_at")
    return RunSummary(
        id=rec["id"],
        workflow_id=rec["workflow"],
        status=RunStatus(rec["status"]),
        created_at=rec["created_at"],
        ended_at=ended,
        search_attributes=rec.get("search_attributes") or {},
        started_at=rec.get("started_at"),
        duration=(ended - rec["created_at"]) if ended is not None else None,
        parent_run_id=(rec.get("parent") or [None])[0],
        idempotency_key=rec.get("idempotency_key"),
    )


def list_runs(
    store: Store,
    workflow: str | None = None,
    status: str | RunStatus | None = None,
    limit: int | None = 50,
    before: str | None = None,
    since: float | None = None,
    until: float | None = None,
    where: Any = None,
    id_prefix: str | None = None,
    idempotency_key: str | None = None,
) -> list[RunSummary]:
    """Runs, newest first, optionally filtered by workflow, status and trigger time.

    Run ids are time-ordered, so a page starts at a key and stops early: a page of 50 runs
    out of 100,000 reads about 50 records, whatever the filters.

    Args:
        store: the store.
        workflow: only this workflow's runs.
        status: only runs in this status.
        limit: at most this many (None: all).
        before: the cursor: only runs older than this run id (the last of the previous page).
        since: only runs triggered at or after this time (seconds since the epoch).
        until: only runs triggered before this time.
        where: search attribute conditions (``store/_search.py``): ``{"customer": "c-42",
            "amount>": 100}``; an equality is read from its index newest first (a page
            reads about a page), a range alone from its attribute's index in value order.
        id_prefix: only runs whose id starts with this (read from the runs' own order).
        idempotency_key: only the runs triggered with this idempotency key (one per
            workflow at most): looked up in the keys' database, not scanned for.
    """
    wanted = parse_status(status)
    conds = parse_where(where)
    for name, text in (("id_prefix", id_prefix), ("idempotency_key", idempotency_key)):
        if text is not None and (not isinstance(text, str) or not text):
            raise ClientError(f"{name}: expected a non-empty string, got {text!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ClientError(f"limit: expected a non-negative integer or None, got {limit!r}")
    for name, given in (("since", since), ("until", until)):
        if given is not None and (not isinstance(given, int | float) or isinstance(given, bool)):
            raise ClientError(f"{name}: expected seconds since the epoch, got {given!r}")
    if before is not None and not isinstance(before, str):
        raise ClientError(f"before: expected a run id, got {before!r}")
    if idempotency_key is not None or conds:
        ids = None if idempotency_key is None else _keyed_runs(store, workflow, idempotency_key)
        if id_prefix is not None and ids is not None:
            ids = [i for i in ids if i.startswith(id_prefix)]
        return _where_runs(store, conds, workflow, wanted, limit, before, since, until, ids)
    out: list[RunSummary] = []
    if id_prefix is not None:
        # Run ids are the runs database's keys: a prefix is a range of it, newest last.
        prefix, db = K.run_key(id_prefix), K.RUNS
    elif wanted is not None:
        prefix = K.status_index_prefix(wanted)
        db = K.INDEX
    elif workflow is not None:
        prefix = K.workflow_index_prefix(workflow)
        db = K.INDEX
    else:
        prefix, db = b"", K.RUNS
    # Where the (reverse) scan starts: below the cursor, or below the first id of `until`.
    starts = []
    if before is not None:
        starts.append(before)
    if until is not None:
        starts.append(f"{max(0, int(until * 1000)):012x}")
    after: bytes | None = None
    if starts:
        cursor = min(starts).encode()
        if db == K.RUNS and prefix:
            # An id prefix: the cursor is a whole key of ``runs``, not a suffix of the prefix.
            if not cursor.startswith(prefix):
                if cursor < prefix:
                    return out  # every id with the prefix is newer than the cursor
                cursor = b""  # past the prefix's ids: from the newest of them
            after = cursor or None
        else:
            after = prefix + cursor
    floor = None if since is None else f"{max(0, int(since * 1000)):012x}"
    page = max(64, limit or 0)
    while limit is None or len(out) < limit:
        rows = store.scan(db, prefix, after=after, reverse=True, limit=page)
        if not rows:
            break
        for key, value in rows:
            run_id = key[len(prefix) :].decode() if db != K.RUNS else key.decode()
            if floor is not None and run_id[:12] < floor:
                return out  # older than `since`: so is everything after it
            if db == K.RUNS:
                rec = load_record(value, "run")
            else:
                raw = store.get(K.RUNS, K.run_key(run_id))
                if raw is None:
                    continue
                rec = load_record(raw, f"run {run_id}")
            if not _qualifies(rec, workflow, wanted):
                continue  # (with an index: it moved on since this page was read)
            out.append(_summary(rec))
            if limit is not None and len(out) >= limit:
                break
        after = rows[-1][0]
    return out


def _where_runs(
    store: Store,
    conds: list[Cond],
    workflow: str | None,
    wanted: RunStatus | None,
    limit: int | None,
    before: str | None,
    since: float | None,
    until: float | None,
    keyed: list[str] | None = None,
) -> list[RunSummary]:
    """``list_runs`` with search attribute conditions: driven by one condition's index.

    ``keyed``: the run ids an idempotency key names, newest first; they drive the scan
    instead of an index (the conditions, if any, are checked on their records).
    """
    eq = next((c for c in conds if c.op == "="), None)
    ids: Any
    if keyed is not None:
        ids = [i for i in keyed if before is None or i < before]
    elif eq is not None:
        # Newest first, read as the page fills (a few more than a page: others may drop).
        ids = scan_ids(store, eq, before, batch=max(16, (limit or 256) + 8))
    else:
        ranged = next((c for c in conds if c.op != "!="), None)
        if ranged is None:
            raise ClientError("where: '!=' alone is not searchable: add '=' or a range")
        ids = sorted(set(scan_ids(store, ranged)), reverse=True)
        if before is not None:
            ids = [i for i in ids if i < before]
    ceiling = None if until is None else f"{max(0, int(until * 1000)):012x}"
    floor = None if since is None else f"{max(0, int(since * 1000)):012x}"
    out: list[RunSummary] = []
    chunk = max(16, limit or 256)
    batch: list[str] = []
    for run_id in ids:
        if ceiling is not None and run_id[:12] >= ceiling:
            continue
        if floor is not None and run_id[:12] < floor:
            break  # older than `since`: so is every id after it
        batch.append(run_id)
        if len(batch) >= chunk and _take(store, batch, conds, workflow, wanted, limit, out):
            return out
    if batch:
        _take(store, batch, conds, workflow, wanted, limit, out)
    return out


def _qualifies(rec: dict[str, Any], workflow: str | None, wanted: RunStatus | None) -> bool:
    """Whether a run's record is of ``workflow`` and in status ``wanted`` (None: any)."""
    if workflow is not None and rec["workflow"] != workflow:
        return False
    return wanted is None or rec["status"] == wanted.value


def _keyed_runs(store: Store, workflow: str | None, key: str) -> list[str]:
    """The runs triggered with idempotency key ``key``: one per workflow at most, newest first.

    Keys are stored per workflow (``idempotency``: workflow, then key); without a workflow,
    each workflow the store has defined is looked up (a handful of gets, not a scan).
    """
    if workflow is not None:
        workflows = [workflow]
    else:
        # (a plan's key is its workflow id, NUL, its shape)
        workflows = sorted(
            {k.split(b"\0", 1)[0].decode() for k, _ in store.scan(K.DEFINITIONS, b"")}
        )
    found = get_many(store, K.IDEMPOTENCY, [K.idempotency_key(w, key) for w in workflows])
    return sorted((raw.decode() for raw in found if raw is not None), reverse=True)


def _take(
    store: Store,
    batch: list[str],
    conds: list[Cond],
    workflow: str | None,
    wanted: RunStatus | None,
    limit: int | None,
    out: list[RunSummary],
) -> bool:
    """Read ``batch``'s run records in one go, keep those that qualify; True once full."""
    found = get_many(store, K.RUNS, [K.run_key(r) for r in batch])
    for run_id, raw in zip(batch, found, strict=True):
        if raw is None:
            continue
        rec = load_record(raw, f"run {run_id}")
        if not _qualifies(rec, workflow, wanted):
            continue
        if conds and not matches(rec.get("search_attributes"), conds):
            continue  # another condition, or an entry its run has just replaced
        out.append(_summary(rec))
        if limit is not None and len(out) >= limit:
            return True
    batch.clear()
    return False
