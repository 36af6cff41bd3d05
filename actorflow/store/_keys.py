"""The key layout of the store: every named database and how its keys are built.

Names (workflow ids, step names, run ids) never contain NUL (definitions reject it), so NUL
separates key parts and a prefix scan on ``part + NUL`` never matches a longer sibling.

==============  ================================================  ===============================
database        key                                               value
==============  ================================================  ===============================
meta            ``format``                                        format version, ASCII int
definitions     workflow id                                       JSON summary of the plan
runs            run id                                            JSON run record
steps           run id NUL step name                              JSON step record
values          run id NUL            (the run's payload)         encoded value (see _codec)
                run id NUL step name  (a step's output)
index           ``s`` NUL status NUL run id                       empty (runs by status)
                ``w`` NUL workflow NUL run id                     empty (runs by workflow)
                ``e`` NUL workflow NUL end ms (8 bytes) run id    empty (finished runs by end
                                                                  time: retention, format 3)
                ``a`` NUL run id NUL token                        empty (approvals by run,
                                                                  format 3)
timers          due ms (8 bytes, big-endian) run id NUL name      JSON timer record
history         run id NUL seq (8 bytes, big-endian)              events, little-endian int32s
idempotency     workflow NUL key                                  run id
state           ``d`` NUL scope NUL key                           expiry ms (8 bytes) + value
                ``x`` due ms (8 bytes) scope NUL key              empty (expiry index)
events          ``w`` NUL event NUL run id NUL step path          JSON waiter record
                ``b`` NUL event NUL key NUL event id              buffered event (see _waits)
                ``i`` NUL run id NUL step path NUL event id       event delivered to a waiter
approvals       token                                             JSON approval record
schedules       workflow NUL trigger index                        JSON schedule record
blobs           ``b`` NUL blob id                                 JSON blob record (run, size,
                                                                  segment): see runtime/_blobs
                ``r`` NUL run id NUL blob id                      empty (blobs by run)
==============  ================================================  ===============================

A blob's bytes are a file under ``data_dir/blobs`` (see ``store/_blobfiles.py``); meta holds
``blob_token``, the store's random token that prefixes its blob ids and segment names.

The scope of ``state`` is ``""`` for the engine's global state, else the workflow id.

Run ids are time-ordered, so every run-keyed scan is chronological.

Format 3 added the ``e`` and ``a`` index entries, so that retention finds the runs that ended
before a time without reading every run, and a run's approvals without reading every
approval; ``store/_migrations.py`` writes them for a store of format 2.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

__all__ = [
    "ALL_DBS",
    "APPROVALS",
    "BLOBS",
    "BLOB_TOKEN_KEY",
    "DEFINITIONS",
    "EVENTS",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "HISTORY",
    "IDEMPOTENCY",
    "INDEX",
    "META",
    "RUNS",
    "SCHEDULES",
    "STATE",
    "STEPS",
    "TIMERS",
    "VALUES",
    "approval_index_key",
    "approval_index_prefix",
    "approval_key",
    "blob_key",
    "blob_run_key",
    "blob_run_prefix",
    "buffered_prefix",
    "decode_end_index_key",
    "decode_history_seq",
    "decode_state_expiry_key",
    "decode_timer_key",
    "end_index_key",
    "end_index_prefix",
    "history_key",
    "history_prefix",
    "idempotency_key",
    "inbox_prefix",
    "payload_key",
    "run_key",
    "schedule_key",
    "state_expiry_key",
    "state_key",
    "state_prefix",
    "status_index_key",
    "status_index_prefix",
    "step_key",
    "step_prefix",
    "timer_key",
    "waiter_key",
    "workflow_index_key",
    "workflow_index_prefix",
]

META: Final = "meta"
DEFINITIONS: Final = "definitions"
RUNS: Final = "runs"
STEPS: Final = "steps"
VALUES: Final = "values"
INDEX: Final = "index"
TIMERS: Final = "timers"
IDEMPOTENCY: Final = "idempotency"
HISTORY: Final = "history"
STATE: Final = "state"
EVENTS: Final = "events"
APPROVALS: Final = "approvals"
SCHEDULES: Final = "schedules"
BLOBS: Final = "blobs"

ALL_DBS: Final = (
    META, DEFINITIONS, RUNS, STEPS, VALUES, INDEX, TIMERS, IDEMPOTENCY, HISTORY,
    STATE, EVENTS, APPROVALS, SCHEDULES, BLOBS,
)  # fmt: skip

FORMAT_KEY: Final = b"format"
BLOB_TOKEN_KEY: Final = b"blob_token"
#: The store format this code writes; a store with a higher number is refused.
FORMAT_VERSION: Final = 3

_SEP = b"\x00"
_DUE = struct.Struct(">Q")


def run_key(run_id: str) -> bytes:
    """Key of a run record in ``runs``."""
    return run_id.encode()


def step_prefix(run_id: str) -> bytes:
    """Prefix of all step records (and values) of a run."""
    return run_id.encode() + _SEP


def step_key(run_id: str, step: str) -> bytes:
    """Key of a step record in ``steps``, and of the step's output in ``values``."""
    return run_id.encode() + _SEP + step.encode()


def payload_key(run_id: str) -> bytes:
    """Key of a run's payload in ``values``."""
    return run_id.encode() + _SEP


def blob_key(blob_id: str) -> bytes:
    """Key of a blob record in ``blobs``."""
    return b"b" + _SEP + blob_id.encode()


def blob_run_prefix(run_id: str) -> bytes:
    """Prefix of a run's entries in the ``blobs`` by-run index."""
    return b"r" + _SEP + run_id.encode() + _SEP


