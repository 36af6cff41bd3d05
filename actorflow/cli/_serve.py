"""``actorflow serve APP``: the engine's ASGI app under uvicorn on uvloop."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actorflow._extras import require
from actorflow.cli._output import Output
from actorflow.errors import ClientError

__all__ = ["load_app", "load_object", "serve"]


def load_app(
    target: str,
    read_only: bool = False,
    dashboard: bool = True,
    rate_limit: float | None = None,
    allowed_hosts: Sequence[str] = (),
    token: str | None = None,
) -> Any:
    """Resolve ``module:attr`` or ``path/to/file.py:attr`` (attr default ``engine``).

    The attribute may be an :class:`~actorflow.Engine` (its ``asgi()`` app is served) or any
    ASGI app.

    Args:
        target: what to serve.
        read_only: refuse the API's actions.
        dashboard: serve the dashboard.
        rate_limit: requests per second per client (None: the engine's setting).
        allowed_hosts: host names served besides the engine's ``allowed_hosts``.
        token: the bearer token the API requires (None: the engine's ``api_token``).

    Raises:
        ClientError: the module or attribute cannot be found, or ``allowed_hosts`` or a
            ``token`` are given for an app that is not an engine's (they would be ignored).
    """
    return _app_of(
        load_object(target), target, read_only, dashboard, rate_limit, allowed_hosts, token
    )


def _app_of(
    obj: Any,
    target: str,
    read_only: bool,
    dashboard: bool,
    rate_limit: float | None,
    allowed_hosts: Sequence[str],
    token: str | None,
) -> Any:
    from actorflow.engine._engine import Engine

    if isinstance(obj, Engine):
        return obj.asgi(
            read_only=read_only,
            dashboard=dashboard,
            token=token,
            rate_limit=rate_limit,
            allowed_hosts=allowed_hosts,
        )
    for given, option in ((allowed_hosts, "--allowed-host"), (token, "--token")):
        if given:
            raise ClientError(
                f"{option}: {target} is an ASGI app, not an Engine; its own code decides "
                "who it serves"
            )
    return obj


def load_object(target: str) -> Any:
    """The object ``module:attr`` or ``path/to/file.py:attr`` names (attr default ``engine``).

    Raises:
        ClientError: the module or attribute cannot be found.
    """
    where, _, attr = target.partition(":")
    attr = attr or "engine"
    if where.endswith(".py") or os.sep in where:
        path = Path(where).resolve()
        if not path.is_file():
            raise ClientError(f"APP: no such file {where!r}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ClientError(f"APP: cannot import {where!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ClientError(f"APP: cannot import module {where!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ClientError(f"APP: module {where!r} has no attribute {attr!r}") from None


class _RedactTokens(logging.Filter):
    """Keeps tokens out of the access log: the dashboard's first visit is ``/?token=...``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_QUERY.sub(r"\1token=[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


_TOKEN_QUERY = re.compile(r"([?&])token=[^&\s]*")


def serve(
    target: str,
    host: str,
    port: int,
    log_level: str,
    read_only: bool = False,
    dashboard: bool = True,
    rate_limit: float | None = None,
    allowed_hosts: Sequence[str] = (),
    token: str | None = None,
    out: Output | None = None,
) -> None:
    """Serve the app until interrupted (SIGINT/SIGTERM stop the engine cleanly).

    The token is never printed: the access log shows ``token=[redacted]``.
    """
    uvicorn = require("uvicorn", "actorflow serve")

    obj = load_object(target)
    app = _app_of(obj, target, read_only, dashboard, rate_limit, allowed_hosts, token)
    required = token or getattr(getattr(obj, "config", None), "api_token", "")
    if out is not None:
        where = "--token" if token else "the engine's api_token ($ACTORFLOW_API_TOKEN)"
        out.note(
            f"actorflow serve: the API requires a bearer token (from {where})"
            if required
            else "actorflow serve: no API token: whoever reaches the port can use the API "
            "(--token or ACTORFLOW_API_TOKEN sets one)"
        )
    logging.getLogger("uvicorn.access").addFilter(_RedactTokens())
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(app, host=host, port=port, loop=loop, http=http, log_level=log_level)
