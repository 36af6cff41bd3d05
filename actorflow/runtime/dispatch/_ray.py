"""``executor=af.RayExecutor(...)``: steps run as Ray tasks.

The Ray transport is a :class:`~actorflow.runtime.dispatch._remote.ClusterTransport`, like
Dask's: supervisors, the store and recovery do not know where steps run. What is Ray's own:

- **One Ray task per step attempt**, submitted with ``max_retries=0`` (by default): when a
  worker dies, the attempt fails as a crash (``WorkerCrashed``) and the *workflow's* retry
  policy decides, with every attempt recorded; Ray's own retries would run a step again
  with no record of the first run. ``num_cpus`` (default 1) is what each step reserves.
- **Start and timeout.** A task may wait for a free CPU; its timeout counts from its start
  on a worker (the step asks to start over the callback link). Ray stops a running task only
  through ``ray.cancel(ref, force=True)``, which kills the worker process running it; that
  is what a step past its deadline (or a cancelled one) gets.
- **Outcomes** come back through each object ref's future (``ObjectRef.future()``), on a
  thread of Ray's, as the core's ``Finished`` message.
- **Large values** go inline in the task's arguments (Ray's object store carries them) or,
  for the payload and ``ctx.last``, as references fetched over the link only if read.
- **Requests** go over the callback link (``_link.py`` says why not Ray's own channels).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from actorflow._extras import require
from actorflow.runtime.dispatch._remote import ClusterTransport
from actorflow.runtime.dispatch._transport import Task, TransportHost

__all__ = ["RayExecutor", "RayTransport"]

log = logging.getLogger("actorflow.dispatcher")


class RayExecutor:
    """Run steps as Ray tasks (``pip install actorflow[ray]``).

    Without ``address`` the engine uses the Ray this process is connected to
    (``ray.init(...)`` called before the engine starts) or, if none, starts a local one
    with ``ray.init(address, **init)``. A Ray the engine started is shut down when it stops.

    Args:
        address: a cluster to connect to (``"ray://head:10001"``, ``"auto"``), passed to
            ``ray.init``.
        num_cpus: CPUs each step reserves (Ray's ``num_cpus`` task option).
        max_retries: Ray's own retries of a task whose worker died (default 0: the
            workflow's retry policy decides, and every attempt is recorded).
        callback_host: the address Ray workers use to reach this engine (default: the one
            that routes to ``address``; ``127.0.0.1`` for a local Ray).
        init: more ``ray.init`` arguments, used when the engine starts Ray itself
            (``{"num_cpus": 2, "runtime_env": {...}}``).

    Raises:
        ValueError: a bad ``num_cpus``, ``max_retries`` or ``init``.
        MissingExtra: Ray is not installed (the ``ray`` extra).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float = 1,
        max_retries: int = 0,
        callback_host: str | None = None,
        init: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float) or num_cpus < 0:
            raise ValueError(f"RayExecutor num_cpus: expected a number >= 0, got {num_cpus!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"RayExecutor max_retries: expected an int >= 0, got {max_retries!r}")
        if address is not None and not isinstance(address, str):
            raise ValueError(f"RayExecutor address: expected a string, got {address!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.callback_host = callback_host
        if init is not None and not isinstance(init, Mapping):
            raise ValueError(
                f"RayExecutor init: expected a dict of ray.init arguments, got {init!r}"
            )
        self.init = dict(init or {})
        require("ray", "af.RayExecutor")  # here, not at start: the mistake is here

    def connect(self) -> tuple[Any, bool]:
        """The ``ray`` module, connected, and whether the engine started Ray itself."""
        ray = require("ray", "af.RayExecutor")
        if ray.is_initialized():
            return ray, False
        ray.init(address=self.address, **self.init)
        return ray, True

    def transport(self, core: TransportHost) -> RayTransport:
        """The engine's Ray transport (the :class:`~actorflow.Executor` protocol)."""
        return RayTransport(core, self)

    def __repr__(self) -> str:
        return f"RayExecutor({self.address or 'local'})"


class RayTransport(ClusterTransport):
    """Runs tasks as Ray tasks (see the module docstring)."""

    halted = "Ray worker killed"
    where = "Ray"

    def __init__(self, core: TransportHost, executor: RayExecutor) -> None:
        super().__init__(core, executor)
        self._rayx = executor
        self._ray: Any = None
        self._remote: Any = None

    def connect(self) -> tuple[str | None, bool]:
        self._ray, owns = self._rayx.connect()
        from actorflow.workers._ray import run_task

        self._remote = self._ray.remote(run_task).options(
            num_cpus=self._rayx.num_cpus,
            max_retries=self._rayx.max_retries,
            retry_exceptions=False,
        )
        return self._rayx.address, owns

    def disconnect(self) -> None:
        self._ray.shutdown()

    def worker_count(self) -> int:
        try:
            cpus = self._ray.cluster_resources().get("CPU", 0)
        except Exception:
            return 0
        per = self._rayx.num_cpus or 1
        return int(cpus // per)

    def launch(self, task: Task, args: tuple[Any, ...]) -> tuple[Any, Any]:
        ref = self._remote.remote(args)
        return ref, ref.future()

    def forget(self, task: Task) -> None:
        self._cancel(task, force=False)  # stopping: queued ones need not run

    def halt(self, task: Task) -> None:
        """Cancel ``task``; a running one's worker process is killed (``force=True``)."""
        self._cancel(task, force=True)

    def _cancel(self, task: Task, force: bool) -> None:
        if task.handle is None:
            return
        try:
            self._ray.cancel(task.handle, force=force)
        except Exception as exc:  # finished meanwhile, or Ray is going away
            log.debug("ray.cancel of step %r: %s", task.spec.step, exc)
