"""Per-client request rate limits in front of the HTTP app (webhooks, API, dashboard).

A token bucket per client address: ``rate`` requests a second on average, bursts of up to
``burst``. A request over the limit gets a 429 with ``Retry-After`` (whole seconds) and a
JSON body, before anything reads its body or touches the engine. Health checks are never
limited (a probe must not be refused because a client floods the app), under whatever
prefix the app is mounted (route paths: ``_paths.route_path``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

import orjson

from actorflow.triggers._origin import answer
from actorflow.triggers._paths import route_path

__all__ = ["RateLimit"]

_EXEMPT = ("/healthz", "/readyz")
_MAX_CLIENTS = 65_536  # buckets kept; the least recently seen are dropped past it


class RateLimit:
    """Wraps an ASGI app (see the module docstring).

    Args:
        app: the app behind the limit.
        rate: requests per second per client address (> 0).
        burst: most requests at once (default: twice the rate, at least 1).
    """

    def __init__(self, app: Any, rate: float, burst: float | None = None) -> None:
        self.app = app
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, 2 * self.rate))
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self.refused = 0

    def _take(self, client: str, now: float) -> float:
        """0 if ``client`` may go now, else seconds until it may."""
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > _MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return wait

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or route_path(scope) in _EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self._take(client[0] if client else "?", time.monotonic())
        if not wait:
            await self.app(scope, receive, send)
            return
        self.refused += 1
        retry = max(1, math.ceil(wait))
        body = orjson.dumps(
            {
                "error": "rate_limited",
                "detail": f"more than {self.rate:g} requests per second from this client; "
                f"retry after {retry}s",
            }
        )
        await answer(send, 429, body, (b"retry-after", str(retry).encode()))
