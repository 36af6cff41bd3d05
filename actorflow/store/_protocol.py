"""The Store protocol: what both the LMDB store and its in-memory twin promise.

A store is a set of named databases of sorted byte keys. Reads are safe from any thread; all
writes go through :meth:`Store.write`, one atomic transaction per call, and only the engine's
store-writer actor calls it while an engine runs (it batches every actor's writes into one call:
group commit). The contract tests in ``tests/store/test_contract.py`` run on both
implementations.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from actorflow.errors import StoreCorrupted, StoreError, WriteRejected
from actorflow.store import _keys as K
from actorflow.store._migrations import migrate

__all__ = [
    "BlobStore",
    "Op",
    "Store",
    "blob_token",
    "check_ops",
    "ensure_format",
    "get_many",
    "long_key",
]

#: One write: (database, key, value), or value None to delete the key.
Op = tuple[str, bytes, bytes | None]


class BlobStore(Protocol):
    """Durable copies of large buffers, by blob id (see :mod:`actorflow.store._blobfiles`)."""

    def write_from(
        self, blob_id: str, fd: int, size: int, cancelled: Callable[[], bool] = ...
    ) -> bool:
        """Store ``size`` bytes from the start of ``fd``; False if cancelled first."""
        ...

    def read_into(self, blob_id: str, fd: int) -> int | None:
        """Copy the blob to the start of ``fd``; its size, or None if absent."""
        ...

    def read(self, blob_id: str) -> bytes | memoryview | None:
        """The blob's bytes (or a read-only view of them), or None if absent."""
        ...

    def size(self, blob_id: str) -> int | None:
        """The blob's size, or None if absent."""
        ...

    def delete(self, blob_id: str) -> None:
        """Remove the blob (no error if absent)."""
        ...

    def ids(self) -> list[str]:
        """Every stored blob id."""
        ...


@runtime_checkable
class Store(Protocol):
    """Durable, sorted key-value databases with atomic batched writes."""

    read_only: bool
    #: Number of write transactions committed since open (for group-commit statistics).
    commits: int

    @property
    def blobs(self) -> BlobStore:
        """Large values' out-of-band buffers."""
        ...

    def get(self, db: str, key: bytes) -> bytes | None:
        """Return the value of ``key`` in ``db``, or None."""
        ...

    def scan(
        self,
        db: str,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Return (key, value) pairs whose key starts with ``prefix``, in key order.

        Args:
            db: the database name.
            prefix: only keys starting with this.
            after: exclusive bound to continue from (in scan direction), for pagination.
            reverse: newest (largest key) first.
            limit: at most this many pairs.
        """
        ...

    def write(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` atomically: all of them durably (per the durability mode) or none.

        Raises:
            WriteRejected: an op the store cannot hold (nothing of the batch is applied;
                the store is intact).
            StoreFull: no space (nothing is applied).
            StoreError: the store failed.
        """
        ...

    def sync(self) -> None:
        """Flush everything committed so far to disk (a no-op where not applicable)."""
        ...

    def close(self) -> None:
        """Release the store; further calls raise :class:`StoreError`."""
        ...


def get_many(store: Any, db: str, keys: list[bytes]) -> list[bytes | None]:
    """The values of ``keys`` in ``db`` (None for each absent).

    In one read where the store can (``get_many``), else one ``get`` each (a store of the
    tests' own, wrapping another).
    """
    many = getattr(store, "get_many", None)
    if many is not None:
        found: list[bytes | None] = many(db, keys)
        return found
    return [store.get(db, k) for k in keys]


def long_key(ops: Sequence[Op]) -> str | None:
    """What is wrong if an op's key is longer than the store can hold (None if none is).

    Cheap enough for the hot path: the shards check each run's ops with it before they join
    a group commit, so that one run's bad key fails that run and no other.
    """
    limit = K.MAX_KEY
    for db, key, _ in ops:
        if len(key) > limit:
            return (
                f"key too long for the store ({len(key)} bytes > {limit}) in {db}: "
                f"{bytes(key[:40])!r}..."
            )
    return None


def check_ops(ops: Sequence[Op], known: frozenset[str]) -> None:
    """Validate a batch before any of it is applied, so a bad op never half-writes a batch.

    Raises:
        WriteRejected: naming the first bad op and what was expected.
    """
    for i, op in enumerate(ops):
        if not isinstance(op, tuple) or len(op) != 3:
            raise WriteRejected(f"write op {i}: expected (db, key, value), got {op!r}")
        db, key, value = op
        if db not in known:
            raise WriteRejected(f"write op {i}: unknown database {db!r}")
        if not isinstance(key, bytes) or not key:
            raise WriteRejected(f"write op {i}: key must be non-empty bytes, got {key!r}")
        if value is not None and not isinstance(value, bytes | bytearray | memoryview):
            raise WriteRejected(f"write op {i}: value must be bytes or None, got {type(value)}")
    problem = long_key(ops)
    if problem is not None:
        raise WriteRejected(problem)


def ensure_format(store: Store) -> int:
    """Check (or, on a new writable store, record) the store format version.

    A writable store of an older format is migrated to this one first (see
    ``store/_migrations.py``); a read-only one is read as it is.

    Returns:
        The store's format version (after any migration).

    Raises:
        StoreError: the store was written by a newer actorflow.
        StoreCorrupted: the meta record is unreadable.
    """
    raw = store.get(K.META, K.FORMAT_KEY)
    if raw is None:
        if store.read_only:
            return K.FORMAT_VERSION
        store.write([(K.META, K.FORMAT_KEY, str(K.FORMAT_VERSION).encode())])
        return K.FORMAT_VERSION
    try:
        version = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreCorrupted(f"store meta record 'format' is unreadable: {raw[:32]!r}") from exc
    if version > K.FORMAT_VERSION:
        raise StoreError(
            f"store format {version} is newer than this actorflow supports "
            f"({K.FORMAT_VERSION}); upgrade actorflow to open it"
        )
    if version < K.FORMAT_VERSION and not store.read_only:
        migrate(store, version)
        return K.FORMAT_VERSION
    return version


def blob_token(store: Store) -> str | None:
    """The store's blob token (created on a writable store that has none yet).

    It prefixes blob ids and shared-memory segment names, so segments left by a killed engine
    can be told from other stores' (see ``runtime/blobs/_manager.py``).
    """
    raw = store.get(K.META, K.BLOB_TOKEN_KEY)
    if raw is not None:
        return raw.decode("ascii")
    if store.read_only:
        return None
    token = secrets.token_hex(4)
    store.write([(K.META, K.BLOB_TOKEN_KEY, token.encode())])
    return token
