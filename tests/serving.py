"""A real uvicorn server on 127.0.0.1 (a free port) in a thread, for the HTTP tests."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.conftest import wait_until

SECRET = b"hook-secret"  # webhook_app's TEST_HOOK_SECRET
JSON = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL. ``options``: uvicorn's."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", log_level="warning",
        timeout_graceful_shutdown=1, **options,
    )  # fmt: skip
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(30)


def sign(body: bytes) -> str:
    """The ``X-Signature`` (and GitHub) header for ``body``."""
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
