"""``engine.asgi()`` mounted under a prefix, and ``engine.lifespan``, on real uvicorn servers.

Each layer of the app that looks at a path (the host guard, the token gate, the rate limit,
the webhooks, the dashboard) must see the route path, wherever the prefix comes from: a
Starlette/FastAPI ``Mount``, ``uvicorn --root-path``, or a server that leaves it out of
``path``. A mounted app gets no lifespan events: ``engine.lifespan`` starts the engine, and
a mounted app that nothing started says how to wire it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

import actorflow as af
from actorflow.triggers._paths import route_path
from tests.serving import SECRET, serve, sign
from tests.triggers.webhook_app import define

ORDER = orjson.dumps({"order": "o-1", "amount": 12.5})


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET.decode())


def _order(client: httpx.Client, path: str) -> httpx.Response:
    return client.post(path, content=ORDER, headers={"X-Signature": sign(ORDER)})


@pytest.mark.parametrize(
    ("path", "root", "route"),
    [
        ("/api/runs", "", "/api/runs"),  # not mounted
        ("/flows/api/runs", "/flows", "/api/runs"),  # Mount, uvicorn --root-path
        ("/api/runs", "/flows", "/api/runs"),  # a server that leaves the prefix out of path
        ("/flows", "/flows", ""),  # the mount point itself
        ("/flows/", "/flows", "/"),
        ("/flowsx/a", "/flows", "/flowsx/a"),  # shares characters, not a segment
        ("/a/flows/healthz", "/a/flows", "/healthz"),  # mounts within mounts
    ],
)
def test_route_path(path: str, root: str, route: str) -> None:
    assert route_path({"path": path, "root_path": root}) == route


def test_webhooks_and_health_checks_under_a_mount_prefix(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = define(make_engine(workers=1))
    outer = Starlette(routes=[Mount("/flows", app=engine.asgi())])
    with engine, serve(outer) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = _order(client, "/flows/hooks/orders")
        assert r.status_code == 202, r.text
        assert engine.run(r.json()["run_id"]).result(timeout=30) == {"order": "o-1", "amount": 12.5}
        # Webhooks and probes keep their exemptions from the Host check under the prefix.
        r = client.put("/flows/hooks/open", content=b"{}", headers={"Host": "hooks.example"})
        assert r.status_code == 202, r.text
        r = client.post("/flows/hooks/open", content=b"{}")
        assert r.status_code == 405 and "PUT" in r.json()["detail"]
        probe = {"Host": "10.1.2.3:8080"}
        assert client.get("/flows/healthz", headers=probe).status_code == 200
        assert client.get("/flows/readyz", headers=probe).json()["ready"] is True
        r = client.get("/flows/api/runs", headers=probe)  # the rest still checks Host
        assert r.status_code == 400 and r.json()["error"] == "host"
        assert client.get("/hooks/orders").status_code == 404  # nothing outside the prefix


def test_uvicorn_root_path(make_engine: Callable[..., af.Engine]) -> None:
    """``uvicorn --root-path /flows`` behind a proxy that strips the prefix."""
    engine = define(make_engine(workers=1))
    app = engine.asgi(token="tok")
    with (
        engine,
        serve(app, root_path="/flows") as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        r = _order(client, "/hooks/orders")  # uvicorn makes the path /flows/hooks/orders
        assert r.status_code == 202, r.text
        assert client.get("/static/app.js").status_code == 200  # open without the token
        visit = client.get("/?token=tok")
        assert visit.status_code == 303 and visit.headers["location"] == "./"
        assert "Path=/flows;" in visit.headers["set-cookie"]

    async def old_style() -> list[int]:
        # A server that sets root_path but leaves it out of path.
        transport = httpx.ASGITransport(app=app, root_path="/flows")
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            hook = await c.post(
                "/hooks/orders", content=ORDER, headers={"X-Signature": sign(ORDER)}
            )
            return [hook.status_code, (await c.get("/healthz")).status_code]

    with engine:
        assert asyncio.run(old_style()) == [202, 200]


def test_token_gate_and_rate_limit_under_a_prefix(make_engine: Callable[..., af.Engine]) -> None:
    engine = define(make_engine(workers=1))
    gated = Starlette(routes=[Mount("/flows", app=engine.asgi(token="tok"))])
    with engine, serve(gated) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/flows/healthz").status_code == 200  # probes and assets are open
        assert client.get("/flows/static/app.js").status_code == 200
        assert _order(client, "/flows/hooks/orders").status_code == 202  # signed, not gated
        assert client.get("/flows/api/runs").status_code == 401
        visit = client.get("/flows/?token=tok")
        assert visit.status_code == 303, visit.text
        assert visit.headers["location"] == "./"  # the page, under the prefix
        cookie = visit.headers["set-cookie"]
        assert "Path=/flows;" in cookie and "HttpOnly" in cookie  # for this app only
        r = client.get("/flows/api/runs", headers={"Cookie": cookie.split(";")[0]})
        assert r.status_code == 200, r.text
        # One request per 1,000 s: a client's second API request is refused, however slow.
        limited = Starlette(routes=[Mount("/flows", app=engine.asgi(rate_limit=0.001))])
        with serve(limited) as url2:
            for _ in range(3):  # probes are never limited
                assert client.get(f"{url2}/flows/healthz").status_code == 200
                assert client.get(f"{url2}/flows/readyz").status_code == 200
            assert client.get(f"{url2}/flows/api/runs").status_code == 200
            r = client.get(f"{url2}/flows/api/runs")
            assert r.status_code == 429 and r.json()["error"] == "rate_limited"


def _asset_urls(html: str) -> list[str]:
    return [
        u for u in re.findall(r'(?:href|src)="([^"]+)"', html) if not u.startswith(("#", "data:"))
    ]


def test_dashboard_page_assets_and_api_under_a_prefix(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = define(make_engine(workers=1))
    outer = FastAPI()
    outer.mount("/flows", engine.asgi())
    with engine, serve(outer) as url, httpx.Client(base_url=url, timeout=30) as client:
        run = engine.trigger("orders", {"order": "o-2", "amount": 1})
        run.result(timeout=30)
        page = client.get("/flows", follow_redirects=True)
        assert page.status_code == 200 and str(page.url) == f"{url}/flows/"
        assert "text/html" in page.headers["content-type"]
        assets = _asset_urls(page.text)
        # The stylesheet, the layout library and the app's entry module, all relative.
        assert len(assets) == 3 and not [u for u in assets if u.startswith("/")], assets
        script = ""
        todo = list(assets)
        seen: set[str] = set()
        while todo:  # the page's assets, and every module the scripts import
            asset = todo.pop()
            if asset in seen:
                continue
            seen.add(asset)
            r = client.get(urljoin(str(page.url), asset))
            assert r.status_code == 200, asset
            if asset.endswith(".js"):
                script += r.text
                imported = re.findall(r'from "\./([\w.]+\.js)"', r.text)
                todo += [f"static/{name}" for name in imported]
        assert "static/run.js" in seen and "static/graph.js" in seen
        # Every URL the scripts request is relative to the page.
        requested = re.findall(r'(?:api|post|fetch|EventSource)\(\s*[`"\']([^`"\'$]+)', script)
        assert {"api/runs?", "ui/config", "api/stream"} <= set(requested), requested
        assert not [u for u in requested if u.startswith("/")], requested
        base = str(page.url)
        assert client.get(urljoin(base, "ui/config")).json()["workflows"] == engine.workflows
        runs = client.get(urljoin(base, "api/runs?workflow=orders")).json()
        assert [r["id"] for r in runs] == [run.id]
        graph = client.get(urljoin(base, "api/workflows/orders/graph")).json()
        assert [n["name"] for n in graph["nodes"]] == ["accept"]
        with client.stream("GET", urljoin(base, "api/stream")) as stream:
            assert next(stream.iter_lines()) == ": connected"


def test_the_mount_point_itself_is_sent_to_the_page(make_engine: Callable[..., af.Engine]) -> None:
    """A mount that hands the app its own prefix (no framework redirect in between)."""
    engine = define(make_engine(workers=1))
    app = engine.asgi()

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path="/flows")
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.get(path)

    with engine:
        r = asyncio.run(get("/flows?x=1"))
        assert r.status_code == 307 and r.headers["location"] == "flows/?x=1"


def test_lifespan_starts_the_engine_off_the_loop_and_stops_it(
    make_engine: Callable[..., af.Engine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = define(make_engine(workers=1))
    app = FastAPI(lifespan=engine.lifespan)
    app.mount("/flows", engine.asgi())

    @app.get("/loop")
    async def loop() -> dict[str, int]:
        return {"thread": threading.get_ident()}

    assert not engine.running
    with (
        caplog.at_level(logging.INFO, logger="actorflow.engine"),
        serve(app) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        assert engine.running
        r = _order(client, "/flows/hooks/orders")
        assert r.status_code == 202, r.text
        assert engine.run(r.json()["run_id"]).result(timeout=30)["order"] == "o-1"
        assert client.get("/flows/readyz").json()["ready"] is True
        loop_thread = client.get("/loop").json()["thread"]
    assert not engine.running  # stopped at shutdown
    started = [r for r in caplog.records if r.getMessage().startswith("engine started")]
    stopped = [r for r in caplog.records if r.getMessage() == "engine stopped"]
    assert len(started) == len(stopped) == 1
    assert started[0].thread != loop_thread and stopped[0].thread != loop_thread


def test_lifespan_composes_with_the_apps_own(make_engine: Callable[..., af.Engine]) -> None:
    engine = define(make_engine(workers=1))
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        seen.append("service up")
        async with engine.lifespan(app):
            seen.append(f"engine running: {engine.running}")
            yield
        seen.append(f"engine running: {engine.running}")

    app = FastAPI(lifespan=lifespan)
    app.mount("/flows", engine.asgi())
    with serve(app) as url:
        r = httpx.put(f"{url}/flows/hooks/open", content=b"{}", timeout=30)
        assert r.status_code == 202, r.text
        assert engine.run(r.json()["run_id"]).result(timeout=30) == {}
    assert seen == ["service up", "engine running: True", "engine running: False"]


def test_lifespan_leaves_an_engine_it_did_not_start_alone(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = define(make_engine(workers=1))

    async def service() -> bool:
        async with engine.lifespan():
            return engine.running

    with engine:
        assert asyncio.run(service()) is True
        assert engine.running  # not stopped: the lifespan did not start it
        app = FastAPI(lifespan=engine.lifespan)
        app.mount("/flows", engine.asgi())
        with serve(app) as url:
            assert httpx.get(f"{url}/flows/readyz", timeout=30).status_code == 200
        assert engine.running
        assert engine.trigger("open", {}).result(timeout=30) == {}


def test_lifespan_start_failure_fails_the_service_start(
    make_engine: Callable[..., af.Engine], data_dir: Any
) -> None:
    """The store is held by another engine: the service does not boot "healthy"."""
    holder = make_engine(workers=1)
    holder.define("x").step("s", lambda ctx: 1)
    engine = define(make_engine(workers=1))

    async def service() -> None:
        async with engine.lifespan():
            pass

    with holder, pytest.raises(af.StoreError):
        asyncio.run(service())
    assert not engine.running


def test_a_start_the_server_gives_up_on_is_stopped(make_engine: Callable[..., af.Engine]) -> None:
    """Cancelled while the engine starts (Ctrl-C during boot): it is not left running."""
    engine = define(make_engine(workers=1))

    async def boot() -> None:
        async with engine.lifespan():
            await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(boot())
        await asyncio.sleep(0)  # the task now waits for the start, in its thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    for thread in threading.enumerate():
        if thread.name.startswith("actorflow-lifespan"):
            thread.join(60)
    assert not engine.running
    with engine:  # the store was let go
        assert engine.trigger("open", {}).result(timeout=30) == {}


def test_a_mounted_app_nothing_started_says_how_to_wire_the_lifespan(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = define(make_engine(workers=1))
    app = FastAPI()  # no lifespan: the mounted app never hears of start-up
    app.mount("/flows", engine.asgi())
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        ready = client.get("/flows/readyz")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert "FastAPI(lifespan=engine.lifespan)" in ready.json()["detail"]
        health = client.get("/flows/healthz")
        assert health.status_code == 503 and health.json()["status"] == "not_started"
        assert "engine.lifespan" in health.json()["detail"]
        for r in (
            client.get("/flows/api/runs"),
            client.post("/flows/api/workflows/open/trigger", json={}),
            _order(client, "/flows/hooks/orders"),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "engine_not_running"
            assert "lifespan=engine.lifespan" in r.json()["detail"]
        # The page and its assets load, and show that error from the API.
        assert client.get("/flows/").status_code == 200
        assert client.get("/flows/static/app.js").status_code == 200
    assert not engine.running
