"""The ASGI app on a real uvicorn server on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

import actorflow as af
from tests.conftest import wait_until
from tests.serving import JSON, SECRET, free_port, serve
from tests.serving import sign as _sign
from tests.triggers.webhook_app import define


@pytest.fixture
def server(make_engine: Callable[..., af.Engine]) -> Iterator[tuple[af.Engine, httpx.Client]]:
    os.environ["TEST_HOOK_SECRET"] = SECRET.decode()
    engine = define(make_engine(workers=1, max_body=4096))
    with (
        serve(engine.asgi()) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield engine, client


def test_signed_webhook_starts_a_durable_run(server: tuple[af.Engine, httpx.Client]) -> None:
    engine, client = server
    body = orjson.dumps({"order": "o-1", "amount": 12.5})
    r = client.post("/hooks/orders", content=body, headers={"X-Signature": _sign(body)})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    # Durable before the 202: the run record is already in the store.
    assert engine.run(run_id).result(timeout=30) == {"order": "o-1", "amount": 12.5}
    detail = client.get(f"/api/runs/{run_id}").json()
    assert detail["status"] == "completed" and detail["workflow_id"] == "orders"


def test_bad_requests_get_clear_4xx(server: tuple[af.Engine, httpx.Client]) -> None:
    engine, client = server
    good = orjson.dumps({"order": "o-1", "amount": 1})
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (good, {}, 401, "missing x-signature"),
        (good, {"X-Signature": "sha256=" + "0" * 64}, 401, "does not match"),
        (b"{not json", {"X-Signature": _sign(b"{not json")}, 400, "not valid JSON"),
        (
            orjson.dumps({"order": "o-1", "amount": -3}),
            {"X-Signature": _sign(orjson.dumps({"order": "o-1", "amount": -3}))},
            422,
            "amount",
        ),
        (b"x" * 5000, {"X-Signature": _sign(b"x" * 5000)}, 413, "limit"),
        (b"", {"X-Signature": _sign(b"")}, 400, "expected JSON, got an empty body"),
        (b" \n", {"X-Signature": _sign(b" \n")}, 400, "expected JSON, got an empty body"),
    ]
    for body, headers, status, text in cases:
        r = client.post("/hooks/orders", content=body, headers=headers)
        assert r.status_code == status, (status, r.text)
        assert text in r.json()["detail"], r.text
    assert engine.runs("orders") == []  # nothing started by a bad request
    r = client.post("/hooks/open", content=good)
    assert r.status_code == 405  # declared as PUT
    r = client.put("/hooks/open")  # no signature to pass: still no empty payload
    assert r.status_code == 400 and "empty body" in r.json()["detail"], r.text
    assert engine.runs("open") == []
    r = client.put("/hooks/open", content=b"{}")  # and the engine still serves
    assert r.status_code == 202 and engine.run(r.json()["run_id"]).result(timeout=30) == {}
    assert client.get("/api/runs/nope").status_code == 404
    r = client.post("/api/workflows/nope/trigger", content=b"{}", headers=JSON)
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_github_and_stripe_signatures(server: tuple[af.Engine, httpx.Client]) -> None:
    engine, client = server
    body = orjson.dumps({"action": "opened"})
    r = client.post("/hooks/github", content=body, headers={"X-Hub-Signature-256": _sign(body)})
    assert r.status_code == 202, r.text
    r = client.post("/hooks/github", content=body, headers={"X-Signature": _sign(body)})
    assert r.status_code == 401
    bare = _sign(body).removeprefix("sha256=")  # the right digest, without GitHub's prefix
    r = client.post("/hooks/github", content=body, headers={"X-Hub-Signature-256": bare})
    assert r.status_code == 401 and "sha256=" in r.json()["detail"], r.text
    stamp = int(time.time())
    sig = hmac.new(SECRET, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    r = client.post(
        "/hooks/stripe", content=body, headers={"Stripe-Signature": f"t={stamp},v1={sig}"}
    )
    assert r.status_code == 202, r.text
    old = stamp - 3600
    sig = hmac.new(SECRET, f"{old}.".encode() + body, hashlib.sha256).hexdigest()
    r = client.post(
        "/hooks/stripe", content=body, headers={"Stripe-Signature": f"t={old},v1={sig}"}
    )
    assert r.status_code == 401 and "too old" in r.json()["detail"]
    ahead = stamp + 3600  # a clock an hour apart is not a replay: its own message
    sig = hmac.new(SECRET, f"{ahead}.".encode() + body, hashlib.sha256).hexdigest()
    r = client.post(
        "/hooks/stripe", content=body, headers={"Stripe-Signature": f"t={ahead},v1={sig}"}
    )
    assert r.status_code == 401 and "in the future" in r.json()["detail"], r.text
    assert len(engine.runs("stripe")) == 1 and len(engine.runs("gh")) == 1


def test_idempotency_key_maps_to_one_run(server: tuple[af.Engine, httpx.Client]) -> None:
    engine, client = server
    body = orjson.dumps({"order": "o-9", "amount": 3})
    headers = {"X-Signature": _sign(body), "Idempotency-Key": "delivery-1"}
    ids = {client.post("/hooks/orders", content=body, headers=headers).json()["run_id"]
           for _ in range(5)}  # fmt: skip
    assert len(ids) == 1
    assert len(engine.runs("orders")) == 1


def test_code_workflow_over_http(server: tuple[af.Engine, httpx.Client]) -> None:
    """A code workflow: started by its webhook, then queried, updated and signalled."""
    engine, client = server
    r = client.post("/hooks/tally", content=orjson.dumps({"n": 2}))
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    wait_until(lambda: any(s.name == "close" for s in engine.inspect(run_id).steps))
    assert client.get(f"/api/runs/{run_id}/queries/n").json()["result"] == 2
    r = client.post(f"/api/runs/{run_id}/updates/add", content=b"5", headers=JSON)
    assert r.status_code == 200 and r.json()["result"] == 7, r.text
    r = client.post(f"/api/runs/{run_id}/updates/add", content=b"-1", headers=JSON)
    assert r.status_code == 422 and "ValueError: negative" in r.json()["detail"]
    r = client.get(f"/api/runs/{run_id}/queries/times", params={"args": "[3]"})
    assert r.json()["result"] == 21
    assert client.get(f"/api/runs/{run_id}/queries/n", params={"args": "{"}).status_code == 400
    assert client.get(f"/api/runs/{run_id}/queries/nope").status_code == 400
    restart = client.post(f"/api/runs/{run_id}/restart", headers=JSON)
    assert restart.status_code == 400  # not panicked
    assert client.get(f"/api/runs/{run_id}/progress").json() == []  # no fan-out
    r = client.post(f"/api/runs/{run_id}/signals/close", content=b'"bye"', headers=JSON)
    assert r.status_code == 202, r.text
    assert engine.run(run_id).result(timeout=30) == {"n": 7, "closing": "bye"}
    assert (
        client.post("/api/runs/nope/signals/close", content=b"1", headers=JSON).status_code == 404
    )


def test_rest_api_trigger_resume_publish_cancel(server: tuple[af.Engine, httpx.Client]) -> None:
    engine, client = server
    assert client.get("/healthz").json() == {"status": "ok"}
    assert {w["id"] for w in client.get("/api/workflows").json()} >= {"orders", "approve"}
    r = client.post(
        "/api/workflows/approve/trigger", content=orjson.dumps({"id": "x1"}), headers=JSON
    )
    assert r.status_code == 202
    run_id = r.json()["run_id"]
    wait_until(lambda: bool(client.get("/api/approvals").json()))
    token = client.get("/api/approvals").json()[0]["token"]
    r = client.post(
        f"/api/approvals/{token}/resume", content=orjson.dumps({"by": "ada"}), headers=JSON
    )
    assert r.status_code == 200, r.text
    r = client.post(f"/api/approvals/{token}/resume", content=b"{}", headers=JSON)
    assert r.status_code == 409 and "already" in r.json()["detail"]
    assert client.post("/api/approvals/zzz/resume", content=b"{}", headers=JSON).status_code == 404
    r = client.post(
        "/api/events/paid", content=orjson.dumps({"payload": 9, "key": "x1"}), headers=JSON
    )
    assert r.status_code == 202
    assert engine.run(run_id).result(timeout=30) == {"paid": 9, "ok": {"by": "ada"}}
    assert (
        client.post("/api/events/paid", content=b'{"colour": 1}', headers=JSON).status_code == 400
    )
    runs = client.get("/api/runs", params={"workflow": "approve"}).json()
    assert [r["id"] for r in runs] == [run_id]
    # Cancel a waiting run over the API.
    run2 = client.post(
        "/api/workflows/approve/trigger", content=b'{"id": "x2"}', headers=JSON
    ).json()
    r = client.post(
        f"/api/runs/{run2['run_id']}/cancel", content=b'{"reason": "test"}', headers=JSON
    )
    assert r.json() == {"run_id": run2["run_id"], "cancelled": True}
    assert engine.run(run2["run_id"]).status() == af.RunStatus.CANCELLED
    assert client.get("/api/runs", params={"limit": "zero"}).status_code == 400


def test_duplicate_webhook_paths_are_refused(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    engine.define("a").step("s", lambda ctx: 1).on_webhook("/same")
    engine.define("b").step("s", lambda ctx: 1).on_webhook("/same")
    with pytest.raises(af.DefinitionError, match="/same"):
        engine.asgi()


def test_webhook_definition_errors() -> None:
    wf = af.Workflow("w").step("s", lambda ctx: 1)
    wf.on_webhook("no-slash").on_webhook("/x", "FETCH").on_webhook("/y", signature="md5")
    wf.on_webhook("/z", signature="github").on_webhook("/s", schema={"type": 12})
    with pytest.raises(af.DefinitionError) as info:
        wf.build()
    text = str(info.value)
    for part in ("path", "method", "signature", "needs secret_env", "JSON Schema"):
        assert part in text, part


def test_unset_secret_refuses_requests(
    make_engine: Callable[..., af.Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    engine = make_engine(workers=1)
    engine.define("w").step("s", lambda ctx: 1).on_webhook("/z", secret_env="NOT_SET_ANYWHERE")
    with caplog.at_level("WARNING", logger="actorflow.http"):
        app = engine.asgi()
    assert "NOT_SET_ANYWHERE is not set" in caplog.text

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/z", content=b"{}", headers={"X-Signature": "sha256=00"})

    with engine:
        r = asyncio.run(post())
        assert r.status_code == 500 and "secret is not set" in r.json()["detail"]
        assert engine.runs("w") == []


def test_actorflow_serve_command(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TEST_APP_DATA_DIR": str(tmp_path / "store"), "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actorflow",
            "serve",
            "tests/triggers/webhook_app.py:engine",
            "--port",
            str(port),
            "--allowed-host",
            "engine.example",
            "--allowed-host",
            ".proxy.example",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(url + "/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=60, interval=0.1)
        r = httpx.put(url + "/hooks/open", content=b'{"hello": "world"}')
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        wait_until(lambda: httpx.get(f"{url}/api/runs/{run_id}").json()["status"] == "completed")
        for host, status in (("engine.example", 200), ("a.proxy.example", 200), ("x.example", 400)):
            r = httpx.get(f"{url}/api/runs/{run_id}", headers={"Host": host})
            assert r.status_code == status, (host, r.text)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    assert b"127.0.0.1" in out  # bound to loopback by default


def test_every_202_is_a_recorded_run_after_sigkill(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "store"
    env = {**os.environ, "TEST_APP_DATA_DIR": str(data_dir), "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actorflow",
            "serve",
            "tests/triggers/webhook_app.py:engine",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    accepted: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(url + "/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=60, interval=0.1)
        with httpx.Client(base_url=url) as client:
            for i in range(200):
                r = client.put("/hooks/open", content=orjson.dumps({"i": i}))
                assert r.status_code == 202
                accepted.append(r.json()["run_id"])
    finally:
        proc.kill()  # SIGKILL right after the last 202
        proc.wait(30)
    from actorflow.store import LmdbStore
    from actorflow.store import _keys as K

    store = LmdbStore(data_dir, read_only=True)
    try:
        for run_id in accepted:
            assert store.get(K.RUNS, K.run_key(run_id)) is not None, run_id
    finally:
        store.close()
