"""The client side of persistent state: ``ctx.state`` in steps and ``engine.state``.

A :class:`State` only encodes arguments and decodes answers; every call goes to the engine's
state store (``runtime/persistence/_state.py``), which alone reads and writes it. Inside a
worker process the call travels over the worker's pipe; in the engine it is a direct call.
Either way a write returns only once it is durable, so a step that set a key and then
crashed has still set it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from actorflow.store._codec import decode_value, encode_value

__all__ = ["State", "StateBackend"]

#: ``backend(op, scope, args)``: run one state operation on encoded values, return its answer.
StateBackend = Callable[[str, str, tuple[Any, ...]], Any]


class State:
    """A persistent key-value store with time-to-live, shared across runs and restarts.

    ``ctx.state`` in a step is its workflow's state; ``engine.state`` is the engine's global
    state (``engine.state.of(workflow_id)`` reaches a workflow's). Values are anything the
    store can record (JSON-compatible data, or any picklable object). Keys are non-empty
    strings. A key set with ``ttl`` reads as missing once it expires and is swept from the
    store in the background.

    Example::

        def count_visit(ctx):
            n = ctx.state.incr(f"visits:{ctx.payload['user']}")
            ctx.state.set("last-user", ctx.payload["user"], ttl="1h")
            return n
    """

    __slots__ = ("_backend", "scope")

    def __init__(self, backend: StateBackend, scope: str) -> None:
        self._backend = backend
        self.scope = scope

    def _call(self, op: str, *args: Any) -> Any:
        return self._backend(op, self.scope, args)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired."""
        raw = self._call("get", key)
        return default if raw is None else decode_value(raw, f"state {key!r}")

    def set(self, key: str, value: Any, ttl: str | float | timedelta | None = None) -> None:
        """Set ``key`` to ``value``; with ``ttl`` (a duration) it expires after that long."""
        self._call("set", key, encode_value(value, f"state value for {key!r}"), _ttl(ttl))

    def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` (missing counts as 0) and return the new value.

        Atomic: concurrent increments from any number of workers are all counted. The key
        keeps its expiry, if it has one.
        """
        if not isinstance(by, int) or isinstance(by, bool):
            raise TypeError(f"by: expected an integer, got {by!r}")
        return int(self._call("incr", key, by))

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        return bool(self._call("delete", key))

    def exists(self, key: str) -> bool:
        """True if ``key`` is set and not expired."""
        return bool(self._call("exists", key))

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix``, sorted."""
        return list(self._call("keys", prefix))

    def mget(self, keys: Iterable[str]) -> list[Any]:
        """The values of ``keys`` in order (None for a missing one)."""
        wanted = list(keys)
        raws = self._call("mget", wanted)
        return [
            None if r is None else decode_value(r, f"state {k!r}")
            for k, r in zip(wanted, raws, strict=True)
        ]

    def mset(self, values: Mapping[str, Any], ttl: str | float | timedelta | None = None) -> None:
        """Set several keys in one durable write (all or none)."""
        items = [(k, encode_value(v, f"state value for {k!r}")) for k, v in values.items()]
        self._call("mset", items, _ttl(ttl))

    def clear(self, prefix: str = "") -> int:
        """Remove every key starting with ``prefix`` (all keys by default); return how many."""
        return int(self._call("clear", prefix))

    def of(self, workflow_id: str) -> State:
        """The state of workflow ``workflow_id`` (what its steps see as ``ctx.state``)."""
        return State(self._backend, workflow_id)

    def __repr__(self) -> str:
        return f"<State {'global' if not self.scope else repr(self.scope)}>"


def _ttl(ttl: Any) -> Any:
    # Durations are parsed by the engine (one parser, one error message); timedelta travels
    # as seconds so the worker needs no engine code.
    return ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
