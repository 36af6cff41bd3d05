"""The dashboard: a single page served by ``engine.asgi()`` at ``/`` (and ``actorflow serve``).

Static files only (``static/``: HTML, one script, one stylesheet; no build step), talking to
the engine's JSON API, plus the routes it needs besides the REST API: a workflow's graph and
a stream of lifecycle events (server-sent events) for live updates.
"""

from __future__ import annotations

from actorflow.dashboard._routes import dashboard_routes

__all__ = ["dashboard_routes"]
