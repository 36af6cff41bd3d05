"""Durable state: the Store protocol, the LMDB store and its in-memory twin.

Everything durable lives here as bytes in named databases (see :mod:`._keys` for the layout);
values are self-describing (:mod:`._codec`). The engine's store-writer actor is the only caller
of :meth:`Store.write` while an engine runs.
"""

from __future__ import annotations

from actorflow.store._codec import decode_value, describe_value, encode_value, is_json_compatible
from actorflow.store._lmdb import LmdbStore
from actorflow.store._memory import MemoryStore
from actorflow.store._protocol import Op, Store, ensure_format

__all__ = [
    "LmdbStore",
    "MemoryStore",
    "Op",
    "Store",
    "decode_value",
    "describe_value",
    "encode_value",
    "ensure_format",
    "is_json_compatible",
]
