# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, binding=False
"""The graph evaluator, compiled: the twin of actorflow/graph/_evaluator_py.py.

Same functions, same arguments, same results; the pure-Python module is the specification (read
it for the semantics) and Hypothesis tests compare the two. Here the plan and the run state live
in C arrays, and commands are gathered in a C buffer and turned into one Python list per call,
so an event costs a few hundred nanoseconds whatever the size of the run.
"""

cimport cython
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_INCREF

IMPLEMENTATION = "cython"

# Must equal actorflow/graph/_codes.py (checked by tests/graph/test_evaluator.py).
cdef enum:
    K_STEP = 0
    K_ACTION = 1
    K_BRANCH = 2
    K_PARALLEL = 3
    K_RACE = 4
    K_JOIN = 5
    K_WHILE = 6
    K_FOR_EACH = 7
    K_BATCH = 8
    K_SUBFLOW = 9
    K_SLEEP = 10
    K_CANCEL = 11
    K_WAIT = 12
    J_ONE = 0
    J_ALL = 1
    J_FIRST = 2
    S_PENDING = 0
    S_RUNNING = 1
    S_SUCCEEDED = 2
    S_FAILED = 3
    S_SKIPPED = 4
    S_CANCELLED = 5
    E_SUCCEEDED = 1
    E_FAILED = 2
    E_SKIPPED = 3
    E_CHOSEN = 4
    E_ITEMS = 5
    E_LOOP = 6
    E_CANCEL = 7
    C_RUN = 1
    C_DECIDE = 2
    C_EXPAND = 3
    C_LOOP = 4
    C_SLEEP = 5
    C_CHILD = 6
    C_CANCEL_RUN = 7
    C_ABORT = 8
    C_FRAME = 9
    C_FRAME_END = 10
    C_DONE = 11
    C_NODE_FAILED = 12
    C_SKIP = 13
    C_REJECTED = 14
    R_ACTIVE = 0
    R_COMPLETED = 1
    R_FAILED = 2
    R_CANCELLED = 3

CODES = {
    "K_STEP": K_STEP, "K_ACTION": K_ACTION, "K_BRANCH": K_BRANCH, "K_PARALLEL": K_PARALLEL,
    "K_RACE": K_RACE, "K_JOIN": K_JOIN, "K_WHILE": K_WHILE, "K_FOR_EACH": K_FOR_EACH,
    "K_BATCH": K_BATCH, "K_SUBFLOW": K_SUBFLOW, "K_SLEEP": K_SLEEP, "K_CANCEL": K_CANCEL,
    "K_WAIT": K_WAIT,
    "J_ONE": J_ONE, "J_ALL": J_ALL, "J_FIRST": J_FIRST,
    "S_PENDING": S_PENDING, "S_RUNNING": S_RUNNING, "S_SUCCEEDED": S_SUCCEEDED,
    "S_FAILED": S_FAILED, "S_SKIPPED": S_SKIPPED, "S_CANCELLED": S_CANCELLED,
    "E_SUCCEEDED": E_SUCCEEDED, "E_FAILED": E_FAILED, "E_SKIPPED": E_SKIPPED,
    "E_CHOSEN": E_CHOSEN, "E_ITEMS": E_ITEMS, "E_LOOP": E_LOOP, "E_CANCEL": E_CANCEL,
    "C_RUN": C_RUN, "C_DECIDE": C_DECIDE, "C_EXPAND": C_EXPAND, "C_LOOP": C_LOOP,
    "C_SLEEP": C_SLEEP, "C_CHILD": C_CHILD, "C_CANCEL_RUN": C_CANCEL_RUN, "C_ABORT": C_ABORT,
    "C_FRAME": C_FRAME, "C_FRAME_END": C_FRAME_END, "C_DONE": C_DONE,
    "C_NODE_FAILED": C_NODE_FAILED, "C_SKIP": C_SKIP, "C_REJECTED": C_REJECTED,
    "R_ACTIVE": R_ACTIVE, "R_COMPLETED": R_COMPLETED, "R_FAILED": R_FAILED,
    "R_CANCELLED": R_CANCELLED,
}


