"""One ``actorflow serve`` process (real uvicorn on loopback, its own engine and store) that
every client test talks to, behind an API token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import actorflow as af
from tests.conftest import wait_until
from tests.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "client-test-token"
ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("ACTORFLOW_TOKEN", "ACTORFLOW_API_TOKEN", "ACTORFLOW_URL")
}
ENV["PYTHONPATH"] = str(ROOT)


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    data_dir: Path

    def client(self, **kw: object) -> af.Client:
        return af.Client(self.url, token=self.token, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("client") / "store"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorflow", "serve", "tests/client/app.py:engine",
         "--port", str(port), "--token", TOKEN, "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**ENV, "TEST_APP_DATA_DIR": str(data_dir)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz").status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()[0]
            return False

    try:
        wait_until(up, timeout=60, interval=0.1)
        yield Server(url, TOKEN, data_dir)
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out


@pytest.fixture
def client(server: Server) -> Iterator[af.Client]:
    with server.client() as c:
        yield c
