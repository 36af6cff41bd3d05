"""Steps' caches (``af.Cache``; see ``definition/_cache.py`` for what users see).

Data flow, graph steps: ``_run`` asks :func:`lookup` before a step's first attempt; a hit
is recorded as the step's success (one attempt, kind ``cached``) without a task; a miss runs
the step, and ``_succeed`` calls :func:`remember`, which adds the output to the same commit
as the step's record, under ``#cache/<workflow>`` in the ``state`` db with the TTL's expiry
(its index entry lets the engine's state sweep delete it once expired). Entries have the
state db's layout (8-byte expiry in ms, then the encoded value), so they read as expired
the same way. Code workflows' steps (``ctx.step(..., cache=)``, ``_code_steps``) read and
write the same entries through :func:`read` and :func:`entry_ops`, their key computed from
the step's arguments.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from actorflow._types import StepStatus
from actorflow.definition._cache import cache_digest
from actorflow.definition._spec import StepSpec
from actorflow.runtime.supervision._nodes import call_user
from actorflow.runtime.supervision._steps import Leaf
from actorflow.store import _keys as K

if TYPE_CHECKING:
    from actorflow.runtime.supervision._graph_dispatch import GraphDispatch

__all__ = ["answer", "entry_ops", "lookup", "read", "remember"]

_EXP = struct.Struct(">Q")


def _where(sup: GraphDispatch, spec: StepSpec, frame: int, node: int) -> tuple[str, str] | Any:
    """(scope, key) of the step's entry, or the ErrorInfo of a key function that raised."""
    value, err = call_user(spec.cache.key, sup._ctx(frame, node))
    if err is not None:
        return err
    try:
        digest = cache_digest(value)
    except TypeError as exc:
        from actorflow.runtime.supervision._nodes import error_info

        return error_info(exc)
    return f"#cache/{sup.workflow_id}", f"{spec.name}:{digest}"


def lookup(sup: GraphDispatch, frame: int, node: int, leaf: Leaf) -> bool:
    """Answer the step from its cache if it can; True if it did (or its key failed it)."""
    spec = sup.plan.specs[node]
    if not isinstance(spec, StepSpec) or spec.cache is None or leaf.attempt != 0:
        return False
    where = _where(sup, spec, frame, node)
    if not isinstance(where, tuple):  # the key function raised: the step fails with it
        leaf.attempt = 1
        sup._leaf_failed_for_good(leaf, where)
        return True
    output = read(sup.core, *where)
    if output is None:
        return False
    answer(sup, leaf, output, "cached")
    return True


def read(core: Any, scope: str, key: str) -> bytes | None:
    """The cached output at (scope, key), or None (none, or expired)."""
    raw = core.store.get(K.STATE, K.state_key(scope, key))
    if raw is None or len(raw) < _EXP.size:
        return None
    (expiry,) = _EXP.unpack_from(raw)
    if expiry and expiry <= round(core.clock.now() * 1000):
        return None  # expired (the sweep has not deleted it yet)
    return bytes(raw[_EXP.size :])


def entry_ops(core: Any, scope: str, key: str, ttl: float, output: bytes) -> list[Any]:
    """The writes that keep ``output`` at (scope, key) for ``ttl`` seconds from now."""
    expiry = round((core.clock.now() + float(ttl)) * 1000)
    return [
        (K.STATE, K.state_key(scope, key), _EXP.pack(expiry) + output),
        (K.STATE, K.state_expiry_key(expiry / 1000, scope, key), b""),
    ]


def answer(sup: GraphDispatch, leaf: Leaf, output: bytes, kind: str) -> None:
    """Record ``leaf`` as succeeded with ``output`` without running it.

    One attempt of ``kind``: ``cached``, or ``mocked`` (``engine.retry(mock_steps=)``).
    """
    now = sup.core.clock.now()
    leaf.attempt = 1
    leaf.status = StepStatus.SUCCEEDED
    leaf.dispatched_at = leaf.started_at = leaf.ended_at = now
    leaf.attempts.append(
        {
            "attempt": 1, "status": "succeeded", "kind": kind, "started_at": now,
            "ended_at": now, "error": None, "pid": None,
        }
    )  # fmt: skip
    sup._succeed(leaf, output)


def remember(sup: GraphDispatch, leaf: Leaf, output: bytes) -> None:
    """Keep a step's fresh output in its cache (in the commit that records the step)."""
    spec = sup.plan.specs[leaf.node] if leaf.node >= 0 else None
    if not isinstance(spec, StepSpec) or spec.cache is None:
        return
    if leaf.attempts and leaf.attempts[-1].get("kind") == "cached":
        return  # the output came from the cache: its entry stays as it was
    where = _where(sup, spec, leaf.frame, leaf.node)
    if not isinstance(where, tuple):
        return  # it answered when the step started; it raises now: no entry, nothing else
    scope, key = where
    sup.fx.ops.extend(entry_ops(sup.core, scope, key, float(spec.cache.ttl), output))