cdef int *_copy(list values) except NULL:
    cdef Py_ssize_t n = len(values), i
    cdef int *out = <int *> PyMem_Malloc(max(n, 1) * sizeof(int))
    if out == NULL:
        raise MemoryError()
    for i in range(n):
        out[i] = values[i]
    return out


@cython.final
cdef class CPlan:
    """The plan's arrays, copied into C once per plan."""

    cdef int n, nscopes
    cdef int *kind
    cdef int *scope
    cdef int *succ_start
    cdef int *succ
    cdef int *join
    cdef int *join_mode
    cdef int *arm_start
    cdef int *arm_entry
    cdef int *arm_lo
    cdef int *arm_hi
    cdef int *body
    cdef int *limit
    cdef int *parent_arm
    cdef int *race_of
    cdef int *race_arm
    cdef int *scope_first
    cdef int *scope_size
    cdef int *scope_entry
    cdef int *scope_exit
    cdef readonly object plan

    def __cinit__(self, plan):
        self.plan = plan
        self.n = len(plan.kind)
        self.nscopes = len(plan.scope_first)
        self.kind = _copy(plan.kind)
        self.scope = _copy(plan.scope)
        self.succ_start = _copy(plan.succ_start)
        self.succ = _copy(plan.succ)
        self.join = _copy(plan.join)
        self.join_mode = _copy(plan.join_mode)
        self.arm_start = _copy(plan.arm_start)
        self.arm_entry = _copy(plan.arm_entry)
        self.arm_lo = _copy(plan.arm_lo)
        self.arm_hi = _copy(plan.arm_hi)
        self.body = _copy(plan.body)
        self.limit = _copy(plan.limit)
        self.parent_arm = _copy(plan.parent_arm)
        self.race_of = _copy(plan.race_of)
        self.race_arm = _copy(plan.race_arm)
        self.scope_first = _copy(plan.scope_first)
        self.scope_size = _copy(plan.scope_size)
        self.scope_entry = _copy(plan.scope_entry)
        self.scope_exit = _copy(plan.scope_exit)

    def __dealloc__(self):
        PyMem_Free(self.kind)
        PyMem_Free(self.scope)
        PyMem_Free(self.succ_start)
        PyMem_Free(self.succ)
        PyMem_Free(self.join)
        PyMem_Free(self.join_mode)
        PyMem_Free(self.arm_start)
        PyMem_Free(self.arm_entry)
        PyMem_Free(self.arm_lo)
        PyMem_Free(self.arm_hi)
        PyMem_Free(self.body)
        PyMem_Free(self.limit)
        PyMem_Free(self.parent_arm)
        PyMem_Free(self.race_of)
        PyMem_Free(self.race_arm)
        PyMem_Free(self.scope_first)
        PyMem_Free(self.scope_size)
        PyMem_Free(self.scope_entry)
        PyMem_Free(self.scope_exit)

    cdef inline bint is_leaf(self, int node) noexcept:
        cdef int k = self.kind[node]
        return k == K_STEP or k == K_ACTION or k == K_SUBFLOW or k == K_SLEEP or k == K_WAIT

    cdef inline bint is_loop(self, int node) noexcept:
        cdef int k = self.kind[node]
        return k == K_WHILE or k == K_FOR_EACH or k == K_BATCH


cdef int *_grow(int *arr, Py_ssize_t n) except NULL:
    cdef int *out = <int *> PyMem_Realloc(arr, max(n, 1) * sizeof(int))
    if out == NULL:
        raise MemoryError()
    return out


