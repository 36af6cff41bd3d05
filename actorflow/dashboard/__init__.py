"""The dashboard: a single page served by ``engine.asgi()`` at ``/`` (and ``actorflow serve``).

Static files only (``static/``: HTML, plain ES modules, one stylesheet, and dagre, the
vendored graph layout library, with its licence; no build step), talking to the engine's
JSON API, plus the routes it needs besides the REST API: a workflow's graph and a stream of
lifecycle events (server-sent events) for live updates. In token mode the gate
(``triggers/_auth.py``) answers a browser without the token with ``static/login.html``.
"""

from __future__ import annotations

from actorflow.dashboard._routes import dashboard_routes

__all__ = ["dashboard_routes"]
