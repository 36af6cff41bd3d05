"""Where a request lands inside the engine's app, wherever that app is mounted.

Every raw ASGI layer of the app (the host guard, the token gate, the rate limit, the
webhooks) and the dashboard must look at the **route path**: the request's path less the
prefix the app is mounted under. ASGI carries that prefix in ``scope["root_path"]``:
Starlette's and FastAPI's ``Mount("/flows", ...)`` append to it and leave the whole path in
``scope["path"]``; ``uvicorn --root-path /flows`` (behind a proxy that strips the prefix)
sets it and prepends it to ``scope["path"]``; other servers set it and leave ``path`` without
it. :func:`route_path` handles all three the way Starlette's router does, so the layers and
the routes behind them always agree on what a request names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

__all__ = ["mount_point", "route_path", "slash_redirect"]


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path inside the app: ``scope["path"]`` less ``scope["root_path"]``.

    ``""`` for the mount point itself (``/flows`` when mounted at ``/flows``). A path that
    does not start with the root path (a server that leaves the prefix out of ``path``) is
    the route path as it is, and so is one that merely shares its characters
    (``/flowsx`` under ``/flows``).
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    if path[len(root)] == "/":
        return path[len(root) :]
    return path


def mount_point(scope: Mapping[str, Any]) -> str:
    """The public path of the app's root, for a cookie's ``Path``: the root path, or ``/``."""
    root: str = scope.get("root_path", "")
    return root or "/"


def slash_redirect(scope: Mapping[str, Any]) -> bytes | None:
    """A ``Location`` for a request to the mount point itself, or None for any other.

    The mount point (``/flows`` for an app mounted at ``/flows``) is sent on to the same
    with a ``/`` added, where the dashboard is: its page's relative URLs then resolve under
    the prefix. The ``Location`` is relative (``flows/``), so it is right behind a proxy that
    strips the prefix without telling the app.
    """
    path: str = scope["path"]
    if route_path(scope) != "" or path.endswith("/"):
        return None
    raw: bytes = scope.get("raw_path") or quote(path).encode()
    last = raw.rsplit(b"/", 1)[-1]
    query: bytes = scope.get("query_string", b"")
    return (last or b".") + b"/" + (b"?" + query if query else b"")
