"""Self-describing value encoding for everything stored or sent to a worker.

An encoded value is one tag byte followed by the body:

- ``J``: UTF-8 JSON. Used when the value is strictly JSON-compatible (dict with str keys,
  list, str, int, float (finite), bool, None, with exact types), so that the CLI and other
  tools can read it without the user's code.
- ``P``: pickle protocol 5 (or cloudpickle, for lambdas and local classes).

Tuples, int-keyed dicts, enums and other types that JSON would silently change are pickled, so a
value always decodes to what was stored. Later codecs (compression, encryption) wrap an encoded
value in another tag, which keeps every record self-describing.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import cloudpickle
import orjson

from actorflow.errors import InvalidPayload, StoreCorrupted

__all__ = [
    "TAG_JSON",
    "TAG_PICKLE",
    "decode_value",
    "describe_value",
    "encode_value",
    "is_json_compatible",
]

TAG_JSON = 0x4A  # "J"
TAG_PICKLE = 0x50  # "P"

_ENCODED_NONE = b"Jnull"
_SCALARS = (str, bool, type(None))
# orjson encodes integers of at most 64 bits; larger ones are pickled.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def is_json_compatible(value: Any, _depth: int = 0) -> bool:
    """Return True if JSON would round-trip ``value`` to an equal value of the same types."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if t is float:
        return math.isfinite(value)
    if _depth > 200:  # deeper than json's own recursion comfort: let pickle handle it
        return False
    if t is list:
        return all(is_json_compatible(v, _depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and is_json_compatible(v, _depth + 1) for k, v in value.items())
    return False


def encode_value(value: Any, what: str = "value") -> bytes:
    """Encode ``value`` as tagged bytes (JSON when compatible, else pickle protocol 5).

    Args:
        value: anything JSON-compatible or picklable (cloudpickle is tried for lambdas).
        what: how to name the value in an error, e.g. ``"payload"``.

    Raises:
        InvalidPayload: the value is neither JSON-compatible nor picklable.
    """
    if value is None:
        return _ENCODED_NONE
    if is_json_compatible(value):
        return b"J" + orjson.dumps(value)
    try:
        data = pickle.dumps(value, protocol=5)
        # Workers do not import the user's main script, so objects of classes defined in
        # __main__ must travel by value: cloudpickle does that.
        if b"__main__" not in data:
            return b"P" + data
    except Exception:
        pass
    try:
        blob: bytes = cloudpickle.dumps(value, protocol=5)
        return b"P" + blob
    except Exception as exc:
        raise InvalidPayload(
            f"{what}: cannot be stored: expected JSON-compatible data or a picklable "
            f"object, got {type(value).__qualname__} ({type(exc).__name__}: {exc})"
        ) from exc


def decode_value(data: bytes | memoryview, what: str = "value") -> Any:
    """Decode bytes made by :func:`encode_value`.

    Raises:
        StoreCorrupted: the bytes carry no known tag or do not decode.
    """
    if not data:
        raise StoreCorrupted(f"{what}: empty encoded value")
    tag = data[0]
    if tag == TAG_JSON:
        try:
            return orjson.loads(data[1:])
        except orjson.JSONDecodeError as exc:
            raise StoreCorrupted(f"{what}: invalid JSON body: {exc}") from exc
    if tag == TAG_PICKLE:
        # Unpickling runs user code paths (classes' reducers); errors there are not store
        # corruption, so they propagate unchanged.
        return pickle.loads(data[1:])
    raise StoreCorrupted(f"{what}: unknown value tag {bytes(data[:1])!r}")


def describe_value(data: bytes | memoryview, limit: int = 200) -> str:
    """Return a short human-readable rendering, without unpickling anything."""
    if not data:
        return "<empty>"
    if data[0] == TAG_JSON:
        text = bytes(data[1:]).decode(errors="replace")
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if data[0] == TAG_PICKLE:
        return f"<pickled object, {len(data) - 1} bytes>"
    return f"<unknown encoding {bytes(data[:1])!r}, {len(data)} bytes>"
