"""Cross-site requests and DNS rebinding: one ASGI layer in front of the whole engine app.

A browser lets any web site send a "simple" request to any address, the loopback one
included: an HTML form (urlencoded, multipart or text/plain bodies), or ``fetch`` with
``mode: "no-cors"``. It also lets a site whose name the attacker re-points at 127.0.0.1 (DNS
rebinding) read the answers, since the page and the server then share an origin. So every
request but a webhook's or a health check's must pass:

1. **Host.** The ``Host`` header (port aside, case and a trailing dot ignored) names the
   address the connection arrived on, one of ``localhost``, ``127.0.0.1`` and ``[::1]`` when
   that address is loopback, or an entry of ``allowed_hosts`` (``"name"``, ``".domain"`` for
   the domain and its sub-domains, ``"*"`` for any). Else 400: a rebinding attacker's page
   names its own host, never one of these.
2. For a state-changing request (any method but GET, HEAD and OPTIONS):

   - **Same origin.** ``Sec-Fetch-Site`` is not ``cross-site`` or ``same-site``, and an
     ``Origin`` (``null`` included) names the request's own host and port, or a configured
     name of ``allowed_hosts`` (never through ``"*"``). Else 403.
   - **JSON.** ``Content-Type`` is ``application/json`` (or ``*/*+json``, parameters
     allowed), or the request carries an ``X-Actorflow-Client`` header (the dashboard sends
     ``dashboard``). Neither can come from another site without a CORS preflight, which this
     app never grants (it sends no CORS headers at all). A POST with neither, even with no
     body, is refused: 415.

Webhooks are exempt: third parties call them under their public name, from anywhere, with
whatever content type they use, and their signature is their authentication (an unsigned
webhook is public by declaration). ``/healthz`` and ``/readyz`` are exempt too: orchestrators
probe them under addresses of their own, and they only read. Paths are route paths: under
a mount prefix, ``/flows/healthz`` is ``/healthz`` (``_paths.route_path``). Refusals are JSON
``{"error": ..., "detail": ...}`` and are answered before anything reads the body.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson

from actorflow._hosts import is_ip, is_loopback, split_authority
from actorflow.triggers._paths import route_path

__all__ = ["CLIENT_HEADER", "HostGuard", "answer"]

log = logging.getLogger("actorflow.http")

#: The header the dashboard sends with its actions (any value proves a same-origin script).
CLIENT_HEADER = "X-Actorflow-Client"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_EXEMPT = frozenset({"/healthz", "/readyz"})
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_WANTED = frozenset({b"host", b"origin", b"sec-fetch-site", b"content-type", b"x-actorflow-client"})


class HostGuard:
    """Wraps the engine's ASGI app (see the module docstring).

    Args:
        app: the app behind the guard.
        allowed_hosts: names served besides the connection's own address (``"*"``: any).
        webhooks: paths of the webhooks (route paths, as declared), which are not checked.
    """

    def __init__(self, app: Any, allowed_hosts: Iterable[str], webhooks: Collection[str]) -> None:
        self.app = app
        entries = {e.lower().removesuffix(".") for e in allowed_hosts}
        self._any = "*" in entries
        entries.discard("*")
        self._names = frozenset(
            str(ipaddress.ip_address(e.strip("[]"))) if is_ip(e.strip("[]")) else e
            for e in entries
            if not e.startswith(".")
        )
        self._domains = tuple(sorted(e for e in entries if e.startswith(".")))
        self._open = frozenset(webhooks) | _EXEMPT

    def _configured(self, host: str) -> bool:
        return host in self._names or any(host.endswith(d) or host == d[1:] for d in self._domains)

    def _host_ok(self, host: str, server: Any) -> bool:
        if self._any or self._configured(host):
            return True
        own = str(server[0]).lower() if server else ""
        return host == own or (host in _LOOPBACK and is_loopback(own))

    def _names_served(self, server: Any) -> str:
        own = str(server[0]).lower() if server else ""
        names = sorted(_LOOPBACK) if is_loopback(own) else [own] if own else []
        shown = [f"[{n}]" if ":" in n else n for n in [*names, *sorted(self._names)]]
        return ", ".join([*shown, *self._domains]) or "no names"

    def _check(self, scope: Any) -> tuple[int, str, str] | None:
        """``(status, error, detail)`` of a refusal, or None to let the request through."""
        headers: dict[bytes, str] = {}
        for key, value in scope["headers"]:
            key = key.lower()
            if key in _WANTED and key not in headers:
                headers[key] = value.decode("latin-1")
        raw_host = headers.get(b"host")
        if raw_host is None:
            return 400, "host", "the request has no Host header"
        host = split_authority(raw_host)
        if host is None or not self._host_ok(host[0], scope.get("server")):
            return (
                400,
                "host",
                f"Host {raw_host!r} is not a name this server answers to "
                f"({self._names_served(scope.get('server'))}); to serve it under that name "
                "add it to allowed_hosts (ACTORFLOW_ALLOWED_HOSTS, engine.asgi(allowed_hosts="
                "...), actorflow serve --allowed-host)",
            )
        if scope["method"] in _SAFE:
            return None
        site = headers.get(b"sec-fetch-site", "").strip().lower()
        if site in ("cross-site", "same-site"):
            return (
                403,
                "cross_site",
                f"Sec-Fetch-Site: {site}: requests that change state are not taken from "
                "another site's pages",
            )
        origin = headers.get(b"origin")
        if origin is not None and not self._same_origin(origin, host):
            return (
                403,
                "cross_site",
                f"Origin {origin!r} is another site than this server ({raw_host}): requests "
                "that change state are taken from its own pages or from programs only; behind "
                "a proxy, add the public host name to allowed_hosts",
            )
        media = headers.get(b"content-type", "").partition(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            return None
        if headers.get(b"x-actorflow-client", "").strip():
            return None
        got = f"Content-Type {headers[b'content-type']!r}" if media else "no Content-Type"
        return (
            415,
            "content_type",
            f"{got}: requests that change state must send JSON with Content-Type: "
            f"application/json (or an {CLIENT_HEADER} header)",
        )

    def _same_origin(self, origin: str, host: tuple[str, str | None]) -> bool:
        try:
            parts = urlsplit(origin.strip())
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or parts.path or parts.query:
            return False
        theirs = split_authority(parts.netloc)
        if theirs is None:
            return False
        if self._configured(theirs[0]):
            return True
        if theirs[0] != host[0]:
            return False
        # Origins leave default ports out; a Host behind a proxy may too.
        default = "443" if parts.scheme == "https" else "80"
        return (host[1] is None and theirs[1] is None) or (theirs[1] or default) == host[1]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or route_path(scope) in self._open:
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, error, detail = refusal
        log.info("refused %s %s: %s", scope["method"], scope["path"], detail)
        await answer(send, status, orjson.dumps({"error": error, "detail": detail}))


async def answer(
    send: Any,
    status: int,
    body: bytes,
    *headers: tuple[bytes, bytes],
    content_type: bytes = b"application/json",
) -> None:
    """Send a whole response (JSON unless told) from a raw ASGI layer (guard, gates, webhooks)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
