"""The engine side of persistent state: the one place that reads and writes the ``state`` db.

Every call (``engine.state`` from client threads, ``ctx.state`` from steps in workers, relayed
by the dispatcher) comes here. A write is computed under one lock against the store *plus the
writes not yet committed* (an overlay), then handed to the store writer; its caller is answered
once the commit is durable. So a read-modify-write such as ``incr`` is atomic across any number
of concurrent callers without holding the lock through an fsync, and group commit still batches
the writes of many callers.

Each entry is an 8-byte expiry (milliseconds, 0: none) followed by the encoded value. Expired
entries read as missing; :meth:`StateStore.sweep` deletes them through the expiry index, and
the engine calls it in the background.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

from actorflow._clock import Clock
from actorflow.definition._options import parse_duration
from actorflow.errors import ClientError, DefinitionError
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value
from actorflow.store._protocol import Op, Store

__all__ = ["StateStore"]

_EXP = struct.Struct(">Q")
#: ``submit(ops, on_durable, on_error)``: hand ops to the store writer.
Submit = Callable[[list[Op], Callable[[], Any], Callable[[BaseException], Any]], None]
#: ``done(ok, answer_or_error)``.
Done = Callable[[bool, Any], Any]
_WRITES = frozenset({"set", "mset", "incr", "delete", "clear"})


class StateStore:
    """Runs state operations; see the module docstring.

    Args:
        store: the engine's store (read directly; written only through ``submit``).
        clock: decides what has expired.
        submit: hands a write to the store writer.
    """

    def __init__(self, store: Store, clock: Clock, submit: Submit) -> None:
        self._store = store
        self._clock = clock
        self._submit = submit
        self._lock = threading.Lock()
        # Written but not yet durable: key -> [entry (None: deleted), writes in flight].
        self._overlay: dict[bytes, list[Any]] = {}

    # -- entry points ----------------------------------------------------------------------

    def call(self, op: str, scope: str, args: tuple[Any, ...], done: Done) -> None:
        """Run ``op`` and call ``done(ok, value)``: at once for reads, once durable for writes.

        Bad arguments are answered with ``done(False, ClientError)``; nothing is written.
        """
        try:
            with self._lock:
                answer, ops = self._run(op, scope, args)
                if ops:
                    self._hold(ops)
        except ClientError as exc:
            done(False, exc)
            return
        if not ops:
            done(True, answer)
            return

        def durable() -> None:
            self._release(ops)
            done(True, answer)

        def failed(exc: BaseException) -> None:
            self._release(ops)
            done(False, exc)

        self._submit(ops, durable, failed)

    def sweep(self) -> int:
        """Delete every expired entry from the store (without waiting); return how many."""
        now_ms = round(self._clock.now() * 1000)
        ops: list[Op] = []
        with self._lock:
            for key in self._due(now_ms):
                _, scope, name = K.decode_state_expiry_key(key)
                ops.append((K.STATE, key, None))
                skey = K.state_key(scope, name)
                entry = self._entry(skey)
                # Only if it still expires: a key set again since then has a new index entry.
                if entry is not None and 0 < _EXP.unpack_from(entry)[0] <= now_ms:
                    ops.append((K.STATE, skey, None))
            removed = sum(1 for op in ops if op[1][:1] == b"d")
            if ops:
                self._hold(ops)
        if ops:
            # Not waited for: the overlay answers reads until the write is durable.
            self._submit(ops, lambda: self._release(ops), lambda _: self._release(ops))
        return removed

    def _due(self, now_ms: int) -> list[bytes]:
        """Expiry index keys due by ``now_ms`` (the index is ordered by due time)."""
        out: list[bytes] = []
        after: bytes | None = None
        while True:
            page = self._store.scan(K.STATE, b"x", after=after, limit=1000)
            for key, _ in page:
                if _EXP.unpack_from(key, 1)[0] > now_ms:
                    return out
                out.append(key)
            if len(page) < 1000:
                return out
            after = page[-1][0]

    # -- operations ------------------------------------------------------------------------

    def _run(self, op: str, scope: str, args: tuple[Any, ...]) -> tuple[Any, list[Op]]:
        now_ms = round(self._clock.now() * 1000)
        if op == "get":
            return self._value(self._key(scope, args[0]), now_ms), []
        if op == "exists":
            return self._value(self._key(scope, args[0]), now_ms) is not None, []
        if op == "mget":
            keys = _list(args[0], "keys")
            return [self._value(self._key(scope, k), now_ms) for k in keys], []
        if op == "keys":
            return self._keys(scope, _prefix(args[0]), now_ms), []
        if op == "set":
            key = self._key(scope, args[0])
            return None, self._put(scope, args[0], key, _bytes(args[1]), _expiry(args[2], now_ms))
        if op == "mset":
            items = _list(args[0], "values")
            expiry = _expiry(args[1], now_ms)
            ops: list[Op] = []
            for name, value in items:
                ops += self._put(scope, name, self._key(scope, name), _bytes(value), expiry)
            return None, ops
        if op == "incr":
            key = self._key(scope, args[0])
            by = args[1]
            if not isinstance(by, int) or isinstance(by, bool):
                raise ClientError(f"by: expected an integer, got {by!r}")
            entry = self._entry(key)
            expiry = 0
            current = 0
            if entry is not None and not _expired(entry, now_ms):
                expiry = _EXP.unpack_from(entry)[0]
                value = decode_value(entry[_EXP.size :], f"state {args[0]!r}")
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ClientError(
                        f"state key {args[0]!r}: incr expected an integer value, "
                        f"it holds {type(value).__name__}"
                    )
                current = value
            new = current + by
            data = b"J" + str(new).encode()
            return new, self._put(scope, args[0], key, data, expiry)
        if op == "delete":
            key = self._key(scope, args[0])
            existed = self._value(key, now_ms) is not None
            return existed, [(K.STATE, key, None)] if self._entry(key) is not None else []
        if op == "clear":
            prefix = _prefix(args[0])
            names = self._keys(scope, prefix, None)
            live = self._keys(scope, prefix, now_ms)
            return len(live), [(K.STATE, K.state_key(scope, n), None) for n in names]
        raise ClientError(f"unknown state operation {op!r}")

    def _put(self, scope: str, name: str, key: bytes, data: bytes, expiry: int) -> list[Op]:
        ops: list[Op] = [(K.STATE, key, _EXP.pack(expiry) + data)]
        if expiry:
            ops.append((K.STATE, K.state_expiry_key(expiry / 1000, scope, name), b""))
        return ops

    def _key(self, scope: str, name: Any) -> bytes:
        problem = K.part_problem(name, "state key", K.MAX_USER_KEY)
        if problem is not None:
            raise ClientError(problem)
        return K.state_key(scope, name)

    def _entry(self, key: bytes) -> bytes | None:
        held = self._overlay.get(key)
        if held is not None:
            return held[0]  # type: ignore[no-any-return]
        return self._store.get(K.STATE, key)

    def _value(self, key: bytes, now_ms: int) -> bytes | None:
        entry = self._entry(key)
        if entry is None or _expired(entry, now_ms):
            return None
        return entry[_EXP.size :]

    def _keys(self, scope: str, prefix: str, now_ms: int | None) -> list[str]:
        """Keys under ``prefix``; only live ones when ``now_ms`` is given."""
        base = K.state_prefix(scope)
        start = K.state_prefix(scope, prefix)
        found: dict[bytes, bytes | None] = dict(self._store.scan(K.STATE, start))
        for key, held in self._overlay.items():
            if key.startswith(start):
                found[key] = held[0]
        out = []
        for key, entry in found.items():
            if entry is None or (now_ms is not None and _expired(entry, now_ms)):
                continue
            out.append(key[len(base) :].decode())
        return sorted(out)

    # -- the overlay -----------------------------------------------------------------------

    def _hold(self, ops: list[Op]) -> None:
        overlay = self._overlay
        for _, key, value in ops:
            held = overlay.get(key)
            if held is None:
                overlay[key] = [value, 1]
            else:
                held[0] = value
                held[1] += 1

    def _release(self, ops: list[Op]) -> None:
        with self._lock:
            overlay = self._overlay
            for _, key, _ in ops:
                held = overlay.get(key)
                if held is not None:
                    held[1] -= 1
                    if held[1] <= 0:
                        del overlay[key]


def _expired(entry: bytes, now_ms: int) -> bool:
    (expiry,) = _EXP.unpack_from(entry)
    return bool(0 < expiry <= now_ms)


def _expiry(ttl: Any, now_ms: int) -> int:
    if ttl is None:
        return 0
    try:
        seconds = parse_duration(ttl, "ttl")
    except DefinitionError as exc:
        raise ClientError("; ".join(exc.problems)) from None
    return now_ms + max(1, round(seconds * 1000))


def _prefix(prefix: Any) -> str:
    if not isinstance(prefix, str):
        raise ClientError(f"prefix: expected a string, got {prefix!r}")
    if prefix:  # "" lists every key
        problem = K.part_problem(prefix, "prefix", K.MAX_USER_KEY)
        if problem is not None:
            raise ClientError(problem)
    return prefix


def _list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ClientError(f"{what}: expected a list, got {type(value).__name__}")
    return list(value)


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ClientError("value: expected an encoded value")
    return value
