"""Self-describing value encoding for everything stored or sent to a worker.

An encoded value is one tag byte followed by the body:

- ``J``: UTF-8 JSON. Used when the value is strictly JSON-compatible (dict with str keys,
  list, str, int, float (finite), bool, None, with exact types), so that the CLI and other
  tools can read it without the user's code.
- ``P``: pickle protocol 5 (or cloudpickle, for lambdas and local classes).
- ``B`` and ``S``: pickle protocol 5 whose large out-of-band buffers (numpy arrays, large
  bytes...) live elsewhere: ``B`` names durable blobs (the stored form), ``S`` names
  shared-memory segments (the form a worker receives). After the tag: a little-endian u16
  count, then per buffer its size (u64), the length of its id (u16) and the id (ASCII), then
  the in-band pickle. See :mod:`actorflow.workers._shm`.

Tuples, int-keyed dicts, enums and other types that JSON would silently change are pickled, so a
value always decodes to what was stored. Later codecs (compression, encryption) wrap an encoded
value in another tag, which keeps every record self-describing.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import cloudpickle
import orjson

from actorflow.errors import InvalidPayload, StoreCorrupted

__all__ = [
    "TAG_BLOB",
    "TAG_JSON",
    "TAG_PICKLE",
    "TAG_SHARED",
    "BufferSink",
    "decode_value",
    "describe_value",
    "encode_in_band",
    "encode_value",
    "is_json_compatible",
    "large_ids",
    "pack_large",
    "set_resolver",
    "set_thread_sink",
    "unpack_large",
]

TAG_JSON = 0x4A  # "J"
TAG_PICKLE = 0x50  # "P"
TAG_BLOB = 0x42  # "B"
TAG_SHARED = 0x53  # "S"

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


class BufferSink(Protocol):
    """Where a process puts the large out-of-band buffers of the values it encodes."""

    #: Buffers of more than this many bytes leave the pickle.
    threshold: int

    def place(self, inband: bytes, buffers: list[memoryview], what: str) -> bytes | None:
        """Store ``buffers``; return the encoded value (``B`` or ``S``).

        None refuses: the value is then pickled whole.
        """
        ...


_local = threading.local()


def set_thread_sink(sink: BufferSink | None) -> None:
    """From now on, :func:`encode_value` on this thread sends large buffers to ``sink``."""
    _local.sink = sink


def encode_value(value: Any, what: str = "value", sink: BufferSink | None = None) -> bytes:
    """Encode ``value`` as tagged bytes (JSON when compatible, else pickle protocol 5).

    Args:
        value: anything JSON-compatible or picklable (cloudpickle is tried for lambdas).
        what: how to name the value in an error, e.g. ``"payload"``.
        sink: where buffers above its threshold go (default: the one of
            :func:`set_thread_sink` on this thread, if any); without one, everything is in-band.

    Raises:
        InvalidPayload: the value is neither JSON-compatible nor picklable.
    """
    if value is None:
        return _ENCODED_NONE
    if is_json_compatible(value):
        return b"J" + orjson.dumps(value)
    if sink is None:
        sink = getattr(_local, "sink", None)
    if sink is not None and sink.threshold > 0:
        large = _encode_large(value, what, sink)
        if large is not None:
            return large
    return encode_in_band(value, what)


def encode_in_band(value: Any, what: str = "value") -> bytes:
    """``value`` pickled (``P``) with every buffer in band, whatever its size.

    Raises:
        InvalidPayload: the value is not picklable.
    """
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


# -- large values ------------------------------------------------------------------------------

_COUNT = struct.Struct("<H")
_ENTRY = struct.Struct("<QH")
#: Containers up to this length (two levels down) are searched for large ``bytes`` and
#: ``bytearray`` objects, which pickle never hands out of band by itself.
_WRAP_MAX = 64


class _BigBytes:
    """Pickles a large ``bytes`` or ``bytearray`` through an out-of-band buffer.

    Pickle writes both in-band by itself, without asking ``reducer_override``.
    """

    __slots__ = ("reduced",)

    def __init__(self, data: bytes | bytearray) -> None:
        # Kept for the whole dump: pickle memoizes the argument tuple by id, and a freed
        # tuple's id can be reused by the next one (which would then read as this one).
        self.reduced = (type(data), (pickle.PickleBuffer(data),))

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.reduced


def _rebuild_view(buf: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    view = memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if fmt != "B" or len(shape) != 1:
        view = view.cast(fmt, shape)  # type: ignore[call-overload]
    return view


def _wrap(value: Any, threshold: int, depth: int = 0) -> Any:
    """``value`` with large ``bytes`` in small containers (up to two levels down) wrapped."""
    t = type(value)
    if t is bytes or t is bytearray:
        return _BigBytes(value) if len(value) > threshold else value
    if depth >= 3 or not _has_big_bytes(value, threshold, depth):
        return value
    if t is dict:
        return {k: _wrap(v, threshold, depth + 1) for k, v in value.items()}
    return t(_wrap(v, threshold, depth + 1) for v in value)


def _has_big_bytes(value: Any, threshold: int, depth: int) -> bool:
    t = type(value)
    if t is bytes or t is bytearray:
        return len(value) > threshold
    if depth >= 3 or t not in (list, tuple, dict) or len(value) > _WRAP_MAX:
        return False
    items = value.values() if t is dict else value
    return any(_has_big_bytes(v, threshold, depth + 1) for v in items)


def _reduce_large(obj: Any, threshold: int) -> Any:
    """Out-of-band reductions pickle does not make by itself."""
    t = type(obj)
    if t is memoryview:
        shape = tuple(obj.shape or ())
        if obj.nbytes > threshold and obj.c_contiguous:
            return _rebuild_view, (pickle.PickleBuffer(obj), obj.format, shape)
        # Not contiguous, or small: a contiguous copy (in C order), so it still round-trips.
        return _rebuild_view, (obj.tobytes(), obj.format, shape)
    np = sys.modules.get("numpy")
    if np is not None and t is np.ndarray and obj.nbytes > threshold:
        flags = obj.flags
        if not (flags.c_contiguous or flags.f_contiguous) and not obj.dtype.hasobject:
            # numpy pickles a strided view in-band; a contiguous copy goes out of band.
            return np.ascontiguousarray(obj).__reduce_ex__(5)
    return NotImplemented


class _LargeMixin:
    """Large-buffer reductions for a pickler class (before it in the bases)."""

    threshold = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Reductions made here live until the dump ends: pickle memoizes their argument
        # tuples by id, and a freed tuple's id may come back for the next reduction.
        self.keep: list[Any] = []

    def reducer_override(self, obj: Any) -> Any:
        reduced = _reduce_large(obj, self.threshold)
        if reduced is NotImplemented:
            fallback = getattr(super(), "reducer_override", None)
            return NotImplemented if fallback is None else fallback(obj)
        self.keep.append(reduced)
        return reduced


class _LargePickler(_LargeMixin, pickle.Pickler):
    pass


class _LargeCloudPickler(_LargeMixin, cloudpickle.CloudPickler):  # type: ignore[misc]
    pass


def _encode_large(value: Any, what: str, sink: BufferSink) -> bytes | None:
    """Encode with large buffers out of band; None if there are none (or the sink refuses)."""
    threshold = sink.threshold
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: pickle copies it in-band
            return True
        if raw.nbytes > threshold:
            buffers.append(raw)
            return False
        return True

    obj = _wrap(value, threshold)
    out = io.BytesIO()
    try:
        pickler: Any = _LargePickler(out, 5, buffer_callback=keep)
        pickler.threshold = threshold
        pickler.dump(obj)
        data = out.getvalue()
        main = b"__main__" in data
    except Exception:
        main = True
    if main:
        buffers.clear()
        out = io.BytesIO()
        try:
            pickler = _LargeCloudPickler(out, 5, buffer_callback=keep)
            pickler.threshold = threshold
            pickler.dump(obj)
        except Exception:
            return None  # encode_value tries again and reports the error
        data = out.getvalue()
    if not buffers:
        return b"P" + data
    return sink.place(data, buffers, what)


def pack_large(tag: int, entries: Sequence[tuple[str, int]], inband: bytes | memoryview) -> bytes:
    """A ``B`` or ``S`` value: ``entries`` are (id, size) per out-of-band buffer."""
    parts: list[bytes | memoryview] = [bytes((tag,)), _COUNT.pack(len(entries))]
    for ident, size in entries:
        raw = ident.encode("ascii")
        parts.append(_ENTRY.pack(size, len(raw)))
        parts.append(raw)
    parts.append(inband)
    return b"".join(parts)


def unpack_large(data: bytes | memoryview) -> tuple[list[tuple[str, int]], memoryview]:
    """The (id, size) entries and the in-band pickle of a ``B`` or ``S`` value.

    Raises:
        StoreCorrupted: the header is truncated.
    """
    view = memoryview(data)
    try:
        (count,) = _COUNT.unpack_from(view, 1)
        pos = 1 + _COUNT.size
        entries = []
        for _ in range(count):
            size, n = _ENTRY.unpack_from(view, pos)
            pos += _ENTRY.size
            ident = bytes(view[pos : pos + n]).decode("ascii")
            if len(ident) != n:
                raise ValueError("truncated id")
            pos += n
            entries.append((ident, size))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise StoreCorrupted(f"large value: damaged header ({exc})") from exc
    return entries, view[pos:]


def large_ids(data: bytes | memoryview) -> list[str]:
    """The blob (or segment) ids a ``B`` (``S``) value refers to; [] for other values."""
    if not data or data[0] not in (TAG_BLOB, TAG_SHARED):
        return []
    return [ident for ident, _ in unpack_large(data)[0]]


#: Per tag (``B``, ``S``): how this process turns (id, size) into a buffer.
_resolvers: dict[int, Callable[[str, int], Any]] = {}


def set_resolver(tag: int, resolve: Callable[[str, int], Any] | None) -> None:
    """Set how ``tag`` values' buffers are found in this process (None: not available)."""
    if resolve is None:
        _resolvers.pop(tag, None)
    else:
        _resolvers[tag] = resolve