@cython.final
cdef class CState:
    """A run's frames and per-node slots, in C arrays."""

    cdef int nframes, cap_frames, nslots, cap_slots, ncmd, cap_cmd
    cdef int *f_scope
    cdef int *f_parent
    cdef int *f_owner
    cdef int *f_index
    cdef int *f_base
    cdef int *f_alive
    cdef int *f_child
    cdef int *f_next
    cdef int *f_prev
    cdef int *f_free
    cdef int *free_head
    cdef int *st
    cdef int *a
    cdef int *b
    cdef int *c
    cdef int *cmd
    cdef public int outcome

    def __cinit__(self, CPlan plan):
        cdef int i
        self.cap_frames = 8
        self.cap_slots = 64
        self.cap_cmd = 64
        self.f_scope = _grow(NULL, self.cap_frames)
        self.f_parent = _grow(NULL, self.cap_frames)
        self.f_owner = _grow(NULL, self.cap_frames)
        self.f_index = _grow(NULL, self.cap_frames)
        self.f_base = _grow(NULL, self.cap_frames)
        self.f_alive = _grow(NULL, self.cap_frames)
        self.f_child = _grow(NULL, self.cap_frames)
        self.f_next = _grow(NULL, self.cap_frames)
        self.f_prev = _grow(NULL, self.cap_frames)
        self.f_free = _grow(NULL, self.cap_frames)
        self.free_head = _grow(NULL, plan.nscopes)
        for i in range(plan.nscopes):
            self.free_head[i] = -1
        self.st = _grow(NULL, self.cap_slots)
        self.a = _grow(NULL, self.cap_slots)
        self.b = _grow(NULL, self.cap_slots)
        self.c = _grow(NULL, self.cap_slots)
        self.cmd = _grow(NULL, self.cap_cmd)
        self.outcome = R_ACTIVE

    def __dealloc__(self):
        PyMem_Free(self.f_scope)
        PyMem_Free(self.f_parent)
        PyMem_Free(self.f_owner)
        PyMem_Free(self.f_index)
        PyMem_Free(self.f_base)
        PyMem_Free(self.f_alive)
        PyMem_Free(self.f_child)
        PyMem_Free(self.f_next)
        PyMem_Free(self.f_prev)
        PyMem_Free(self.f_free)
        PyMem_Free(self.free_head)
        PyMem_Free(self.st)
        PyMem_Free(self.a)
        PyMem_Free(self.b)
        PyMem_Free(self.c)
        PyMem_Free(self.cmd)

    cdef int emit(self, int op, int frame, int node, int arg) except -1:
        if self.ncmd + 4 > self.cap_cmd:
            self.cap_cmd *= 2
            self.cmd = _grow(self.cmd, self.cap_cmd)
        self.cmd[self.ncmd] = op
        self.cmd[self.ncmd + 1] = frame
        self.cmd[self.ncmd + 2] = node
        self.cmd[self.ncmd + 3] = arg
        self.ncmd += 4
        return 0

    cdef list take(self):
        # One list of the right size, filled in place: this runs on every event.
        cdef Py_ssize_t i, n = self.ncmd
        cdef list out = PyList_New(n)
        cdef object value
        for i in range(n):
            value = PyLong_FromLong(self.cmd[i])
            Py_INCREF(value)
            PyList_SET_ITEM(out, i, value)
        self.ncmd = 0
        return out

    cdef inline int slot(self, CPlan plan, int frame, int node) noexcept:
        return self.f_base[frame] + node - plan.scope_first[plan.scope[node]]


def prepare(plan):
    """The plan in this twin's form: its arrays copied into C."""
    return CPlan(plan)


def new_state(CPlan plan):
    """A fresh state holding the workflow's frame (frame 0, not yet started)."""
    cdef CState s = CState(plan)
    _alloc(plan, s, 0, -1, -1, 0)
    return s


def start(CPlan plan, CState s):
    """Start the run: the commands for its first nodes."""
    s.ncmd = 0
    _activate(plan, s, 0, plan.scope_entry[0])
    return s.take()


def advance(CPlan plan, CState s, int event, int frame, int node, int arg):
    """Apply one event; return the commands that follow (four ints each)."""
    s.ncmd = 0
    _apply(plan, s, event, frame, node, arg)
    return s.take()


def advance_many(CPlan plan, CState s, events):
    """Apply events one by one (four ints each, flat); return all their commands, in order.

    An event that does not fit the state is not applied: it yields ``(C_REJECTED, frame, node,
    event)`` instead of raising, so the events after it still apply.
    """
    cdef Py_ssize_t i, n = len(events)
    cdef int event, frame, node, arg, mark
    s.ncmd = 0
    for i in range(0, n - 3, 4):
        event = events[i]
        frame = events[i + 1]
        node = events[i + 2]
        arg = events[i + 3]
        mark = s.ncmd
        try:
            _apply(plan, s, event, frame, node, arg)
        except ValueError:
            s.ncmd = mark
            s.emit(C_REJECTED, frame, node, event)
    return s.take()


