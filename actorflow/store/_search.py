r"""Search attributes: typed values on a run, indexed so that ``runs(where=...)`` need not scan.

Data flow. A run gets attributes at its trigger (``trigger(..., search_attributes=)``) and a
code workflow changes them with ``ctx.upsert_search_attributes`` (a marker in its history).
Either way the run record keeps them (``search_attributes``) and the same write puts one
index entry per attribute in the ``index`` db, and deletes the entries of values replaced
(:func:`index_ops`); retention deletes a pruned run's entries with it. ``list_runs`` reads
:func:`parse_where`'s conditions: an equality is answered from its entries newest first (run
ids are time-ordered and end the key), so a page reads about a page of entries; ranges scan
their attribute's entries in value order, then sort the ids they found; every other
condition is checked on the run records the page reads.

An entry's key: ``sa \0 name \0 tag value \0 run id``, its value empty. The tag is the
type: ``s`` a string (UTF-8, no control characters), ``n`` a number (int and float alike,
as a float64 in an order-preserving byte form), ``b`` a boolean. A condition matches values
of its own type only (``"amount>": 100`` never matches ``"amount": "120"``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from actorflow.errors import ClientError
from actorflow.store import _keys as K

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_TEXT",
    "Cond",
    "check_attributes",
    "index_ops",
    "matches",
    "parse_where",
    "scan_ids",
]

#: Most search attributes on one run.
MAX_ATTRIBUTES = 32
#: Longest string value, in UTF-8 bytes.
MAX_TEXT = 256

_SEP = b"\x00"
_ROOT = b"sa" + _SEP
_OPS = (">=", "<=", "!=", ">", "<")  # suffixes of a where key (longest first)
_DOUBLE = struct.Struct(">d")
_ID = 24  # a run id's length (``new_run_id``: 24 hex digits)
_ABSENT = object()


class Cond(NamedTuple):
    """One condition of a ``where``: ``name op value`` (op ``=``, ``!=``, ``>``, ``>=``...)."""

    name: str
    op: str
    value: Any


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, bool | int | float):
        if isinstance(value, float) and value != value:
            raise ClientError(f"{where}: NaN cannot be searched")
        return
    if isinstance(value, str):
        try:
            data = value.encode()
        except UnicodeEncodeError:
            raise ClientError(f"{where}: must be valid Unicode text (a lone surrogate)") from None
        if len(data) > MAX_TEXT or any(ord(c) < 32 for c in value):
            raise ClientError(
                f"{where}: expected a string of at most {MAX_TEXT} bytes without control "
                f"characters, got {value[:40]!r}"
            )
        return
    raise ClientError(f"{where}: expected a string, a number or a boolean, got {value!r}")


def check_attributes(attrs: Any, what: str, removals: bool = False) -> dict[str, Any]:
    """``attrs`` checked: names of attributes, values a string, a number or a boolean.

    ``removals``: None is allowed as a value (an upsert removing the attribute).

    Raises:
        ClientError: naming the attribute and what was expected.
    """
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        raise ClientError(f"{what}: expected a mapping of name to value, got {attrs!r}")
    if len(attrs) > MAX_ATTRIBUTES:
        raise ClientError(f"{what}: at most {MAX_ATTRIBUTES} attributes, got {len(attrs)}")
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        problem = K.part_problem(name, f"{what}: a name", K.MAX_NAME)
        if problem is None and any(name.endswith(op) for op in (*_OPS, "=")):
            problem = f"{what}: {name!r}: a name may not end with an operator ({', '.join(_OPS)})"
        if problem is not None:
            raise ClientError(problem)
        if value is None and removals:
            out[name] = None
            continue
        _check_value(value, f"{what}[{name!r}]")
        out[name] = value
    return out


def _encode(value: Any) -> bytes:
    """Tag and bytes of a value, ordered as the values are (within one type)."""
    if isinstance(value, bool):
        return b"b1" if value else b"b0"
    if isinstance(value, int | float):
        raw = bytearray(_DOUBLE.pack(float(value)))
        if raw[0] & 0x80:  # negative: every bit flipped, so larger magnitudes sort first
            raw = bytearray(b ^ 0xFF for b in raw)
        else:
            raw[0] |= 0x80
        return b"n" + bytes(raw)
    return b"s" + str(value).encode()


def _name_prefix(name: str) -> bytes:
    return _ROOT + name.encode() + _SEP


def _key(name: str, value: Any, run_id: str) -> bytes:
    return _name_prefix(name) + _encode(value) + _SEP + run_id.encode()


def index_ops(
    run_id: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[tuple[str, bytes, bytes | None]]:
    """The index writes that take a run's attributes from ``old`` to ``new``."""
    ops: list[tuple[str, bytes, bytes | None]] = []
    for name, value in old.items():
        if name not in new or _encode(new[name]) != _encode(value):
            ops.append((K.INDEX, _key(name, value, run_id), None))
    for name, value in new.items():
        if name not in old or _encode(old[name]) != _encode(value):
            ops.append((K.INDEX, _key(name, value, run_id), b""))
    return ops