def _decode_large(data: bytes | memoryview, what: str) -> Any:
    entries, inband = unpack_large(data)
    resolve = _resolvers.get(data[0])
    if resolve is None:
        kind = "blobs" if data[0] == TAG_BLOB else "shared-memory segments"
        raise StoreCorrupted(
            f"{what}: a large value whose buffers are in {kind}, which this process cannot "
            "reach (read it through a running engine)"
        )
    buffers = [resolve(ident, size) for ident, size in entries]
    return pickle.loads(inband, buffers=buffers)


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
    if tag in (TAG_BLOB, TAG_SHARED):
        return _decode_large(data, what)
    raise StoreCorrupted(f"{what}: unknown value tag {bytes(data[:1])!r}")


def describe_value(data: bytes | memoryview, limit: int = 200) -> str:
    """Return a short human-readable rendering, without unpickling anything.

    Its cost is bounded too: of a large JSON value only the first ``4 * limit`` bytes (at
    least ``limit`` characters) are decoded, as steps' inputs are described at dispatch.
    """
    if not data:
        return "<empty>"
    if data[0] == TAG_JSON:
        text = bytes(data[1 : 4 * limit + 1]).decode(errors="replace")
        if len(text) <= limit and len(data) <= 4 * limit + 1:
            return text
        return text[: limit - 3] + "..."
    if data[0] == TAG_PICKLE:
        return f"<pickled object, {len(data) - 1} bytes>"
    if data[0] in (TAG_BLOB, TAG_SHARED):
        try:
            entries, inband = unpack_large(data)
        except StoreCorrupted:
            return f"<damaged large value, {len(data)} bytes>"
        total = sum(size for _, size in entries)
        return (
            f"<pickled object, {len(inband)} bytes + {len(entries)} large buffer(s), "
            f"{_human(total)}>"
        )
    return f"<unknown encoding {bytes(data[:1])!r}, {len(data)} bytes>"


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"
