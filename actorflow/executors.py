"""Where steps run: the executors, and what writing your own takes.

``Engine(executor=...)`` takes a name (``"process"``, ``"inline"``, ``"ray"``) or an object
of the :class:`Executor` protocol: a ``name`` and a ``transport(core)`` method returning a
fresh :class:`Transport` for each engine start. The engine's dispatcher core keeps
everything a run's durability rests on (the task table, deadlines counted from each start,
cancels, drains, the record of tasks that never started, the answers to a running step's
requests); a transport only moves tasks and says how they ended. Data flow::

    core --submit([Task])--> transport --(its own way)--> the step runs somewhere
      ^                                                        |
      |  tell_started(id, worker, pid)   <-- ask "start" ------+  (answer() on any thread)
      +- tell_finished(id, outcome)      <-- the outcome ------+

Three bases, from the most to the least said for you:

- :class:`ClusterTransport`: for a cluster with futures (how Dask and Ray are written). Say
  how to connect, let go and launch one task; the worker side runs the task it is given
  with :func:`run_remote`, whose requests come back over a callback link the transport
  opens.
- :class:`RemoteTransport`: tasks queue and run elsewhere, and the step asks to start
  before it runs; say how to send one (``send``) and stop one (``halt``). For steps on
  threads of this process, run each with :func:`run_here`.
- :class:`Transport`: anything else (the process pool is one).

``docs/scale-out.md`` ("Your own executor") has a complete example.
"""

from __future__ import annotations

from actorflow.runtime.dispatch._dask import DaskExecutor
from actorflow.runtime.dispatch._executors import Executor, InlineExecutor, ProcessExecutor
from actorflow.runtime.dispatch._ray import RayExecutor
from actorflow.runtime.dispatch._remote import ClusterTransport, RemoteTransport, run_here
from actorflow.runtime.dispatch._transport import Task, Transport, TransportHost
from actorflow.workers._link import run_remote

__all__ = [
    "ClusterTransport",
    "DaskExecutor",
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "RemoteTransport",
    "Task",
    "Transport",
    "TransportHost",
    "run_here",
    "run_remote",
]