cdef int _apply(CPlan plan, CState s, int event, int frame, int node, int arg) except -1:
    cdef int slot, kind
    if event == E_CANCEL:
        if s.outcome == R_ACTIVE:
            _cancel_range(plan, s, 0, plan.scope_first[0], plan.scope_first[0] + plan.scope_size[0])
            s.outcome = R_CANCELLED
        return 0
    if frame < 0 or frame >= s.nframes or not s.f_alive[frame]:
        raise ValueError(f"frame {frame} is not alive")
    if node < 0 or node >= plan.n or plan.scope[node] != s.f_scope[frame]:
        raise ValueError(f"node {node} is not in frame {frame}'s scope")
    slot = s.slot(plan, frame, node)
    if s.st[slot] != S_RUNNING:
        raise ValueError(f"node {node} of frame {frame} is not running (state {s.st[slot]})")
    kind = plan.kind[node]
    if event == E_SUCCEEDED or event == E_SKIPPED:
        if not plan.is_leaf(node):
            raise ValueError(f"node {node} is not a leaf")
        s.st[slot] = S_SUCCEEDED if event == E_SUCCEEDED else S_SKIPPED
        _complete(plan, s, frame, node)
    elif event == E_FAILED:
        if not plan.is_leaf(node) and kind != K_BRANCH and not plan.is_loop(node):
            raise ValueError(f"node {node} cannot fail by an event")
        _fail(plan, s, frame, node)
    elif event == E_CHOSEN:
        if kind != K_BRANCH:
            raise ValueError(f"node {node} is not a branch")
        _choose(plan, s, frame, node, arg)
    elif event == E_ITEMS:
        if kind != K_FOR_EACH and kind != K_BATCH:
            raise ValueError(f"node {node} is not a for_each or batch")
        if arg < 0:
            raise ValueError("item count must be >= 0")
        _items(plan, s, frame, node, arg)
    elif event == E_LOOP:
        if kind != K_WHILE:
            raise ValueError(f"node {node} is not a while")
        _loop(plan, s, frame, node, arg)
    else:
        raise ValueError(f"unknown event {event}")
    return 0


def outcome(CState s):
    """``R_ACTIVE``, ``R_COMPLETED``, ``R_FAILED`` or ``R_CANCELLED``."""
    return s.outcome


def status(CPlan plan, CState s, int frame, int node):
    """The state of ``node`` in ``frame``."""
    return s.st[s.slot(plan, frame, node)]


def frame_info(CState s, int frame):
    """``(scope, parent frame, owner node, index, alive)`` of a frame."""
    return (s.f_scope[frame], s.f_parent[frame], s.f_owner[frame], s.f_index[frame],
            s.f_alive[frame])


def snapshot(CPlan plan, CState s):
    """Everything observable, in a canonical form (for comparing the twins)."""
    cdef int f, base, size
    frames = []
    for f in range(s.nframes):
        if not s.f_alive[f]:
            continue
        base = s.f_base[f]
        size = plan.scope_size[s.f_scope[f]]
        frames.append(
            (f, s.f_scope[f], s.f_parent[f], s.f_owner[f], s.f_index[f],
             tuple([s.st[i] for i in range(base, base + size)]),
             tuple([s.a[i] for i in range(base, base + size)]),
             tuple([s.b[i] for i in range(base, base + size)]),
             tuple([s.c[i] for i in range(base, base + size)]))
        )
    return (s.outcome, tuple(frames))


# -- frames ------------------------------------------------------------------------------------


