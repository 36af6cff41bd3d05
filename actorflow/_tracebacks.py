"""Tracebacks a user can read: the user's frames, in the user's files.

Two things stand between a failing step and a traceback its author can read, and this module
handles both:

- **The engine's frames.** A step is called from the worker's loop, through dispatch and the
  interceptor chain; a code workflow's function is driven by the engine's deterministic
  loop. :func:`format_error` formats an exception twice: in full (``traceback``, unchanged)
  and for the user (``user_traceback``), without the frames of the ``actorflow`` package and
  without the ``asyncio`` / ``concurrent`` / ``threading`` / ``contextlib`` plumbing the engine
  put on the stack around them (that plumbing is kept where the user's own code called
  it). The frames are told apart by walking the traceback objects (each frame's module
  name, or its file inside the package directory), not by parsing text. Chained exceptions
  ("The above exception..." / "During handling of...") are trimmed each on its own; one
  with no frame of the user's is left whole, and if no frame of the user's is found
  anywhere (an error of the engine), the user's traceback is the full one.
- **Code sent by value.** A function that cannot be imported in a worker (one of
  ``__main__``, a script run as ``python app.py``; a lambda; a local function) travels as
  cloudpickle bytes. cloudpickle (3.1 and later) writes every code object's file name as
  ``"<dynamic-code>"`` (so its bytes do not depend on where the code was defined), which
  leaves a traceback without a file name, line source or a way to find either.
  :func:`dumps_by_value` pickles with cloudpickle but keeps each code object's real file
  name (made absolute), so a worker's traceback names the script and ``linecache`` shows
  its lines when the file exists on the worker's machine.

Both are used wherever the engine records an error (``workers/_main.error_tuple`` for steps
in workers, ``runtime/supervision/_nodes.error_info`` for code run in the engine,
``runtime/supervision/_code_run`` for code workflows' functions) and ships code to workers
(step functions in ``definition/_spec.function_ref``, the interceptor chain, services).
"""

from __future__ import annotations

import io
import os
import traceback
import types
from collections import ChainMap
from collections.abc import Iterator
from typing import Any

__all__ = ["PACKAGE_DIR", "dumps_by_value", "format_error", "is_engine_frame"]

#: The directory of the ``actorflow`` package: frames of files under it are the engine's.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: Modules whose frames are plumbing: the engine's where the engine called them (an async
#: step's event loop, the code workflow loop's futures), the user's where the user did.
_PLUMBING = ("asyncio", "concurrent", "threading", "contextlib", "selectors")

#: What cloudpickle writes for a code object's file name (3.1 and later).
_PLACEHOLDER = "<dynamic-code>"

_ENGINE, _PLUMB, _USER = 0, 1, 2


def is_engine_frame(frame: types.FrameType) -> bool:
    """Whether ``frame`` runs code of the ``actorflow`` package (by module, else by file)."""
    return _kind(frame) == _ENGINE


def _kind(frame: types.FrameType) -> int:
    name = frame.f_globals.get("__name__")
    if isinstance(name, str) and name:
        root = name.partition(".")[0]
        if root == "actorflow":
            return _ENGINE
        if root in _PLUMBING:
            return _PLUMB
    filename = frame.f_code.co_filename
    if filename.startswith(PACKAGE_DIR) or os.path.abspath(filename).startswith(PACKAGE_DIR):
        return _ENGINE
    return _USER


def _frames(tb: types.TracebackType | None) -> Iterator[types.FrameType]:
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _users(frames: list[types.FrameType]) -> list[bool]:
    """Which frames (outermost first) to show the user.

    The engine's are left out; plumbing is shown only where the frame that called it (the
    nearest one before it that is not plumbing) is the user's.
    """
    keep: list[bool] = []
    called_by_user = False
    for frame in frames:
        kind = _kind(frame)
        if kind == _PLUMB:
            keep.append(called_by_user)
        else:
            called_by_user = kind == _USER
            keep.append(called_by_user)
    return keep


