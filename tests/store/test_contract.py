"""One contract, two stores: everything here runs on LMDB and on the in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorflow.errors import StoreError
from actorflow.store import LmdbStore, MemoryStore, Store, ensure_format
from actorflow.store import _keys as K


@pytest.fixture(params=["lmdb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = LmdbStore(tmp_path / "db") if request.param == "lmdb" else MemoryStore()
    yield s
    s.close()


def test_put_get_delete(store: Store) -> None:
    assert store.get(K.RUNS, b"a") is None
    store.write([(K.RUNS, b"a", b"1"), (K.STEPS, b"a", b"2")])
    assert store.get(K.RUNS, b"a") == b"1"
    assert store.get(K.STEPS, b"a") == b"2"  # databases are separate
    store.write([(K.RUNS, b"a", None)])
    assert store.get(K.RUNS, b"a") is None
    assert store.get(K.STEPS, b"a") == b"2"


def test_overwrite_and_delete_missing(store: Store) -> None:
    store.write([(K.RUNS, b"k", b"old"), (K.RUNS, b"k", b"new"), (K.RUNS, b"gone", None)])
    assert store.get(K.RUNS, b"k") == b"new"


def test_scan_order_prefix_reverse_limit_after(store: Store) -> None:
    keys = [b"a\x00x", b"a\x001", b"a\x002", b"ab", b"b", b"a"]
    store.write([(K.INDEX, k, k) for k in keys])
    assert [k for k, _ in store.scan(K.INDEX)] == sorted(keys)
    assert [k for k, _ in store.scan(K.INDEX, b"a\x00")] == [b"a\x001", b"a\x002", b"a\x00x"]
    assert [k for k, _ in store.scan(K.INDEX, b"a\x00", reverse=True)] == [
        b"a\x00x",
        b"a\x002",
        b"a\x001",
    ]
    assert [k for k, _ in store.scan(K.INDEX, b"a\x00", limit=2)] == [b"a\x001", b"a\x002"]
    assert [k for k, _ in store.scan(K.INDEX, b"a\x00", after=b"a\x001")] == [b"a\x002", b"a\x00x"]
    assert [k for k, _ in store.scan(K.INDEX, b"a\x00", after=b"a\x00x", reverse=True)] == [
        b"a\x002",
        b"a\x001",
    ]
    assert store.scan(K.INDEX, b"zz") == []
    assert [k for k, _ in store.scan(K.INDEX, reverse=True, limit=1)] == [b"b"]


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.binary(min_size=1, max_size=6), max_size=30, unique=True),
    prefix=st.binary(max_size=2),
    reverse=st.booleans(),
    limit=st.none() | st.integers(min_value=0, max_value=10),
)
def test_scan_matches_a_sorted_filter(
    keys: list[bytes],
    prefix: bytes,
    reverse: bool,
    limit: int | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    expected = sorted(k for k in keys if k.startswith(prefix))
    if reverse:
        expected.reverse()
    if limit is not None:
        expected = expected[:limit]
    for store in (LmdbStore(tmp_path_factory.mktemp("h") / "db"), MemoryStore()):
        try:
            if keys:
                store.write([(K.INDEX, k, b"v") for k in keys])
            got = [k for k, _ in store.scan(K.INDEX, prefix, reverse=reverse, limit=limit)]
            assert got == expected, type(store).__name__
        finally:
            store.close()


def test_bad_batch_writes_nothing(store: Store) -> None:
    store.write([(K.RUNS, b"keep", b"1")])
    with pytest.raises(StoreError):
        store.write([(K.RUNS, b"x", b"1"), (K.RUNS, b"y", "not bytes")])  # type: ignore[list-item]
    with pytest.raises(StoreError, match="unknown database"):
        store.write([(K.RUNS, b"x", b"1"), ("nope", b"y", b"1")])
    assert store.get(K.RUNS, b"x") is None
    assert store.get(K.RUNS, b"keep") == b"1"


def test_unknown_database_on_read(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown database"):
        store.get("nope", b"k")


def test_format_recorded_and_newer_refused(store: Store) -> None:
    assert ensure_format(store) == K.FORMAT_VERSION
    assert store.get(K.META, K.FORMAT_KEY) == str(K.FORMAT_VERSION).encode()
    store.write([(K.META, K.FORMAT_KEY, str(K.FORMAT_VERSION + 1).encode())])
    with pytest.raises(StoreError, match="newer than this actorflow supports"):
        ensure_format(store)


def test_commits_are_counted(store: Store) -> None:
    before = store.commits
    store.write([(K.RUNS, b"a", b"1"), (K.RUNS, b"b", b"2")])
    store.write([(K.RUNS, b"c", b"3")])
    assert store.commits == before + 2


def test_closed_store_refuses(store: Store) -> None:
    store.close()
    with pytest.raises(StoreError):
        store.get(K.RUNS, b"a")
    with pytest.raises(StoreError):
        store.write([(K.RUNS, b"a", b"1")])
