"""The engine a service holds: the facade over the actor runtime, and a run's handle.

``Engine`` keeps the definitions (every version), starts the runtime on a store (as the
leader, or as a follower of the process that leads), and offers every operation on runs;
``RunHandle`` is a run seen from the calling thread. Below this package: the runtime's
actors (``actorflow.runtime``), the HTTP layer it serves (``actorflow.triggers``, for
``asgi()``), observability (``metrics()``), and the read side (``actorflow.views``).

Also here, because only the facade uses them: the background sweeps (schedules,
retention), the collector policy, and the leader/follower sharing of one ``data_dir`` by
several processes (``_sharing``, ``_leader``, ``_follower``, ``_channel``).
"""

from __future__ import annotations

from actorflow.engine._engine import Engine
from actorflow.engine._handle import RunHandle

__all__ = ["Engine", "RunHandle"]
