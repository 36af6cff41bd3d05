"""``ctx.services`` inside a process: each service fetched and set up once, on first use.

The configured service travels from the engine as cloudpickle bytes, asked for over the
worker's pipe the first time a step of a workflow touches it; its client (``setup(config)``)
is kept for the life of the process, so a connection pool or an SDK client is built once per
worker, not once per step.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ServicesView"]

_lock = threading.Lock()
#: (workflow id, service id) -> the service's client and actions, for this process's life.
_ready: dict[tuple[str, str], Any] = {}


class _Bound:
    """A set-up service: ``bound.action(*args)`` calls ``action(client, *args)``."""

    def __init__(
        self,
        service_id: str,
        client: Any,
        actions: dict[str, Any],
        guarded: frozenset[str] = frozenset(),
        host: Any = None,
        current_host: Callable[[], Any] = lambda: None,
    ) -> None:
        self._id = service_id
        self._client = client
        self._actions = actions
        self._guarded = guarded  # actions behind a circuit breaker the engine keeps
        self._host = host
        self._current_host = current_host

    @property
    def client(self) -> Any:
        """What the service's ``setup(config)`` returned."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        try:
            fn = self._actions[name]
        except KeyError:
            raise AttributeError(
                f"service {self._id!r} has no action {name!r} (it has {sorted(self._actions)})"
            ) from None
        client = self._client
        if name in self._guarded:
            return self._guard(name, fn)

        def call(*args: Any, **kwargs: Any) -> Any:
            return fn(client, *args, **kwargs)

        call.__name__ = name
        return call

    def _guard(self, name: str, fn: Any) -> Any:
        client, service_id = self._client, self._id

        def host() -> Any:
            # The current step's host: the one this service was first set up with may
            # belong to an earlier task of this worker.
            current = self._current_host()
            return current if current is not None else self._host

        def call(*args: Any, **kwargs: Any) -> Any:
            h = host()
            if not h.request("breaker", (service_id, name, "allow")):
                from actorflow.errors import CircuitOpen

                raise CircuitOpen(
                    f"service {service_id!r} action {name!r}: its circuit is open "
                    "(too many failures in a row); not called"
                )
            try:
                result = fn(client, *args, **kwargs)
            except Exception:
                h.request("breaker", (service_id, name, "failed"))
                raise
            h.request("breaker", (service_id, name, "succeeded"))
            return result

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"<service {self._id!r}>"


class ServicesView:
    """``ctx.services``: attribute access by service id.

    ``current_host`` gives the host of the step running now (None outside one): a service
    is set up once per process, but each call of a guarded action asks the engine of the
    step that makes it.
    """

    def __init__(
        self, host: Any, workflow_id: str, current_host: Callable[[], Any] = lambda: None
    ) -> None:
        self._host = host
        self._workflow = workflow_id
        self._current_host = current_host

    def __getattr__(self, service_id: str) -> Any:
        if service_id.startswith("_"):
            raise AttributeError(service_id)
        key = (self._workflow, service_id)
        # A host may keep its own (an inline engine's steps share a process with others).
        ready: dict[tuple[str, str], Any] = getattr(self._host, "services_cache", _ready)
        bound = ready.get(key)
        if bound is None:
            with _lock:
                bound = ready.get(key)
                if bound is None:
                    blob = self._host.request("service", service_id)
                    instance = pickle.loads(blob)
                    service = instance.service
                    bound = ready[key] = _Bound(
                        service_id,
                        instance.create(),
                        dict(service.actions),
                        getattr(service, "guarded", frozenset()),
                        self._host,
                        self._current_host,
                    )
        return bound

    def __repr__(self) -> str:
        return f"<services of {self._workflow!r}>"
