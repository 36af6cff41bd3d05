"""An optional bearer token in front of the REST API, the dashboard and ``/metrics``.

With ``engine.asgi(token=...)`` (or ``api_token`` / ``ACTORFLOW_API_TOKEN``), every request
except webhooks (they carry their own signatures), ``/healthz``, ``/readyz`` and the
dashboard's static files must present the token:

- an ``Authorization: Bearer <token>`` header (the CLI sends ``$ACTORFLOW_TOKEN``), or
- the ``actorflow_token`` cookie, which ``/?token=<token>`` sets (HttpOnly, SameSite=Strict)
  before redirecting to ``./`` (the page) so the token leaves the address bar; the
  dashboard's requests and its event stream then carry it.

Mounted under a prefix, those paths are under it (``/flows/?token=...``; route paths:
``_paths.route_path``) and the cookie's ``Path`` is the prefix, so that it goes to this app
only. Tokens are compared in constant time; a refusal is a 401 with a JSON body, except the
dashboard's page itself asked for by a browser (``Accept: text/html``): that 401 is the login
page, a form that sends the token as ``./?token=...``, which the rule above turns into the
cookie at once.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs, quote

import orjson

from actorflow.triggers._origin import answer
from actorflow.triggers._paths import mount_point, route_path

__all__ = ["TokenGate"]

_OPEN = ("/healthz", "/readyz", "/static/")
_COOKIE = "actorflow_token"


class TokenGate:
    """Wraps an ASGI app (see the module docstring).

    Args:
        app: the app behind the gate.
        token: the token; an empty one lets everything through.
        login: answer a browser asking for ``/`` without the token with the login page
            (the app serves the dashboard there).
    """

    def __init__(self, app: Any, token: str, login: bool = False) -> None:
        self.app = app
        self._token = token.encode()
        self._login = login

    def _ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self._token:
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path.startswith(_OPEN):
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = _cookie(headers.get("cookie", ""))
        if self._ok(bearer) or self._ok(cookie):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
        if path == "/" and self._ok((query.get("token") or [None])[0]):
            # The dashboard's first visit: keep the token in a cookie, not in the address bar.
            # The redirect is relative (the page itself, whatever the prefix), the cookie's
            # Path the prefix: the mounting service's other routes never receive it.
            cookie_path = quote(mount_point(scope), safe="/")
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", b"./"),
                        (
                            b"set-cookie",
                            f"{_COOKIE}={self._token.decode()}; Path={cookie_path}; HttpOnly; "
                            "SameSite=Strict".encode(),
                        ),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if self._login and path == "/" and "text/html" in headers.get("accept", ""):
            wrong = "token" in query  # a token was given, and it was not this one
            page = _login_page().replace("{{WRONG}}", "" if wrong else " hidden")
            await answer(
                send,
                401,
                page.encode(),
                (b"www-authenticate", b"Bearer"),
                content_type=b"text/html; charset=utf-8",
            )
            return
        body = orjson.dumps(
            {
                "error": "unauthorized",
                "detail": "this API needs its token: an 'Authorization: Bearer' header (or, for "
                "the dashboard, open its page once with ?token=...)",
            }
        )
        await answer(send, 401, body, (b"www-authenticate", b"Bearer"))


def _login_page() -> str:
    from actorflow.dashboard._routes import STATIC

    return (STATIC / "login.html").read_text()


def _cookie(header: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == _COOKIE:
            return value
    return None