def blob_run_key(run_id: str, blob_id: str) -> bytes:
    """A blob's entry in the by-run index."""
    return blob_run_prefix(run_id) + blob_id.encode()


def status_index_prefix(status: str) -> bytes:
    """Prefix of the runs in ``status``, in the ``index`` database."""
    return b"s" + _SEP + status.encode() + _SEP


def status_index_key(status: str, run_id: str) -> bytes:
    """Index entry of a run under its status."""
    return status_index_prefix(status) + run_id.encode()


def workflow_index_prefix(workflow: str) -> bytes:
    """Prefix of the runs of a workflow, in the ``index`` database."""
    return b"w" + _SEP + workflow.encode() + _SEP


def workflow_index_key(workflow: str, run_id: str) -> bytes:
    """Index entry of a run under its workflow."""
    return workflow_index_prefix(workflow) + run_id.encode()


def end_index_prefix(workflow: str) -> bytes:
    """Prefix of a workflow's finished runs, by end time, in the ``index`` database."""
    return b"e" + _SEP + workflow.encode() + _SEP


def end_index_key(workflow: str, ended: float, run_id: str) -> bytes:
    """Index entry of a finished run under its end time (milliseconds, sortable)."""
    return end_index_prefix(workflow) + _DUE.pack(max(0, round(ended * 1000))) + run_id.encode()


def decode_end_index_key(key: bytes, prefix: bytes) -> tuple[float, str]:
    """(end seconds, run id) of an end-index entry whose workflow prefix is ``prefix``."""
    (ended_ms,) = _DUE.unpack_from(key, len(prefix))
    return ended_ms / 1000.0, key[len(prefix) + _DUE.size :].decode()


def approval_index_prefix(run_id: str) -> bytes:
    """Prefix of a run's approvals, in the ``index`` database."""
    return b"a" + _SEP + run_id.encode() + _SEP


def approval_index_key(run_id: str, token: str) -> bytes:
    """Index entry of an approval under its run."""
    return approval_index_prefix(run_id) + token.encode()


def timer_key(due: float, run_id: str, name: str) -> bytes:
    """Key of a durable timer; ordered by due time (milliseconds)."""
    return _DUE.pack(max(0, round(due * 1000))) + run_id.encode() + _SEP + name.encode()


def decode_timer_key(key: bytes) -> tuple[float, str, str]:
    """Split a timer key into (due seconds, run id, timer name)."""
    (due_ms,) = _DUE.unpack_from(key)
    run_id, _, name = key[_DUE.size :].partition(_SEP)
    return due_ms / 1000.0, run_id.decode(), name.decode()


def history_prefix(run_id: str) -> bytes:
    """Prefix of a run's history records."""
    return run_id.encode() + _SEP


def history_key(run_id: str, seq: int) -> bytes:
    """Key of a run's ``seq``-th history record (records sort in order)."""
    return history_prefix(run_id) + _DUE.pack(seq)


def decode_history_seq(key: bytes) -> int:
    """The sequence number of a history key."""
    (seq,) = _DUE.unpack_from(key, len(key) - _DUE.size)
    return int(seq)


def idempotency_key(workflow: str, key: str) -> bytes:
    """Key mapping (workflow, idempotency key) to a run id.

    Long user keys are replaced by their SHA-256 so the whole key stays under LMDB's limit.
    """
    raw = key.encode()
    if len(raw) > 256:
        raw = b"#sha256:" + hashlib.sha256(raw).hexdigest().encode()
    return workflow.encode() + _SEP + raw


def state_key(scope: str, key: str) -> bytes:
    """Key of a state entry (``scope`` ``""`` is the engine's global state)."""
    return b"d" + _SEP + scope.encode() + _SEP + key.encode()


def state_prefix(scope: str, prefix: str = "") -> bytes:
    """Prefix of a scope's state entries whose keys start with ``prefix``."""
    return b"d" + _SEP + scope.encode() + _SEP + prefix.encode()


def state_expiry_key(due: float, scope: str, key: str) -> bytes:
    """Entry of the expiry index: state keys ordered by when they expire."""
    return b"x" + _DUE.pack(max(0, round(due * 1000))) + scope.encode() + _SEP + key.encode()


def decode_state_expiry_key(raw: bytes) -> tuple[float, str, str]:
    """Split an expiry index key into (due seconds, scope, key)."""
    (due_ms,) = _DUE.unpack_from(raw, 1)
    scope, _, key = raw[1 + _DUE.size :].partition(_SEP)
    return due_ms / 1000.0, scope.decode(), key.decode()


def waiter_key(event: str, run_id: str, path: str) -> bytes:
    """Key of a run's wait for ``event`` (rebuilds the waiter registry at start)."""
    return b"w" + _SEP + event.encode() + _SEP + run_id.encode() + _SEP + path.encode()


def buffered_prefix(event: str, key: str) -> bytes:
    """Prefix of the buffered (not yet taken) events of one name and key."""
    return b"b" + _SEP + event.encode() + _SEP + key.encode() + _SEP


def inbox_prefix(run_id: str, path: str) -> bytes:
    """Prefix of the events delivered to one waiting step and not yet taken."""
    return b"i" + _SEP + run_id.encode() + _SEP + path.encode() + _SEP


def approval_key(token: str) -> bytes:
    """Key of an approval record (the token itself)."""
    return token.encode()


def schedule_key(workflow: str, index: int) -> bytes:
    """Key of a schedule's record: its last fired slot and what waits."""
    return workflow.encode() + _SEP + str(index).encode()
