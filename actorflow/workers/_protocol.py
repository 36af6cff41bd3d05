"""The wire protocol between the engine and a worker process.

Each worker has its own duplex pipe carrying length-prefixed frames (the framing of
``multiprocessing.Connection.send_bytes``), each a pickled tuple tagged by its first element.
Tuples pickle several times faster than dataclasses, and this is the engine's hottest path.

Engine to worker:

- ``(TASKS, [task, ...])``: run these in order. A task is ``(task_id, run_id, step, attempt,
  workflow_id, fn_key, fn_ref, fn_blob, payload, last, log_level, item, index, call, error,
  details)``;
  ``fn_ref``/``fn_blob`` are sent only the first time this worker sees ``fn_key`` (else None:
  it has it cached). ``payload``, ``last``, ``item`` and ``error`` (for an error handler, the
  step's exception) are encoded values (:mod:`actorflow.store._codec`) or None, decoded only
  if the step reads them; ``details`` are the previous attempt's last heartbeat details.
  ``call`` 1 calls ``fn(item, ctx)``, 0 ``fn(ctx)``, 4 ``fn(*item)``; 2 or 3 mark a
  chunk of tiny item steps (then ``item`` is a list of ``(step, last, item, index)`` and the
  low bit says how to call ``fn`` for each). Several tasks in
  one frame is how a busy worker is kept fed (prefetch) without one system call per task.
- ``(CANCEL, task_id)``: do not start this queued task (answered with ``SKIPPED``).
- ``(REPLY, req_id, ok, value)``: the answer to a worker's request.
- ``(UNMAP, [segment, ...])``: the engine unlinked these shared-memory segments; drop the
  mappings.
- ``(STOP,)``: exit after the current task; each task still queued is answered ``SKIPPED``.

Worker to engine:

- ``(HELLO, pid)``: started and ready for tasks.
- ``(DONE, task_id, ok, data, started, ended)``: a task finished. ``ok``: ``data`` is the
  encoded output; else ``data`` is an :data:`ErrorTuple`. Times are wall clock. For a chunk,
  ``data`` is a list with one ``(ok, data, started, ended)`` per item.
- ``(SKIPPED, task_id)``: a cancelled task (or one queued at ``STOP``) was dropped unstarted.
- ``(REQUEST, req_id, task_id, op, arg, step)``: a question for the engine while a task runs
  (``op`` ``"output"``: the encoded output of step ``arg`` of the task's run, as seen from
  ``step``, the step running: inside a chunk, the current item's; ``"ref"``: a large value
  sent by reference; ``"shm"``: segments for output buffers of sizes ``arg``, answered with
  their names or None; ``"state"``, ``"service"``).
- ``(LOG, task_id, levelno, message, step, created)``: a record logged through ``ctx.log``
  (``created``: when, by the worker's clock; the message formatted with its traceback).
- ``(BEAT, task_id, details)``: ``ctx.heartbeat(details)``: the step is alive (``details``
  encoded, or None); it resets the step's ``heartbeat_timeout`` and is kept for its next
  attempt.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, Final

__all__ = [
    "BEAT",
    "CALL_ARGS",
    "CALL_CHUNK",
    "CALL_CTX",
    "CALL_HANDLER",
    "CALL_ITEM",
    "CANCEL",
    "DONE",
    "HELLO",
    "LOG",
    "REPLY",
    "REQUEST",
    "SKIPPED",
    "STOP",
    "TASKS",
    "UNMAP",
    "ErrorTuple",
    "FrameReader",
    "encode_frame",
    "frame_bytes",
]

#: How a task's function is called (``TaskSpec.call``, a task tuple's ``call``), as bits.
CALL_CTX: Final = 0  # fn(ctx)
CALL_ITEM: Final = 1  # fn(item, ctx): a for_each or batch body step
CALL_CHUNK: Final = 2  # the task is a chunk of item steps (with CALL_ITEM: each fn(item, ctx))
CALL_ARGS: Final = 4  # fn(*item): a code workflow's step (item: its argument list)
CALL_HANDLER: Final = 8  # told to the harness's intercept for an error handler (fn(ctx))

TASKS: Final = "T"
CANCEL: Final = "C"
REPLY: Final = "R"
STOP: Final = "X"
UNMAP: Final = "U"
HELLO: Final = "H"
DONE: Final = "D"
SKIPPED: Final = "S"
REQUEST: Final = "Q"
LOG: Final = "L"
BEAT: Final = "B"

#: (type qualified name, MRO qualified names, message, traceback text, pickled exception|None,
#: the traceback without the engine's frames). A worker of an older version sends the first
#: five alone.
ErrorTuple = tuple[str, tuple[str, ...], str, str, bytes | None, str]

_I32 = struct.Struct("!i")
_U64 = struct.Struct("!Q")


def encode_frame(msg: tuple[Any, ...]) -> bytes:
    """One frame, as ``Connection.send_bytes`` would write it (4-byte length, then pickle)."""
    return frame_bytes(pickle.dumps(msg, 5))


def frame_bytes(body: bytes) -> bytes:
    """``body`` framed as ``Connection.send_bytes`` frames it (its length first)."""
    n = len(body)
    if n > 0x7FFFFFFF:
        return _I32.pack(-1) + _U64.pack(n) + body
    return _I32.pack(n) + body


class FrameReader:
    """Reads whatever a pipe holds in one system call and splits it into messages.

    ``Connection.recv_bytes`` costs two reads per message (header, then body); a busy worker
    may have several results waiting, so one large read serves them all.

    Args:
        fd: the pipe's file descriptor (the caller keeps it open).
    """

    __slots__ = ("_buf", "_fd")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    def read(self) -> list[tuple[Any, ...]]:
        """Read what is available and return every complete message (maybe none).

        Raises:
            EOFError: the other end closed the pipe.
        """
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            raise EOFError("worker pipe closed")
        buf = self._buf
        buf += chunk
        out: list[tuple[Any, ...]] = []
        pos, end = 0, len(buf)
        with memoryview(buf) as view:  # no copy per message; released before the resize
            while end - pos >= 4:
                (n,) = _I32.unpack_from(view, pos)
                head = 4
                if n == -1:
                    if end - pos < 12:
                        break
                    (n,) = _U64.unpack_from(view, pos + 4)
                    head = 12
                if end - pos - head < n:
                    break
                start = pos + head
                out.append(pickle.loads(view[start : start + n]))
                pos = start + n
        if pos:
            del buf[:pos]
        return out
