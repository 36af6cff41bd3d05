"""Engine-side work for composite nodes: predicates, item selectors, assembled outputs.

Predicates (``if_``, ``while_``), item selectors (``for_each``, ``batch``) and subflow inputs
run in the engine, on the run's shard, with a context like a step's. Their errors are turned
into step failures of the composite node. Outputs of composites (a parallel's dict, a
for_each's list) are assembled from their parts' encoded outputs, without decoding them when
they are all JSON.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from actorflow._tracebacks import format_error
from actorflow.definition._options import qualified_name
from actorflow.runtime.kernel._messages import ErrorInfo
from actorflow.store._codec import TAG_JSON, decode_value, encode_value
from actorflow.workers._context import RunInfo, StepContext

__all__ = [
    "call_user",
    "encode_dict",
    "encode_list",
    "engine_context",
    "error_info",
]

_TAG = bytes([TAG_JSON])


def engine_context(
    run: RunInfo,
    payload: bytes,
    last: bytes | None,
    fetch: Callable[[str], bytes | None],
    item: bytes | None,
    index: int | None,
    host: Any = None,
    names: Callable[[], list[str]] | None = None,
) -> StepContext:
    """A context for code that runs in the engine (values decoded on first use)."""
    return StepContext(run, payload, last, fetch, item, index, host=host, names=names)


def error_info(exc: BaseException, kind: str = "error") -> ErrorInfo:
    """Describe an exception raised by user code in the engine (a predicate, a selector)."""
    t = type(exc)
    blob: bytes | None
    try:
        blob = pickle.dumps(exc, protocol=5)
        pickle.loads(blob)
    except Exception:
        blob = None
    full, user = format_error(exc)
    return ErrorInfo(
        kind,  # type: ignore[arg-type]
        qualified_name(t),
        tuple(qualified_name(c) for c in t.__mro__ if issubclass(c, BaseException)),
        _message(exc),
        full,
        blob,
        user_traceback=user,
    )


def call_user(fn: Callable[[StepContext], Any], ctx: StepContext) -> tuple[Any, ErrorInfo | None]:
    """Call a predicate or selector; return (value, None) or (None, the error)."""
    try:
        return fn(ctx), None
    except Exception as exc:
        return None, error_info(exc)


def items_of(value: Any) -> list[Any]:
    """The items an item selector returned, as a list.

    Raises:
        TypeError: the value is not iterable (or is a string or mapping, which would split
            into characters or keys: almost surely a mistake).
    """
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise TypeError(
            f"items: expected a list (or other iterable) of items, got {type(value).__name__}"
        )
    return list(value)


def encode_list(parts: Sequence[bytes | None]) -> bytes:
    """Encode a list whose elements are already encoded (None: a null).

    JSON elements are copied into one buffer, each over the comma before it, its tag byte
    (``b",".join(p[1:] ...)`` made a copy of every element, and a list of them, at once:
    ~50 bytes per item at the end of a fan-out of a million).
    """
    out = bytearray(_TAG)
    for p in parts:
        if p is None:
            out += b",null"
        elif p[0] == TAG_JSON:
            at = len(out)
            out += p
            out[at] = 0x2C  # ","
        else:  # an element not in JSON: the whole list is encoded from its values
            return encode_value([None if q is None else decode_value(q) for q in parts], "output")
    if len(out) == 1:
        return _TAG + b"[]"
    out[1] = 0x5B  # the first element's comma becomes the "["
    out += b"]"
    return bytes(out)


def encode_dict(names: Sequence[str], parts: Sequence[bytes | None]) -> bytes:
    """Encode a dict of already encoded values by name."""
    if all(p is None or p[:1] == _TAG for p in parts):
        body = b",".join(
            encode_value(n)[1:] + b":" + (b"null" if p is None else p[1:])
            for n, p in zip(names, parts, strict=True)
        )
        return _TAG + b"{" + body + b"}"
    return encode_value(
        {n: None if p is None else decode_value(p) for n, p in zip(names, parts, strict=True)},
        "output",
    )


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__qualname__}>"
