# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The graph evaluator, compiled: the twin of actorflow/graph/_evaluator_py.py.

Same functions, same arguments, same results; the pure-Python module is the specification and
Hypothesis tests compare the two. Plan and state arrays are read through typed memoryviews, so
nothing is copied per event.
"""

IMPLEMENTATION = "cython"

# Must equal actorflow/graph/_codes.py (checked by tests/graph/test_evaluator.py).
cdef enum:
    NODE_PENDING = 0
    NODE_RUNNING = 1
    NODE_SUCCEEDED = 2
    NODE_FAILED = 3
    NODE_SKIPPED = 4
    EV_SUCCEEDED = 1
    EV_FAILED = 2
    EV_SKIPPED = 3
    RUN_ACTIVE = 0
    RUN_COMPLETED = 1
    RUN_FAILED = 2

CODES = {
    "NODE_PENDING": NODE_PENDING,
    "NODE_RUNNING": NODE_RUNNING,
    "NODE_SUCCEEDED": NODE_SUCCEEDED,
    "NODE_FAILED": NODE_FAILED,
    "NODE_SKIPPED": NODE_SKIPPED,
    "EV_SUCCEEDED": EV_SUCCEEDED,
    "EV_FAILED": EV_FAILED,
    "EV_SKIPPED": EV_SKIPPED,
    "RUN_ACTIVE": RUN_ACTIVE,
    "RUN_COMPLETED": RUN_COMPLETED,
    "RUN_FAILED": RUN_FAILED,
}


def start(const int[:] roots, unsigned char[:] status, int[:] counters):
    cdef Py_ssize_t i
    cdef int node
    ready = []
    for i in range(roots.shape[0]):
        node = roots[i]
        if status[node] == NODE_PENDING:
            status[node] = NODE_RUNNING
            ready.append(node)
    return ready


def advance(
    const int[:] succ_start,
    const int[:] succ,
    unsigned char[:] status,
    int[:] waiting,
    int[:] counters,
    int node,
    int event,
):
    cdef unsigned char current = status[node]
    cdef int i, s
    if current != NODE_RUNNING and current != NODE_PENDING:
        raise ValueError(f"node {node} already finished (state {current})")
    if event == EV_FAILED:
        status[node] = NODE_FAILED
        counters[0] -= 1
        return [], RUN_FAILED
    if event == EV_SUCCEEDED:
        status[node] = NODE_SUCCEEDED
    elif event == EV_SKIPPED:
        status[node] = NODE_SKIPPED
    else:
        raise ValueError(f"unknown event {event}")
    counters[0] -= 1
    ready = []
    for i in range(succ_start[node], succ_start[node + 1]):
        s = succ[i]
        waiting[s] -= 1
        if waiting[s] == 0 and status[s] == NODE_PENDING:
            status[s] = NODE_RUNNING
            ready.append(s)
    return ready, (RUN_COMPLETED if counters[0] == 0 else RUN_ACTIVE)


def rebuild(
    const int[:] succ_start,
    const int[:] succ,
    const int[:] pred_count,
    unsigned char[:] status,
    int[:] waiting,
    int[:] counters,
):
    cdef Py_ssize_t n = status.shape[0]
    cdef Py_ssize_t i
    cdef int j, unfinished = 0
    cdef unsigned char st
    for i in range(n):
        waiting[i] = pred_count[i]
    for i in range(n):
        st = status[i]
        if st == NODE_SUCCEEDED or st == NODE_SKIPPED:
            for j in range(succ_start[i], succ_start[i + 1]):
                waiting[succ[j]] -= 1
        elif st == NODE_PENDING or st == NODE_RUNNING:
            unfinished += 1
    counters[0] = unfinished
    ready = []
    for i in range(n):
        if status[i] == NODE_PENDING and waiting[i] == 0:
            status[i] = NODE_RUNNING
            ready.append(i)
    return ready
