"""Every store key built from parts within their limits fits LMDB's key limit.

The limits in ``store/_keys.py`` are what the boundaries check (definitions, client calls,
``ctx`` calls); this test is what makes them sound: each key function gets its longest
parts (in multi-byte characters, which cost the most bytes per character), and no key may
pass :data:`MAX_KEY`. A new key function must be added here, or the last test fails.
"""

from __future__ import annotations

import inspect

import pytest

from actorflow.store import _keys as K

RUN = "f" * 24  # run ids are 24 hex digits
EID = "f" * 24  # event ids are run-id shaped
NAME = "\u00e9" * (K.MAX_NAME // 2)  # 2 bytes per character: MAX_NAME bytes
USER = "\u00e9" * (K.MAX_USER_KEY // 2)
PATH = "p" * K.MAX_PATH
CHUNK = PATH + "#chunk/99999/9999999999"  # a chunk's values key (runtime/supervision/_graph.py)
FAR = 2**40  # a due time far in the future (seconds)

BUILT = {
    "run_key": K.run_key(RUN),
    "step_prefix": K.step_prefix(RUN),
    "step_key": K.step_key(RUN, CHUNK),
    "payload_key": K.payload_key(RUN),
    "plan_key": K.plan_key(NAME, "f" * 16),  # shapes are 16 hex digits
    "unstarted_prefix": K.unstarted_prefix(RUN),
    "unstarted_key": K.unstarted_key(RUN, CHUNK),
    "blob_key": K.blob_key(f"ffffffff.{RUN}.99999"),
    "blob_run_prefix": K.blob_run_prefix(RUN),
    "blob_run_key": K.blob_run_key(RUN, f"ffffffff.{RUN}.99999"),
    "status_index_prefix": K.status_index_prefix("continued"),
    "status_index_key": K.status_index_key("continued", RUN),
    "workflow_index_prefix": K.workflow_index_prefix(NAME),
    "workflow_index_key": K.workflow_index_key(NAME, RUN),
    "timer_key": K.timer_key(FAR, RUN, "retry:" + PATH),
    "history_prefix": K.history_prefix(RUN),
    "history_key": K.history_key(RUN, 2**63),
    # Idempotency keys up to the client limit (1024 bytes), and a signal's (per run).
    "idempotency_key": K.idempotency_key(NAME, "\u00e9" * 512),
    "signal_idempotency_key": K.idempotency_key(f"{RUN}/signal", "\u00e9" * 512),
    "state_key": K.state_key(NAME, USER),
    "state_prefix": K.state_prefix(NAME, USER),
    "state_expiry_key": K.state_expiry_key(FAR, NAME, USER),
    "waiter_key": K.waiter_key(NAME, RUN, PATH),
    "buffered_prefix": K.buffered_prefix(NAME, USER) + EID.encode(),
    "inbox_prefix": K.inbox_prefix(RUN, PATH) + EID.encode(),
    "approval_key": K.approval_key("t" * 10_000),  # hashed
    "legacy_approval_key": K.legacy_approval_key("t" * K.MAX_NAME),
    "schedule_key": K.schedule_key(NAME, 9999),
    "poll_key": K.poll_key(NAME, 9999),
    "end_index_prefix": K.end_index_prefix(NAME),
    "end_index_key": K.end_index_key(NAME, FAR, RUN),
    "approval_index_prefix": K.approval_index_prefix(RUN),
    "approval_index_key": K.approval_index_key(RUN, K.approval_key("t" * 10_000)),
    "log_prefix": K.log_prefix(RUN, CHUNK),
    "log_key": K.log_key(RUN, CHUNK, 2**32 - 1, 2**32 - 1),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_longest_key_fits(name: str) -> None:
    key = BUILT[name]
    assert len(key) <= K.MAX_KEY, f"{name}: {len(key)} bytes > {K.MAX_KEY}"


def test_every_key_function_is_covered() -> None:
    builders = {
        name
        for name, fn in inspect.getmembers(K, inspect.isfunction)
        if fn.__module__ == K.__name__
        and (name.endswith("_key") or name.endswith("_prefix"))
        and not name.startswith("decode")
    }
    assert builders <= set(BUILT), f"not checked here: {sorted(builders - set(BUILT))}"


def test_part_problem_names_the_field_and_limit() -> None:
    assert K.part_problem("ok", "event", 10) is None
    assert "event: expected at most 10 bytes" in str(K.part_problem("\u00e9" * 6, "event", 10))
    assert "must not contain NUL" in str(K.part_problem("a\x00b", "key", 10))
    assert "non-empty string" in str(K.part_problem("", "key", 10))
    assert "non-empty string" in str(K.part_problem(3, "key", 10))
    assert "lone surrogate" in str(K.part_problem("\ud800", "key", 10))
