"""``actorflow serve APP``: the engine's ASGI app under uvicorn on uvloop."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actorflow.errors import ClientError

__all__ = ["load_app", "load_object", "serve"]


def load_app(
    target: str,
    read_only: bool = False,
    dashboard: bool = True,
    rate_limit: float | None = None,
    allowed_hosts: Sequence[str] = (),
) -> Any:
    """Resolve ``module:attr`` or ``path/to/file.py:attr`` (attr default ``engine``).

    The attribute may be an :class:`~actorflow.Engine` (its ``asgi()`` app is served) or any
    ASGI app.

    Raises:
        ClientError: the module or attribute cannot be found, or ``allowed_hosts`` are given
            for an app that is not an engine's (they would be ignored).
    """
    obj = load_object(target)
    from actorflow.runtime._engine import Engine

    if isinstance(obj, Engine):
        return obj.asgi(
            read_only=read_only,
            dashboard=dashboard,
            rate_limit=rate_limit,
            allowed_hosts=allowed_hosts,
        )
    if allowed_hosts:
        raise ClientError(
            f"--allowed-host: {target} is an ASGI app, not an Engine; its own code decides "
            "the names it serves"
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


def serve(
    target: str,
    host: str,
    port: int,
    log_level: str,
    read_only: bool = False,
    dashboard: bool = True,
    rate_limit: float | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve the app until interrupted (SIGINT/SIGTERM stop the engine cleanly)."""
    import uvicorn

    app = load_app(target, read_only, dashboard, rate_limit, allowed_hosts)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(app, host=host, port=port, loop=loop, http=http, log_level=log_level)