cdef int _alloc(CPlan plan, CState s, int scope, int parent, int owner, int index) except -1:
    cdef int f = s.free_head[scope]
    cdef int size = plan.scope_size[scope]
    cdef int base, i, head
    if f >= 0:
        s.free_head[scope] = s.f_free[f]
        base = s.f_base[f]
    else:
        f = s.nframes
        if f >= s.cap_frames:
            s.cap_frames *= 2
            s.f_scope = _grow(s.f_scope, s.cap_frames)
            s.f_parent = _grow(s.f_parent, s.cap_frames)
            s.f_owner = _grow(s.f_owner, s.cap_frames)
            s.f_index = _grow(s.f_index, s.cap_frames)
            s.f_base = _grow(s.f_base, s.cap_frames)
            s.f_alive = _grow(s.f_alive, s.cap_frames)
            s.f_child = _grow(s.f_child, s.cap_frames)
            s.f_next = _grow(s.f_next, s.cap_frames)
            s.f_prev = _grow(s.f_prev, s.cap_frames)
            s.f_free = _grow(s.f_free, s.cap_frames)
        base = s.nslots
        if base + size > s.cap_slots:
            while base + size > s.cap_slots:
                s.cap_slots *= 2
            s.st = _grow(s.st, s.cap_slots)
            s.a = _grow(s.a, s.cap_slots)
            s.b = _grow(s.b, s.cap_slots)
            s.c = _grow(s.c, s.cap_slots)
        s.nslots = base + size
        s.nframes = f + 1
        s.f_scope[f] = scope
        s.f_base[f] = base
        s.f_free[f] = -1
    for i in range(base, base + size):
        s.st[i] = S_PENDING
        s.a[i] = 0
        s.b[i] = 0
        s.c[i] = 0
    s.f_parent[f] = parent
    s.f_owner[f] = owner
    s.f_index[f] = index
    s.f_alive[f] = 1
    s.f_child[f] = -1
    s.f_prev[f] = -1
    if parent >= 0:
        head = s.f_child[parent]
        s.f_next[f] = head
        if head >= 0:
            s.f_prev[head] = f
        s.f_child[parent] = f
    else:
        s.f_next[f] = -1
    return f


cdef void _free(CState s, int f) noexcept:
    cdef int parent = s.f_parent[f], prev = s.f_prev[f], nxt = s.f_next[f], scope
    if prev >= 0:
        s.f_next[prev] = nxt
    elif parent >= 0:
        s.f_child[parent] = nxt
    if nxt >= 0:
        s.f_prev[nxt] = prev
    s.f_alive[f] = 0
    scope = s.f_scope[f]
    s.f_free[f] = s.free_head[scope]
    s.free_head[scope] = f


cdef int _start_frame(CPlan plan, CState s, int parent, int owner, int index) except -1:
    cdef int scope = plan.body[owner]
    cdef int f = _alloc(plan, s, scope, parent, owner, index)
    s.emit(C_FRAME, f, owner, index)
    _activate(plan, s, f, plan.scope_entry[scope])
    return 0


# -- moving forward ----------------------------------------------------------------------------


cdef int _activate(CPlan plan, CState s, int frame, int node) except -1:
    cdef int slot = s.slot(plan, frame, node)
    cdef int kind = plan.kind[node]
    cdef int join, jslot, first, last, k, entry
    s.st[slot] = S_RUNNING
    if kind == K_STEP or kind == K_ACTION:
        s.emit(C_RUN, frame, node, 0)
    elif kind == K_SUBFLOW:
        s.emit(C_CHILD, frame, node, 0)
    elif kind == K_SLEEP or kind == K_WAIT:
        s.emit(C_SLEEP, frame, node, 0)
    elif kind == K_CANCEL:
        s.emit(C_CANCEL_RUN, frame, node, 0)
    elif kind == K_BRANCH:
        s.emit(C_DECIDE, frame, node, 0)
    elif kind == K_FOR_EACH or kind == K_BATCH:
        s.emit(C_EXPAND, frame, node, 0)
    elif kind == K_WHILE:
        s.emit(C_LOOP, frame, node, 0)
    elif kind == K_PARALLEL or kind == K_RACE:
        join = plan.join[node]
        jslot = s.slot(plan, frame, join)
        s.st[jslot] = S_RUNNING
        first = plan.arm_start[node]
        last = plan.arm_start[node + 1]
        s.a[jslot] = last - first if kind == K_PARALLEL else 1
        for k in range(first, last):
            if s.st[slot] != S_RUNNING:
                break
            entry = plan.arm_entry[k]
            if entry == join:
                _arrive(plan, s, frame, join, k - first)
            else:
                _activate(plan, s, frame, entry)
    return 0