def _trim(te: traceback.TracebackException, exc: BaseException | None, seen: set[int]) -> bool:
    """Drop the engine's frames from ``te`` (built from ``exc``) and its chained exceptions.

    Returns whether any frame of the user's was found. ``te`` and ``exc`` are walked side by
    side: ``TracebackException`` keeps one summary per traceback entry, in order, and its
    ``__cause__``, ``__context__`` and ``exceptions`` mirror the exception's.
    """
    if id(te) in seen:
        return False
    seen.add(id(te))
    found = False
    if exc is not None:
        frames = list(_frames(exc.__traceback__))
        if frames and len(frames) == len(te.stack):
            keep = _users(frames)
            if any(keep):
                found = True
                if not all(keep):
                    kept = [fs for fs, k in zip(te.stack, keep, strict=True) if k]
                    te.stack = traceback.StackSummary.from_list(kept)
    if te.__cause__ is not None:
        cause = exc.__cause__ if exc is not None else None
        te.__cause__ = _as_text(te.__cause__, cause)
        found |= _trim(te.__cause__, cause, seen)
    if te.__context__ is not None:
        context = exc.__context__ if exc is not None else None
        te.__context__ = _as_text(te.__context__, context)
        found |= _trim(te.__context__, context, seen)
    subs = getattr(exc, "exceptions", None)
    for i, sub in enumerate(te.exceptions or ()):
        inner = subs[i] if isinstance(subs, tuple) and i < len(subs) else None
        found |= _trim(sub, inner if isinstance(inner, BaseException) else None, seen)
    return found


def _as_text(
    te: traceback.TracebackException, exc: BaseException | None
) -> traceback.TracebackException:
    """A stand-in for a traceback's text (``errors.RemoteTraceback``) shows its user version.

    Such an exception has no traceback of its own and carries, beside its text, the text
    without the engine's frames in ``user_traceback`` (a step's exception, re-raised in the
    engine, is chained to one).
    """
    user = getattr(exc, "user_traceback", None)
    if exc is None or exc.__traceback__ is not None or not isinstance(user, str) or not user:
        return te
    if user == str(exc) or exc.__cause__ is not None or exc.__context__ is not None:
        return te
    return traceback.TracebackException(type(exc), Exception(user), None, compact=True)


def format_error(exc: BaseException) -> tuple[str, str]:
    """``exc`` formatted in full (as ``traceback.format_exception``) and for the user.

    The second leaves out the engine's frames (see the module docstring), keeping the
    ``Traceback (most recent call last):`` header, the user's frames, the chained
    exceptions and the exception's own line; it is the full text when the traceback holds
    no frame of the user's.
    """
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    full = "".join(te.format())
    try:
        if not _trim(te, exc, set()):
            return full, full
        return full, "".join(te.format())
    except Exception:  # a traceback we cannot take apart must not lose the error
        return full, full


# -- code sent by value ---------------------------------------------------------------------


def _located_code_reduce(code: types.CodeType) -> Any:
    """The reduction cloudpickle makes of a code object, with its real file name put back."""
    import cloudpickle

    ctor, args = cloudpickle.Pickler.dispatch_table[types.CodeType](code)
    filename = code.co_filename
    if not filename.startswith("<"):
        filename = os.path.abspath(filename)
    return ctor, tuple(filename if a == _PLACEHOLDER else a for a in args)


def _pickler() -> type[Any]:
    import cloudpickle

    global _LocatedPickler
    if _LocatedPickler is None:

        class LocatedPickler(cloudpickle.Pickler):  # type: ignore[misc]
            """cloudpickle keeping each code object's file name (see the module docstring)."""

            dispatch_table = ChainMap(
                {types.CodeType: _located_code_reduce}, cloudpickle.Pickler.dispatch_table
            )

        _LocatedPickler = LocatedPickler
    return _LocatedPickler


_LocatedPickler: type[Any] | None = None


def dumps_by_value(obj: Any, protocol: int = 5) -> bytes:
    """``cloudpickle.dumps(obj)``, with the code it holds keeping its real file names.

    The bytes are as deterministic as cloudpickle's for code defined in one place: the file
    name is where the code was defined, made absolute.
    """
    with io.BytesIO() as buf:
        _pickler()(buf, protocol=protocol).dump(obj)
        return buf.getvalue()
