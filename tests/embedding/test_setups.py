"""Every set-up of docs/embedding.md, served for real.

The page's Python blocks are files (each starts with a ``# path.py`` line). For each set-up
the test writes its files, as the page shows them, to a temporary directory (Django's
project besides: ``tests/fixtures/django_site``), runs the page's uvicorn command in a
subprocess on a loopback port, and, under the prefix: waits for ``/readyz``, starts a run
through the webhook, follows it through the API, loads the dashboard's page and one of its
assets, calls the service's own route, then stops the server with SIGTERM, as a deploy
does, and checks the lifespan ran (startup and shutdown) and the run is in the store.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

import actorflow as af
from tests.conftest import wait_until
from tests.serving import free_port, serve

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "embedding.md"
DJANGO_SITE = ROOT / "tests" / "fixtures" / "django_site"
_FILE = re.compile(r"```python\n# (?P<name>[\w/]+\.py)\n(?P<code>.*?)```", re.S)


def files() -> dict[str, str]:
    """The page's files: name -> code."""
    found = {m["name"]: m["code"] for m in _FILE.finditer(PAGE.read_text())}
    assert found, "docs/embedding.md shows no files"
    return found


#: set-up: (its file, the app uvicorn serves, extra uvicorn arguments, the service's own
#: route and its answer or None).
SETUPS: dict[str, tuple[str, str, list[str], dict[str, Any] | None]] = {
    "fastapi": ("fastapi_app.py", "fastapi_app:app", [], {"service": "shop"}),
    "fastapi_own_lifespan": (
        "fastapi_own_lifespan.py",
        "fastapi_own_lifespan:app",
        [],
        {"service": "shop", "ready": "before the engine"},
    ),
    "starlette": ("starlette_app.py", "starlette_app:app", [], {"service": "shop"}),
    "uvicorn_root_path": ("service.py", "service:app", ["--root-path", "/flows"], None),
    "django": (
        "mysite/asgi.py",
        "mysite.asgi:application",
        [],
        {"service": "shop", "framework": "django"},
    ),
}


def test_every_file_of_the_page_is_served_and_every_command_shown() -> None:
    text = PAGE.read_text()
    shown = set(files())
    assert shown == {"flows.py", *(f for f, _, _, _ in SETUPS.values())}
    for _, target, extra, _ in SETUPS.values():
        assert f"uvicorn {' '.join([target, *extra])}" in text, target


def _proxy(upstream: str, prefix: str) -> Any:
    """A reverse proxy serving ``upstream`` at ``prefix``/, stripping the prefix (as nginx's
    ``location /flows/ { proxy_pass http://upstream/; }`` does)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["raw_path"].decode()
        if not path.startswith(prefix + "/"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        query = scope["query_string"].decode()
        url = upstream + path[len(prefix) :] + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"host",)]
        async with httpx.AsyncClient() as client:
            r = await client.request(scope["method"], url, headers=headers, content=body)
        hop = {b"content-length", b"content-encoding", b"transfer-encoding", b"connection"}
        out = [(k, v) for k, v in r.headers.raw if k.lower() not in hop]
        out.append((b"content-length", str(len(r.content)).encode()))
        await send({"type": "http.response.start", "status": r.status_code, "headers": out})
        await send({"type": "http.response.body", "body": r.content})

    return app


@contextmanager
def _uvicorn(cwd: Path, target: str, extra: list[str]) -> Iterator[tuple[str, Any]]:
    port = free_port()
    log = (cwd / "server.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "info", *extra],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(cwd)},
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _ready(client: httpx.Client, url: str, proc: Any, log: Path) -> bool:
    assert proc.poll() is None, f"the server exited:\n{log.read_text()}"
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("setup", list(SETUPS))
def test_the_setup_serves_under_its_prefix(setup: str, tmp_path: Path) -> None:
    module, target, extra, own = SETUPS[setup]
    if setup == "django":
        shutil.copytree(DJANGO_SITE / "mysite", tmp_path / "mysite")
    for name in ("flows.py", module):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(files()[name])
    log = tmp_path / "server.log"
    with (
        _uvicorn(tmp_path, target, extra) as (server, proc),
        httpx.Client(timeout=30) as client,
    ):
        if "--root-path" in extra:
            # Behind a proxy that serves the app at /flows/ and strips the prefix.
            proxied = serve(_proxy(server, "/flows"))
            base = proxied.__enter__() + "/flows"
        else:
            proxied, base = None, server + "/flows"
        try:
            wait_until(lambda: _ready(client, f"{base}/readyz", proc, log), timeout=120)
            assert client.get(f"{base}/healthz").json() == {"status": "ok"}
            hook = client.post(f"{base}/orders", json={"lines": [[2, 9.5], [1, 30.0]]})
            assert hook.status_code == 202, hook.text
            run_id = hook.json()["run_id"]

            def done() -> bool:
                detail = client.get(f"{base}/api/runs/{run_id}")
                assert detail.status_code == 200, detail.text
                return bool(detail.json()["status"] == "completed")

            wait_until(done, timeout=60)
            runs = client.get(f"{base}/api/runs?workflow=orders").json()
            assert [r["id"] for r in runs] == [run_id]
            page = client.get(f"{base}/")
            assert page.status_code == 200 and "<title>actorflow</title>" in page.text
            scripts = re.findall(r'src="([^"]+)"', page.text)
            assert scripts and not [u for u in scripts if u.startswith("/")], scripts
            app = next(u for u in scripts if u.endswith("app.js"))  # the entry module
            asset = client.get(urljoin(f"{base}/", app))
            assert asset.status_code == 200 and "EventSource" in asset.text
            for other in scripts:  # the layout library too, under the prefix
                assert client.get(urljoin(f"{base}/", other)).status_code == 200, other
            if setup == "django":  # Mount("/", django_app) takes /flows, as the page says
                assert client.get(base).status_code == 404
            elif proxied is None:  # the mount point itself is sent on to the page
                followed = client.get(base, follow_redirects=True)
                assert str(followed.url) == f"{base}/" and followed.text == page.text
            if own is not None:
                assert client.get(f"{server}/").json() == own  # the service's own route
        finally:
            if proxied is not None:
                proxied.__exit__(None, None, None)
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once shut down (0 from older versions).
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()
    text = log.read_text()
    assert "Application startup complete" in text and "Application shutdown complete" in text
    assert "lifespan' protocol appears unsupported" not in text, text
    assert "Traceback" not in text, text
    # The lifespan stopped the engine: the store is free, and holds the run.
    with af.Engine(data_dir=tmp_path / ".actorflow", workers=1) as engine:
        assert engine.run(run_id).result(timeout=30) == 49.0