cdef int _complete(CPlan plan, CState s, int frame, int node) except -1:
    cdef int i, nxt
    for i in range(plan.succ_start[node], plan.succ_start[node + 1]):
        nxt = plan.succ[i]
        if plan.kind[nxt] == K_JOIN:
            _arrive(plan, s, frame, nxt, plan.parent_arm[node])
        else:
            _activate(plan, s, frame, nxt)
    if node == plan.scope_exit[s.f_scope[frame]]:
        _frame_succeeded(plan, s, frame)
    return 0


cdef int _arrive(CPlan plan, CState s, int frame, int join, int arm) except -1:
    cdef int jslot = s.slot(plan, frame, join)
    cdef int comp, mode, cslot, base, k
    if s.st[jslot] != S_RUNNING:
        return 0
    comp = plan.join[join]
    mode = plan.join_mode[join]
    if mode == J_FIRST:
        cslot = s.slot(plan, frame, comp)
        s.b[cslot] = arm
        base = plan.arm_start[comp]
        for k in range(base, plan.arm_start[comp + 1]):
            if k - base != arm:
                _cancel_range(plan, s, frame, plan.arm_lo[k], plan.arm_hi[k])
        _fire(plan, s, frame, join, comp, arm)
    elif mode == J_ALL:
        s.a[jslot] -= 1
        if s.a[jslot] == 0:
            _fire(plan, s, frame, join, comp, plan.arm_start[comp + 1] - plan.arm_start[comp])
    else:
        _fire(plan, s, frame, join, comp, s.b[s.slot(plan, frame, comp)])
    return 0


cdef int _fire(CPlan plan, CState s, int frame, int join, int comp, int arg) except -1:
    s.st[s.slot(plan, frame, join)] = S_SUCCEEDED
    s.st[s.slot(plan, frame, comp)] = S_SUCCEEDED
    s.emit(C_DONE, frame, comp, arg)
    _complete(plan, s, frame, join)
    return 0


cdef int _choose(CPlan plan, CState s, int frame, int node, int arm) except -1:
    cdef int first = plan.arm_start[node], last = plan.arm_start[node + 1], join, k
    if arm < -1 or arm >= last - first:
        raise ValueError(f"branch {node} has no arm {arm}")
    s.b[s.slot(plan, frame, node)] = arm
    join = plan.join[node]
    s.st[s.slot(plan, frame, join)] = S_RUNNING
    for k in range(first, last):
        if k - first != arm:
            _skip_range(plan, s, frame, plan.arm_lo[k], plan.arm_hi[k])
    if arm < 0 or plan.arm_entry[first + arm] == join:
        _arrive(plan, s, frame, join, arm)
    else:
        _activate(plan, s, frame, plan.arm_entry[first + arm])
    return 0


cdef int _items(CPlan plan, CState s, int frame, int node, int n) except -1:
    cdef int slot = s.slot(plan, frame, node)
    cdef int limit, count, index, i
    if s.a[slot] or s.b[slot]:
        raise ValueError(f"node {node} of frame {frame} already has its items")
    s.a[slot] = n
    s.b[slot] = 0
    s.c[slot] = 0
    if n == 0:
        _loop_done(plan, s, frame, node, 0)
        return 0
    limit = plan.limit[node]
    count = n if limit <= 0 or limit > n else limit
    for i in range(count):
        index = s.b[slot]
        s.b[slot] = index + 1
        _start_frame(plan, s, frame, node, index)
    return 0


cdef int _loop(CPlan plan, CState s, int frame, int node, int go_on) except -1:
    cdef int slot = s.slot(plan, frame, node)
    if s.b[slot]:
        raise ValueError(f"while {node} of frame {frame} is running an iteration")
    if go_on:
        s.b[slot] = 1
        _start_frame(plan, s, frame, node, s.a[slot])
    else:
        _loop_done(plan, s, frame, node, s.a[slot])
    return 0


cdef int _loop_done(CPlan plan, CState s, int frame, int node, int count) except -1:
    s.st[s.slot(plan, frame, node)] = S_SUCCEEDED
    s.emit(C_DONE, frame, node, count)
    _complete(plan, s, frame, node)
    return 0


