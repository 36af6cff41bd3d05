"""Security: secrets never leave, nothing from the network is unpickled, rate limits, the
loopback default. (Owner-only data dirs: tests/store/test_lmdb.py; the bearer token:
tests/dashboard/test_api.py; constant-time signature checks: actorflow/triggers.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import actorflow as af
from actorflow.cli._main import build_parser
from tests.definition.test_services import mail
from tests.triggers.webhook_app import define

HOOK = "sekrit-HOOK-4f1c"
MAIL = "sekrit-MAIL-9a2e"
TOKEN = "sekrit-TOKEN-77b0"
KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def _fails_loudly(ctx: Any) -> None:
    raise RuntimeError(f"could not reach {ctx.services.mail.send('x')['via']}")


async def _requests(app: Any, calls: list[tuple[str, str, bytes, dict[str, str]]]) -> list[Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [
            await client.request(method, path, content=body, headers=headers)
            for method, path, body, headers in calls
        ]


def test_secrets_never_appear_in_logs_errors_inspect_metrics_or_the_dashboard(
    make_engine: Callable[..., af.Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    data_dir: Path,
) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", HOOK)
    monkeypatch.setenv("MAIL_KEY", MAIL)
    caplog.set_level(logging.DEBUG)
    engine = define(
        make_engine(workers=1, codecs=("aesgcm",), codec_keys=(f"k1:{KEY_B64}",), api_token=TOKEN)
    )
    svc = mail.with_config(host="smtp.local", port=25, api_key=af.Secret("MAIL_KEY"))
    engine.define("notify", services=[svc]).step(
        "send", lambda ctx: ctx.services.mail.send("ada@x")["key_len"]
    )
    engine.define("broken", services=[svc]).step("fail", _fails_loudly, retry=af.Retry(attempts=1))
    texts: list[str] = []
    with engine:
        assert engine.trigger("notify").result(timeout=60) == len(MAIL)
        failed = engine.trigger("broken")
        with pytest.raises(af.StepFailed) as info:
            failed.result(timeout=60)
        texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
        body = orjson.dumps({"order": "o", "amount": 1})
        good = "sha256=" + hmac.new(HOOK.encode(), body, hashlib.sha256).hexdigest()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        runs = [r.id for r in engine.runs(limit=100)]
        calls = [
            ("POST", "/hooks/orders", body, {"X-Signature": good}),
            ("POST", "/hooks/orders", body, {"X-Signature": "sha256=" + "0" * 64}),
            ("POST", "/hooks/github", body, {}),
            ("GET", "/api/workflows", b"", auth),
            ("GET", "/api/workflows/notify/graph", b"", auth),
            ("GET", "/api/runs", b"", auth),
            ("GET", "/metrics", b"", auth),
            ("GET", "/readyz", b"", {}),
            ("GET", "/", b"", auth),
            ("GET", "/api/runs", b"", {"Authorization": "Bearer wrong"}),
            *[("GET", f"/api/runs/{r}", b"", auth) for r in runs],
        ]
        answers = asyncio.run(_requests(engine.asgi(), calls))
        assert answers[0].status_code == 202 and answers[1].status_code == 401
        texts += [a.text for a in answers] + [str(dict(a.headers)) for a in answers]
        texts += [repr(engine), repr(engine.config), str(engine.config)]
        texts += [str(engine.statistics()), str(engine.health()), engine.metrics()]
        texts += [str(engine.inspect(r).to_dict()) for r in runs]
        texts += [str(engine.graph("notify")), str(engine.workflows)]
        for bad in ("k1:not-base64!", f"k2:{KEY_B64[:-4]}"):
            with pytest.raises(af.ConfigError) as cfg:
                af.EngineConfig(codecs=("aesgcm",), codec_keys=(bad,))
            texts.append(str(cfg.value))
    texts.append(caplog.text)
    raw = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    for secret in (HOOK, MAIL, TOKEN, KEY_B64, KEY_B64[:-4], KEY.hex()):
        leaks = [t[:200] for t in texts if secret in t]
        assert not leaks, (secret, leaks)
        assert secret.encode() not in raw and KEY not in raw


class _Boom:
    """Unpickling this would run ``Path(marker).touch()``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_nothing_from_the_network_is_unpickled(
    make_engine: Callable[..., af.Engine], tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(_Boom(marker))
    engine = define(make_engine(workers=1))
    octet = {"Content-Type": "application/octet-stream"}
    pickled = {"Content-Type": "application/x-python-pickle"}
    as_json = {"Content-Type": "application/json"}  # past the content-type check, to the parser
    with engine:
        run = engine.trigger("approve", {"id": "a"})
        while not engine.approvals():
            asyncio.run(asyncio.sleep(0.01))
        token = engine.approvals()[0]["token"]
        calls = [
            ("POST", "/hooks/open", bomb, octet),
            ("PUT", "/hooks/open", bomb, pickled),
            ("POST", "/api/workflows/open/trigger", bomb, pickled),
            ("POST", f"/api/approvals/{token}/resume", bomb, octet),
            ("POST", "/api/events/paid", bomb, pickled),
            ("POST", f"/api/runs/{run.id}/signals/go", bomb, octet),
            ("POST", f"/api/runs/{run.id}/cancel", bomb, pickled),
            ("POST", "/api/workflows/open/trigger", bomb, as_json),
            ("POST", f"/api/approvals/{token}/resume", bomb, as_json),
            ("POST", f"/api/runs/{run.id}/cancel", bomb, as_json),
            ("GET", f"/api/runs/{run.id}/queries/q?args={bomb.hex()}", b"", {}),
            ("PUT", "/hooks/open", b"{}", {"X-Anything": bomb.hex(), "X-Signature": bomb.hex()}),
        ]
        answers = asyncio.run(_requests(engine.asgi(), calls))
        statuses = [a.status_code for a in answers]
        assert all(400 <= s < 500 for s in statuses[:-1]), statuses
        assert statuses[-1] == 202  # JSON body: fine; the header is just text
        assert not marker.exists()
        assert engine.inspect(run.id).status is af.RunStatus.RUNNING  # untouched: still paused
        assert engine.approvals()[0]["token"] == token
        for a in answers[:-1]:
            assert a.json()["error"]  # each refusal says why, as JSON


def test_rate_limit_per_client(make_engine: Callable[..., af.Engine]) -> None:
    engine = define(make_engine(workers=1))
    with engine:
        app = engine.asgi(rate_limit=5)

        async def burst(client: tuple[str, int], path: str, n: int) -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return [await c.get(path) for _ in range(n)]

        first = asyncio.run(burst(("10.0.0.1", 1), "/api/runs", 30))
        codes = [r.status_code for r in first]
        assert codes[:10] == [200] * 10  # the burst: twice the rate
        assert codes.count(429) >= 15
        refused = next(r for r in first if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert "more than 5 requests per second" in refused.json()["detail"]
        # another client is not affected, and health checks are never limited
        assert [r.status_code for r in asyncio.run(burst(("10.0.0.2", 1), "/api/runs", 5))] == [
            200
        ] * 5
        health = asyncio.run(burst(("10.0.0.1", 1), "/healthz", 20))
        assert {r.status_code for r in health} == {200}
        with pytest.raises(af.ConfigError, match="rate_limit"):
            engine.asgi(rate_limit=-1)
    with pytest.raises(af.ConfigError, match="api_rate_limit"):
        af.EngineConfig(api_rate_limit="fast")  # type: ignore[arg-type]


def test_the_server_binds_to_loopback_unless_told() -> None:
    args = build_parser().parse_args(["serve", "app:engine"])
    assert args.host == "127.0.0.1"
    assert build_parser().parse_args(["serve", "a", "--host", "0.0.0.0"]).host == "0.0.0.0"
