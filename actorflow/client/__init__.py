"""A client for an engine on another machine, over the REST API of ``engine.asgi()``.

``af.Client(url, token=...)`` (sync) and ``af.AsyncClient`` (asyncio, as httpx has them)
trigger, wait for, inspect, cancel, signal, query and update runs, list runs and approvals,
resume approvals and publish events, with the engine's method names, arguments and errors;
the handles they return (:class:`RemoteRunHandle`) have :class:`~actorflow.RunHandle`'s
methods. Needs the ``client`` extra (httpx). See docs/client.md.

- ``_transport``: one request with httpx, sync or async; the API's errors as exceptions.
- ``_calls``: each operation as a request and its answer decoded (shared by both clients).
- ``_handle``: the remote run handle.
- ``_sync``, ``_async``: the two clients.
"""

from __future__ import annotations

from actorflow.client._async import AsyncClient
from actorflow.client._handle import RemoteRunHandle
from actorflow.client._sync import Client
from actorflow.client._transport import HttpAnswer

__all__ = ["AsyncClient", "Client", "HttpAnswer", "RemoteRunHandle"]