cdef int _frame_succeeded(CPlan plan, CState s, int frame) except -1:
    cdef int parent, owner, slot, index
    if frame == 0:
        s.outcome = R_COMPLETED
        return 0
    parent = s.f_parent[frame]
    owner = s.f_owner[frame]
    s.emit(C_FRAME_END, frame, owner, S_SUCCEEDED)
    _free(s, frame)
    slot = s.slot(plan, parent, owner)
    if plan.kind[owner] == K_WHILE:
        s.a[slot] += 1
        s.b[slot] = 0
        s.emit(C_LOOP, parent, owner, s.a[slot])
        return 0
    s.c[slot] += 1
    if s.b[slot] < s.a[slot]:
        index = s.b[slot]
        s.b[slot] = index + 1
        _start_frame(plan, s, parent, owner, index)
    elif s.c[slot] == s.a[slot]:
        _loop_done(plan, s, parent, owner, s.a[slot])
    return 0


# -- failing and stopping ----------------------------------------------------------------------


cdef int _fail(CPlan plan, CState s, int frame, int node) except -1:
    cdef int race, rslot, k
    s.st[s.slot(plan, frame, node)] = S_FAILED
    if plan.is_loop(node):
        _cancel_children(plan, s, frame, node)
    if not plan.is_leaf(node):
        s.emit(C_NODE_FAILED, frame, node, 0)
    race = plan.race_of[node]
    if race >= 0:
        rslot = s.slot(plan, frame, race)
        if s.st[rslot] == S_RUNNING:
            k = plan.arm_start[race] + plan.race_arm[node]
            _cancel_range(plan, s, frame, plan.arm_lo[k], plan.arm_hi[k])
            s.c[rslot] += 1
            if s.c[rslot] == plan.arm_start[race + 1] - plan.arm_start[race]:
                s.st[s.slot(plan, frame, plan.join[race])] = S_FAILED
                _fail(plan, s, frame, race)
            return 0
    _frame_failed(plan, s, frame)
    return 0


cdef int _frame_failed(CPlan plan, CState s, int frame) except -1:
    cdef int scope = s.f_scope[frame]
    cdef int first = plan.scope_first[scope]
    cdef int parent, owner
    _cancel_range(plan, s, frame, first, first + plan.scope_size[scope])
    if frame == 0:
        s.outcome = R_FAILED
        return 0
    parent = s.f_parent[frame]
    owner = s.f_owner[frame]
    s.emit(C_FRAME_END, frame, owner, S_FAILED)
    _free(s, frame)
    _cancel_children(plan, s, parent, owner)
    _fail(plan, s, parent, owner)
    return 0


cdef int _cancel_children(CPlan plan, CState s, int frame, int owner) except -1:
    cdef int child = s.f_child[frame], nxt
    while child >= 0:
        nxt = s.f_next[child]
        if s.f_owner[child] == owner:
            _cancel_frame(plan, s, child)
        child = nxt
    return 0


cdef int _cancel_frame(CPlan plan, CState s, int frame) except -1:
    cdef int scope = s.f_scope[frame]
    cdef int first = plan.scope_first[scope]
    _cancel_range(plan, s, frame, first, first + plan.scope_size[scope])
    s.emit(C_FRAME_END, frame, s.f_owner[frame], S_CANCELLED)
    _free(s, frame)
    return 0


cdef int _cancel_range(CPlan plan, CState s, int frame, int lo, int hi) except -1:
    cdef int base = s.f_base[frame] - plan.scope_first[s.f_scope[frame]]
    cdef int node, slot, state
    for node in range(lo, hi):
        slot = base + node
        state = s.st[slot]
        if state == S_RUNNING:
            if plan.is_leaf(node):
                s.emit(C_ABORT, frame, node, 0)
            elif plan.is_loop(node):
                _cancel_children(plan, s, frame, node)
            s.st[slot] = S_CANCELLED
        elif state == S_PENDING:
            s.st[slot] = S_CANCELLED
    return 0


cdef int _skip_range(CPlan plan, CState s, int frame, int lo, int hi) except -1:
    cdef int base = s.f_base[frame] - plan.scope_first[s.f_scope[frame]]
    cdef int node
    for node in range(lo, hi):
        if s.st[base + node] == S_PENDING:
            s.st[base + node] = S_SKIPPED
            if plan.kind[node] != K_JOIN:
                s.emit(C_SKIP, frame, node, 0)
    return 0
