"""Encoded records and values cost their own size in memory, not their encoder's buffer.

orjson 3.12 and later return bytes over-allocated to at least 4 KiB and never shrunk. The
engine keeps encoded records until their commit, and small outputs inside step records for
a step's life, so each one held 10-20 times its size: a fan-out of 100,000 items peaked at
~2.4 KB per item of traced memory. Measured with tracemalloc, which sees the real blocks
(``sys.getsizeof`` reports only the logical length). A fan-out's output, joined from its
items' encoded outputs, is assembled without a copy of each.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from actorflow.runtime.supervision._nodes import encode_list
from actorflow.store import encode_value
from actorflow.store._records import dump_record, inline_output

ITEM_RECORD = {
    "name": "identity_item",
    "path": "items[123]/identity_item",
    "node": 1,
    "kind": "step",
    "status": "succeeded",
    "attempt": 1,
    "attempts": [{"attempt": 1, "status": "succeeded", "started_at": 1796410108.777355}],
    "output": 123,
}


def _held_bytes_each(make: Callable[[], Any], n: int = 2000) -> float:
    """Traced memory per object of ``n`` results of ``make()`` kept alive."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [make() for _ in range(n)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(kept) == n
    return size / n


@pytest.mark.parametrize(
    ("what", "make", "length"),
    [
        ("a record", lambda: dump_record(ITEM_RECORD), len(dump_record(ITEM_RECORD))),
        ("a value", lambda: encode_value(ITEM_RECORD), len(encode_value(ITEM_RECORD))),
        ("an inline output", lambda: inline_output(encode_value([1, 2, 3])), 8),
    ],
)
def test_an_encoded_record_held_costs_about_its_size(
    what: str, make: Callable[[], Any], length: int
) -> None:
    each = _held_bytes_each(make)
    # Object headers and the list slot come on top of the bytes themselves; a 4 KiB
    # encoder buffer would be ten times this bound.
    assert each < length + 200, (what, each, length)


def test_a_fan_outs_output_is_assembled_in_about_its_own_size() -> None:
    """``encode_list`` joins a fan-out's encoded outputs: it once made a copy of each (and a
    list of the copies) at once, ~50 bytes per item at the end of a million-item run."""
    parts = [encode_value(i) for i in range(100_000)]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        out = encode_list(parts)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert out == encode_value(list(range(100_000)))
    # The result, and the buffer it is copied from (with its growth): not a copy per item.
    assert peak < 3 * len(out), (peak, len(out))
