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
                run id NUL NUL step   (a task recorded, never     JSON ``{"attempt": n}`` (see
                                      started)                    runtime/persistence/_unstarted.py)
index           ``s`` NUL status NUL run id                       empty (runs by status)
                ``w`` NUL workflow NUL run id                     empty (runs by workflow)
                ``e`` NUL workflow NUL end ms (8 bytes) run id    empty (finished runs by end
                                                                  time: retention, format 3)
                ``a`` NUL run id NUL approval key                 empty (approvals by run,
                                                                  format 3)
timers          due ms (8 bytes, big-endian) run id NUL name      JSON timer record
history         run id NUL seq (8 bytes, big-endian)              events, little-endian int32s
idempotency     workflow NUL key                                  run id
state           ``d`` NUL scope NUL key                           expiry ms (8 bytes) + value
                ``x`` due ms (8 bytes) scope NUL key              empty (expiry index)
events          ``w`` NUL event NUL run id NUL step path          JSON waiter record
                ``b`` NUL event NUL key NUL event id              buffered event (see _waits)
                ``i`` NUL run id NUL step path NUL event id       event delivered to a waiter
approvals       ``sha256:`` hex SHA-256 of the token              JSON approval record (with
                                                                  the token)
schedules       workflow NUL trigger index                        JSON schedule record
blobs           ``b`` NUL blob id                                 JSON blob record (run, size,
                                                                  segment): see runtime/blobs
                ``r`` NUL run id NUL blob id                      empty (blobs by run)
logs            run id NUL step path NUL attempt (4 bytes) seq    JSON log record ``{"time",
                (4 bytes, both big-endian)                        "level", "message"}``
                run id NUL step path NUL attempt (4 bytes) FF*4   JSON ``{"dropped": n}``
==============  ================================================  ===============================

