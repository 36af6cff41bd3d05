"""Integer codes shared by the plan, both evaluator twins and the supervisor.

The Cython twin repeats these numbers as C constants and exports them as ``CODES``;
``tests/graph/test_evaluator.py`` checks that both agree.
"""

from __future__ import annotations

from typing import Final

# Node kinds.
K_STEP: Final = 0
K_ACTION: Final = 1
K_BRANCH: Final = 2
K_PARALLEL: Final = 3
K_RACE: Final = 4
K_JOIN: Final = 5
K_WHILE: Final = 6
K_FOR_EACH: Final = 7
K_BATCH: Final = 8
K_SUBFLOW: Final = 9
K_SLEEP: Final = 10
K_CANCEL: Final = 11
K_WAIT: Final = 12  # wait_for_event or human_in_the_loop: like a sleep, ended from outside

KIND_NAMES: Final = (
    "step", "action", "branch", "parallel", "race", "join", "while", "for_each", "batch",
    "subflow", "sleep", "cancel", "wait",
)  # fmt: skip

# How a join fires.
J_ONE: Final = 0  # branch: the one arm that ran arrived
J_ALL: Final = 1  # parallel: every arm arrived
J_FIRST: Final = 2  # race: the first arm to succeed arrived

# Node states (per node per frame).
S_PENDING: Final = 0
S_RUNNING: Final = 1  # dispatched, deciding, or (composites) in progress
S_SUCCEEDED: Final = 2
S_FAILED: Final = 3
S_SKIPPED: Final = 4  # in an arm a branch did not take
S_CANCELLED: Final = 5  # stopped: a race lost, a sibling failed, the run was cancelled

# Events applied to the run state: (event, frame, node, arg).
E_SUCCEEDED: Final = 1  # a leaf (step, action, subflow, sleep) finished
E_FAILED: Final = 2  # a leaf failed for good
E_SKIPPED: Final = 3  # a leaf is skipped
E_CHOSEN: Final = 4  # a branch chose arm ``arg`` (-1: none)
E_ITEMS: Final = 5  # a for_each / batch has ``arg`` items (chunks)
E_LOOP: Final = 6  # a while goes on (``arg`` 1) or stops (0)
E_CANCEL: Final = 7  # the whole run is cancelled (frame and node ignored)

# Commands the evaluator returns, four ints each: (command, frame, node, arg).
C_RUN: Final = 1  # dispatch the step/action (frame, node)
C_DECIDE: Final = 2  # evaluate the branch's predicates, then send E_CHOSEN
C_EXPAND: Final = 3  # evaluate the items, then send E_ITEMS
C_LOOP: Final = 4  # evaluate the while's predicate for iteration ``arg``, then send E_LOOP
C_SLEEP: Final = 5  # the leaf waits outside the pool (a sleep's timer, an event, an approval)
C_CHILD: Final = 6  # start the child run, then send its outcome
C_CANCEL_RUN: Final = 7  # a cancel node was reached: end the run as cancelled
C_ABORT: Final = 8  # stop the running leaf (kill the task, drop the timer, cancel the child)
C_FRAME: Final = 9  # frame ``frame`` started for ``node`` (a loop) at index ``arg``
C_FRAME_END: Final = 10  # frame ``frame`` of ``node`` ended with state ``arg``
C_DONE: Final = 11  # composite succeeded; ``arg``: arm chosen / race winner / count
C_NODE_FAILED: Final = 12  # composite failed
C_SKIP: Final = 13  # a leaf in an arm not taken is skipped
C_REJECTED: Final = 14  # advance_many: this event (``arg``) did not fit the state; not applied

# Run outcomes.
R_ACTIVE: Final = 0
R_COMPLETED: Final = 1
R_FAILED: Final = 2
R_CANCELLED: Final = 3

LEAF_KINDS: Final = frozenset({K_STEP, K_ACTION, K_SUBFLOW, K_SLEEP, K_CANCEL, K_WAIT})
