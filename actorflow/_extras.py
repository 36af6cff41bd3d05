"""The optional surfaces, the extras that install them, and the one way to import them.

``pip install actorflow`` is the core: what every embedding needs to run workflows durably
(the actor runtime on pykka, the LMDB store, the worker pool, graph and code workflows,
schedules, retries, timers, approvals, events, the test harness and the CLI). Each other
surface imports its library only when it is used, through :func:`require`, which raises
:class:`~actorflow.errors.MissingExtra` naming the extra to install::

    extra     modules                    what it enables
    serve     starlette, uvicorn         engine.asgi() (webhooks, REST API, dashboard) and
                                         ``actorflow serve`` (with uvloop and httptools);
                                         pulls ``metrics`` for GET /metrics
    metrics   prometheus_client          engine.metrics() and GET /metrics
    schemas   jsonschema                 on_webhook(schema={...}): JSON Schema dicts
    progress  rich                       RunHandle.result(progress=True), ``actorflow wait``
    codecs    zstandard, cryptography    codecs=("zstd", "aesgcm"), .zst run archives
    otel      opentelemetry              af.observability.trace(engine)
    dask      distributed                af.DaskExecutor
    ray       ray                        af.RayExecutor
    client    httpx                      af.Client, af.AsyncClient (an engine's REST API from
                                         elsewhere) and the CLI's remote commands (trigger,
                                         cancel, retry, resume, wait --url)
    tune      tomlkit, matplotlib        ``actorflow tune`` (pulls ``progress`` for its table
                                         and bar): writing [tool.actorflow], ``--plot``
    all       every extra above

:data:`EXTRA_OF` is the table the code and ``tests/test_extras.py`` share: the test checks
that each module's distribution is in its extra in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

from actorflow.errors import MissingExtra

__all__ = ["EXTRA_OF", "require"]

#: The extra that installs each optional top-level module.
EXTRA_OF: Final[dict[str, str]] = {
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "metrics",
    "jsonschema": "schemas",
    "rich": "progress",
    "zstandard": "codecs",
    "cryptography": "codecs",
    "opentelemetry": "otel",
    "distributed": "dask",
    "ray": "ray",
    "httpx": "client",
    "tomlkit": "tune",
    "matplotlib": "tune",
}


def require(module: str, feature: str) -> ModuleType:
    """Import an optional module, or raise an error naming the extra that installs it.

    Args:
        module: the module to import (``"starlette"``, ``"opentelemetry.sdk.trace"``); its
            top-level package must be in :data:`EXTRA_OF`.
        feature: what the caller was asked to do, for the message (``"engine.asgi()"``).

    Returns:
        The module.

    Raises:
        MissingExtra: it cannot be imported (the extra is not installed, or is broken: the
            import's own error is the ``__cause__``).
    """
    extra = EXTRA_OF[module.partition(".")[0]]  # a KeyError here is a bug: add it above
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(feature, extra, module) from exc
