"""Group commit: many small writes from many senders land in few transactions."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

import actorflow as af
from actorflow.errors import StoreError
from actorflow.runtime.kernel._messages import Write
from actorflow.runtime.persistence._writer import StoreWriter
from actorflow.store import LmdbStore, MemoryStore
from actorflow.store import _keys as K


def test_concurrent_writes_share_transactions(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "db", durability="sync")
    writer = StoreWriter.start(store, 4096, False, lambda exc: None)
    futures: list[Future[None]] = []
    lock = threading.Lock()

    def sender(t: int) -> None:
        for i in range(100):
            done: Future[None] = Future()
            with lock:
                futures.append(done)
            writer.tell(
                Write(
                    [(K.RUNS, f"{t}-{i}".encode(), b"x" * 200)],
                    then=(lambda d=done: d.set_result(None),),
                )
            )

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        f.result(timeout=30)
    writer.stop()
    assert len(futures) == 1000
    assert all(store.get(K.RUNS, f"{t}-{i}".encode()) for t in range(10) for i in range(100))
    # 1,000 acknowledged writes, each durable (fsync'd) before its ack, in far fewer commits
    assert store.commits < 200, store.commits
    store.close()


def test_ack_only_after_commit_and_failure_is_reported(tmp_path: Path) -> None:
    class FailingStore(MemoryStore):
        fail = False

        def write(self, ops):  # type: ignore[no-untyped-def]
            if self.fail:
                raise StoreError("disk full")
            super().write(ops)

    store = FailingStore()
    failures: list[BaseException] = []
    writer = StoreWriter.start(store, 4096, False, failures.append)
    ok: Future[None] = Future()
    writer.tell(Write([(K.RUNS, b"a", b"1")], then=(lambda: ok.set_result(None),)))
    ok.result(timeout=10)
    assert store.get(K.RUNS, b"a") == b"1"
    store.fail = True
    bad: Future[None] = Future()
    writer.tell(
        Write(
            [(K.RUNS, b"b", b"1")],
            then=(lambda: bad.set_result(None),),
            on_error=bad.set_exception,
        )
    )
    with pytest.raises(StoreError, match="disk full"):
        bad.result(timeout=10)
    writer.stop()
    assert len(failures) == 1
    assert store.get(K.RUNS, b"b") is None


def test_a_write_is_not_left_pending_behind_a_proxy_call() -> None:
    """A Write that arrives while another message waits is committed once that message is
    handled, even when it is pykka's own (a proxy reading ``stats``), not another Write."""
    store = MemoryStore()
    writer = StoreWriter.start(store, 4096, False, lambda exc: None)
    busy, release = threading.Event(), threading.Event()
    done: Future[None] = Future()
    try:

        def hold() -> None:
            busy.set()
            release.wait(10)

        writer.tell(Write([(K.RUNS, b"first", b"1")], then=(hold,)))
        assert busy.wait(10)  # the writer is inside the first write's callback
        writer.tell(Write([(K.RUNS, b"second", b"2")], then=(lambda: done.set_result(None),)))
        stats = writer.proxy().stats  # queued behind the second write
        release.set()
        stats.get(timeout=10)
        done.result(timeout=5)  # committed without any further Write arriving
        assert store.get(K.RUNS, b"second") == b"2"
    finally:
        release.set()
        writer.stop()


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
def test_a_rejected_write_fails_alone(tmp_path: Path, kind: str) -> None:
    """A write the store refuses for its content (a key over LMDB's limit) fails only its
    sender: the writes grouped with it commit, in order, and the writer goes on."""
    store = LmdbStore(tmp_path / "db") if kind == "lmdb" else MemoryStore()
    failures: list[BaseException] = []
    writer = StoreWriter.start(store, 4096, False, failures.append)
    gate = threading.Event()
    first: Future[None] = Future()
    # The first write's callback holds the writer, so the next ones queue up and are
    # committed as one group.
    writer.tell(Write([(K.RUNS, b"first", b"1")], then=(gate.wait, lambda: first.set_result(None))))
    order: list[str] = []
    results: dict[str, Future[None]] = {}
    for name in ("a", "b", "bad", "c", "d", "e"):
        done: Future[None] = Future()
        results[name] = done
        key = b"k" * (K.MAX_KEY + 1) if name == "bad" else name.encode()
        writer.tell(
            Write(
                [(K.RUNS, key, b"v")],
                then=(lambda n=name, d=done: (order.append(n), d.set_result(None)),),
                on_error=done.set_exception,
            )
        )
    gate.set()
    first.result(timeout=10)
    for name, done in results.items():
        if name == "bad":
            with pytest.raises(af.WriteRejected, match="key too long"):
                done.result(timeout=10)
        else:
            done.result(timeout=10)
    assert order == ["a", "b", "c", "d", "e"]  # acknowledged in the order sent
    assert all(store.get(K.RUNS, n.encode()) == b"v" for n in "abcde")
    # The writer did not halt: later writes commit, and no failure was reported.
    later: Future[None] = Future()
    writer.tell(Write([(K.RUNS, b"later", b"1")], then=(lambda: later.set_result(None),)))
    later.result(timeout=10)
    stats = writer.proxy().stats.get(timeout=10)
    writer.stop()
    assert failures == []
    assert stats.rejected == 1
    store.close()
