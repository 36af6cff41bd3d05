from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorflow.errors import InvalidPayload, StoreCorrupted
from actorflow.store import decode_value, describe_value, encode_value, is_json_compatible

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip_as_json(value: Any) -> None:
    data = encode_value(value)
    assert data[:1] == b"J"
    assert decode_value(data) == value


class Color(IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [(1, 2), {1: "a"}, Color.RED, {"t": (1,)}, b"bytes", 2**70, math.inf, {1.5}, [1, (2, 3)]],
)
def test_values_json_would_change_are_pickled(value: Any) -> None:
    data = encode_value(value)
    assert data[:1] == b"P"
    assert decode_value(data) == value
    assert type(decode_value(data)) is type(value)


def test_lambda_travels_by_cloudpickle() -> None:
    fn = decode_value(encode_value(lambda x: x + 1))
    assert fn(1) == 2


def test_unpicklable_names_the_field() -> None:
    import threading

    with pytest.raises(InvalidPayload, match=r"payload: cannot be stored.*lock"):
        encode_value(threading.Lock(), "payload")


def test_unknown_tag_is_corruption() -> None:
    with pytest.raises(StoreCorrupted, match="unknown value tag"):
        decode_value(b"Zxyz")
    with pytest.raises(StoreCorrupted):
        decode_value(b"J{not json")


def test_describe_never_unpickles() -> None:
    assert describe_value(encode_value({"a": 1})) == '{"a":1}'
    assert describe_value(encode_value((1, 2))).startswith("<pickled object")
    assert is_json_compatible({"a": [1, 2.5, None, True]})
    assert not is_json_compatible({"a": float("nan")})
