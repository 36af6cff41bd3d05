"""The wire protocol between the engine and a worker process.

Each worker has its own duplex pipe. Messages are plain tuples (they pickle several times faster
than dataclasses, and this is the hottest path in the engine), tagged by their first element:

Engine to worker:

- ``(TASK, task_id, run_id, step, attempt, workflow_id, fn_key, fn_ref, fn_blob, payload,
  last, log_level)``: run a step. ``fn_ref``/``fn_blob`` are sent only the first time this
  worker sees ``fn_key`` (else None: the worker has it cached). ``payload`` and ``last`` are
  encoded values (see :mod:`actorflow.store._codec`), decoded only if the step reads them.
- ``(REPLY, req_id, ok, value)``: the answer to a worker's request.
- ``(STOP,)``: exit after the current task.

Worker to engine:

- ``(HELLO, pid)``: started and ready for tasks.
- ``(DONE, task_id, ok, data, started, ended)``: a task finished. ``ok``: ``data`` is the
  encoded output; else ``data`` is an :data:`ErrorTuple`. Times are wall clock.
- ``(REQUEST, req_id, task_id, op, arg)``: a question for the engine while a task runs
  (``op`` ``"output"``: the encoded output of step ``arg`` of the task's run).
- ``(LOG, task_id, levelno, message)``: a record logged through ``ctx.log``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DONE", "HELLO", "LOG", "REPLY", "REQUEST", "STOP", "TASK", "ErrorTuple"]

TASK: Final = "T"
REPLY: Final = "R"
STOP: Final = "X"
HELLO: Final = "H"
DONE: Final = "D"
REQUEST: Final = "Q"
LOG: Final = "L"

#: (type qualified name, MRO qualified names, message, traceback text, pickled exception|None)
ErrorTuple = tuple[str, tuple[str, ...], str, str, bytes | None]