Key budget: LMDB refuses a key over :data:`MAX_KEY` bytes, and a refused key would fail the
whole group commit that carried it. So every part of a key that comes from outside has a limit
(:data:`MAX_NAME` for names, :data:`MAX_USER_KEY` for user-chosen keys, :data:`MAX_PATH` for a
step's path), checked where it enters (definitions, client calls, ``ctx`` calls), and the
limits are chosen so that no key built here from parts within them can pass :data:`MAX_KEY`
(``tests/store/test_key_budget.py`` builds each key from its longest parts).

A blob's bytes are a file under ``data_dir/blobs`` (see ``store/_blobfiles.py``); meta holds
``blob_token``, the store's random token that prefixes its blob ids and segment names.

With codecs configured, the values of ``values``, ``runs``, ``steps``, ``history``,
``state``, ``events``, ``approvals`` and ``logs``, and the blob files, are sealed (see
``store/_sealing.py``); keys never are, which is why an approval is keyed by a hash of its
token.

The scope of ``state`` is ``""`` for the engine's global state, else the workflow id.

Run ids are time-ordered, so every run-keyed scan is chronological.

``logs`` holds what steps logged through ``ctx.log`` (``store/_logs.py``). It came after
format 5 without a new format number: a store without it opens unchanged (a writable open
creates the empty database, a read-only one reads no records), and a release that does not
know it ignores it.

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
    "LOGS",
    "MAX_KEY",
    "MAX_NAME",
    "MAX_PATH",
    "MAX_USER_KEY",
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
    "decode_log_key",
    "decode_state_expiry_key",
    "decode_timer_key",
    "end_index_key",
    "end_index_prefix",
    "history_key",
    "history_prefix",
    "idempotency_key",
    "inbox_prefix",
    "legacy_approval_key",
    "log_key",
    "log_prefix",
    "part_problem",
    "payload_key",
    "plan_key",
    "poll_key",
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
    "unstarted_key",
    "unstarted_prefix",
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
LOGS: Final = "logs"

ALL_DBS: Final = (
    META, DEFINITIONS, RUNS, STEPS, VALUES, INDEX, TIMERS, IDEMPOTENCY, HISTORY,
    STATE, EVENTS, APPROVALS, SCHEDULES, BLOBS, LOGS,
)  # fmt: skip

FORMAT_KEY: Final = b"format"
BLOB_TOKEN_KEY: Final = b"blob_token"
#: The store format this code writes; a store with a higher number is refused.
FORMAT_VERSION: Final = 5

#: LMDB's compile-time limit on a key's length, in bytes.
MAX_KEY: Final = 511
#: Longest name: workflow ids, node and command names, event, signal and update names.
MAX_NAME: Final = 200
#: Longest user-chosen key: event keys, state keys (idempotency keys are hashed past it).
MAX_USER_KEY: Final = 256
#: Longest step path: a node's name with the ``loop[index]/`` prefixes of its loops.
MAX_PATH: Final = 256
#: Digits allowed for a for_each item or while iteration index in a step path.
INDEX_DIGITS: Final = 10


def part_problem(value: object, what: str, limit: int) -> str | None:
    """What is wrong with ``value`` as a key part (None if nothing).

    A part must be a non-empty ``str`` without NUL (NUL separates key parts) whose UTF-8
    encoding has at most ``limit`` bytes. The message names ``what`` and the limit.
    """
    if not isinstance(value, str) or not value:
        return f"{what}: expected a non-empty string, got {value!r}"
    if "\x00" in value:
        return f"{what}: must not contain NUL, got {value[:60]!r}"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return f"{what}: must be valid Unicode text (it has a lone surrogate): {value[:60]!r}"
    if size > limit:
        return f"{what}: expected at most {limit} bytes (UTF-8), got {size}"
    return None


_SEP = b"\x00"
_DUE = struct.Struct(">Q")
_ATTEMPT_SEQ = struct.Struct(">II")


def run_key(run_id: str) -> bytes:
    """Key of a run record in ``runs``."""
    return run_id.encode()


def plan_key(workflow: str, shape: str) -> bytes:
    """Key of a graph workflow's structure under ``shape``, in ``definitions``.

    Beside the definition record (keyed by the workflow id alone): ids hold no NUL.
    """
    return workflow.encode() + _SEP + b"plan" + _SEP + shape.encode()


def step_prefix(run_id: str) -> bytes:
    """Prefix of all step records (and values) of a run."""
    return run_id.encode() + _SEP


def step_key(run_id: str, step: str) -> bytes:
    """Key of a step record in ``steps``, and of the step's output in ``values``."""
    return run_id.encode() + _SEP + step.encode()


def payload_key(run_id: str) -> bytes:
    """Key of a run's payload in ``values``."""
    return run_id.encode() + _SEP


def unstarted_prefix(run_id: str) -> bytes:
    """Prefix of a run's never-started attempts in ``values`` (no name is empty or has NUL)."""
    return run_id.encode() + _SEP + _SEP


def unstarted_key(run_id: str, step: str) -> bytes:
    """Key in ``values`` of a task of ``step`` that was recorded but never started."""
    return unstarted_prefix(run_id) + step.encode()


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


def approval_index_key(run_id: str, key: bytes) -> bytes:
    """Index entry of an approval under its run: the approval's key (never its token)."""
    return approval_index_prefix(run_id) + key


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


def log_prefix(run_id: str, step: str | None = None) -> bytes:
    """Prefix of a run's log records in ``logs`` (of one step's, if ``step`` is given)."""
    if step is None:
        return run_id.encode() + _SEP
    return run_id.encode() + _SEP + step.encode() + _SEP


def log_key(run_id: str, step: str, attempt: int, seq: int) -> bytes:
    """Key of the ``seq``-th log record of a step attempt (``0xFFFFFFFF``: its dropped count).

    Records sort by step, then attempt, then the order they were logged in.
    """
    return log_prefix(run_id, step) + _ATTEMPT_SEQ.pack(attempt, seq)


def decode_log_key(key: bytes, prefix_len: int) -> tuple[str, int, int]:
    """(step path, attempt, seq) of a log key whose run prefix is ``prefix_len`` bytes."""
    attempt, seq = _ATTEMPT_SEQ.unpack_from(key, len(key) - _ATTEMPT_SEQ.size)
    return key[prefix_len : len(key) - _ATTEMPT_SEQ.size - 1].decode(), attempt, seq


def idempotency_key(workflow: str, key: str) -> bytes:
    """Key mapping (workflow, idempotency key) to a run id.

    Long user keys are replaced by their SHA-256 so the whole key stays under LMDB's limit.
    """
    raw = key.encode()
    if len(raw) > MAX_USER_KEY:
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
    """Key of an approval record: a hash of its token.

    The token is a bearer secret (it resumes the run) and a key is never sealed, so the
    store keeps only its SHA-256; tokens are 192 random bits, so the hash cannot be
    reversed by guessing. The token itself is in the (sealed) record, for listings.
    """
    return b"sha256:" + hashlib.sha256(token.encode()).hexdigest().encode()


def legacy_approval_key(token: str) -> bytes:
    """Where stores written before tokens were hashed keep an approval: the token itself.

    A token is URL-safe base64, which has no ``:``, so the two forms never collide.
    """
    return token.encode()


def poll_key(workflow: str, index: int) -> bytes:
    """Key of a poll trigger's record (``schedules`` db): its last value and counters."""
    return workflow.encode() + _SEP + b"poll" + _SEP + str(index).encode()


def schedule_key(workflow: str, index: int) -> bytes:
    """Key of a schedule's record: its last fired slot and what waits."""
    return workflow.encode() + _SEP + str(index).encode()