def parse_where(where: Any) -> list[Cond]:
    """``{"customer": "c-42", "amount>": 100}`` as conditions.

    Raises:
        ClientError: a key or value that cannot be searched, naming it.
    """
    if where is None:
        return []
    if not isinstance(where, Mapping):
        raise ClientError(
            f"where: expected a mapping such as {{'customer': 'c-42'}}, got {where!r}"
        )
    conds = []
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise ClientError(f"where: expected attribute names, got {key!r}")
        op = next((o for o in _OPS if key.endswith(o)), "=")
        name = key[: -len(op)].rstrip() if op != "=" else key
        if not name:
            raise ClientError(f"where: {key!r} names no attribute")
        _check_value(value, f"where[{key!r}]")
        conds.append(Cond(name, op, value))
    return conds


def _kind(value: Any) -> str:
    """A value's type, as the index tags it (a bool is not a number here)."""
    if isinstance(value, bool):
        return "b"
    return "n" if isinstance(value, int | float) else "s"


def matches(attrs: Mapping[str, Any] | None, conds: list[Cond]) -> bool:
    """Whether a run with ``attrs`` meets every condition (values of the same type only).

    Compared as Python values: numbers numerically and strings by code point, which is the
    order of the index's bytes (a float64's order-preserving form, UTF-8).
    """
    if not attrs:
        return False
    for name, op, want in conds:
        have = attrs.get(name, _ABSENT)
        if have is _ABSENT or _kind(have) != _kind(want):
            return False  # absent, or another type: never equal, never in range
        if not (
            (op == "=" and have == want)
            or (op == "!=" and have != want)
            or (op == ">" and have > want)
            or (op == ">=" and have >= want)
            or (op == "<" and have < want)
            or (op == "<=" and have <= want)
        ):
            return False
    return True


def scan_ids(store: Any, cond: Cond, before: str | None = None, batch: int = 256) -> Iterator[str]:
    """Run ids whose attribute meets ``cond``, from its index entries.

    An equality yields newest first, from ``before`` (exclusive) on, reading ``batch``
    entries at a time as it goes (a page's size: a page reads about a page). A range
    yields in value order (ids of one value oldest first); the caller sorts them.
    """
    prefix = _name_prefix(cond.name)
    want = _encode(cond.value)
    if cond.op == "=":
        exact = prefix + want + _SEP
        after = exact + before.encode() if before is not None else None
        while True:
            rows = store.scan(K.INDEX, exact, after=after, reverse=True, limit=batch)
            for key, _ in rows:
                yield key[len(exact) :].decode()
            if len(rows) < batch:
                return
            after = rows[-1][0]
            batch = min(4 * batch, 4096)  # other conditions drop some: read more next
    typed = prefix + want[:1]
    lower = {">": want + _SEP + b"\xff", ">=": want}.get(cond.op)
    after = prefix + lower if lower is not None else None
    while True:
        rows = store.scan(K.INDEX, typed, after=after, limit=1024)
        for key, _ in rows:
            # A number's 8 bytes may hold NULs: the id is the key's fixed-size end instead.
            value, run_id = key[len(prefix) : -_ID - 1], key[-_ID:]
            if (cond.op == "<" and value >= want) or (cond.op == "<=" and value > want):
                return
            yield run_id.decode()
        if len(rows) < 1024:
            return
        after = rows[-1][0]
