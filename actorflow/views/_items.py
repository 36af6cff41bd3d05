"""The inputs of for_each items' steps, rendered from the items their loop keeps.

A step whose input is its for_each item does not copy the item into its record (a million
items would each keep one): the record says so (``input_item``, see store/_records.py) and
the loop's items are in ``values`` under ``<loop path>#items``, written once when the
for_each started. This renders item ``i`` of that list as an input recorded in the record
would be: small JSON as its text, a larger value as ``describe_value`` renders it. The list
is read and parsed once per loop, and only if it is JSON: a pickled list is never unpickled
(the input then reads as a placeholder).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from actorflow.store import _keys as K
from actorflow.store._codec import describe_value
from actorflow.store._protocol import Store
from actorflow.store._records import INLINE_INPUT_MAX

__all__ = ["LoopItems"]

#: A step's path inside item ``i`` of a loop: ``<loop path>[i]/<name>``.
_ITEM_PATH = re.compile(r"^(?P<loop>.+)\[(?P<index>\d+)\]/[^/]+$")


class LoopItems:
    """The items of a run's for_each loops, read as steps ask (see the module docstring).

    Args:
        store: the store.
        run_id: the run.
    """

    def __init__(self, store: Store, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self._loops: dict[str, list[Any] | str] = {}  # loop path -> its items, or why not

    def render(self, path: str) -> str:
        """The input of the step at ``path``, which is its for_each item."""
        m = _ITEM_PATH.match(path)
        if m is None:
            return "(its item)"
        items = self._items(m["loop"])
        index = int(m["index"])
        if isinstance(items, str):
            return items
        if index >= len(items):
            return "(its item: not in the loop's items)"
        encoded = b"J" + orjson.dumps(items[index])
        if len(encoded) <= INLINE_INPUT_MAX + 1:
            return encoded[1:].decode()
        return describe_value(encoded)

    def _items(self, loop: str) -> list[Any] | str:
        known = self._loops.get(loop)
        if known is not None:
            return known
        raw = self._store.get(K.VALUES, K.step_key(self._run_id, loop + "#items"))
        found: list[Any] | str
        if raw is None:
            found = "(its item: the loop's items are gone)"
        elif raw[:1] != b"J":
            found = "(its item, of items that are not JSON)"
        else:
            try:
                value = orjson.loads(raw[1:])
            except orjson.JSONDecodeError:
                value = None
            found = value if isinstance(value, list) else "(its item)"
        self._loops[loop] = found
        return found
