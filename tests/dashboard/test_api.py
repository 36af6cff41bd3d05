"""The routes the dashboard uses: paging that reads a page's worth of records however many
runs the store holds, a workflow's graph, live events over SSE, and read-only mode."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import actorflow as af
from actorflow.store._memory import MemoryStore
from tests import steps


class CountingStore(MemoryStore):
    """The in-memory store, counting the records reads made from the test's thread return.

    Only that thread counts: the engine's own actors keep reading while runs finish, and
    those reads are not the page's cost.
    """

    def __init__(self) -> None:
        super().__init__()
        self.read = 0
        self._thread = threading.get_ident()

    def get(self, db: str, key: bytes) -> bytes | None:
        if threading.get_ident() == self._thread:
            self.read += 1
        return super().get(db, key)

    def scan(self, db: str, prefix: bytes = b"", **kwargs: Any) -> list[tuple[bytes, bytes]]:
        rows = super().scan(db, prefix, **kwargs)
        if threading.get_ident() == self._thread:
            self.read += len(rows)
        return rows


def test_a_page_reads_about_a_page_of_records_whatever_the_store_holds() -> None:
    store = CountingStore()
    engine = af.Engine(store=store, workers=1)
    engine.define("noop").step("x", steps.noop)
    engine.define("other").step("x", steps.noop)
    with engine:
        first = engine.trigger_many("noop", [{}] * 1500)
        middle = time.time()
        time.sleep(0.01)
        second = engine.trigger_many("other", [{}] * 1500)
        for run in first[-5:] + second[-5:]:
            run.result(timeout=60)
        store.read = 0
        page = engine.runs(limit=50)
        assert [r.workflow_id for r in page] == ["other"] * 50
        assert store.read <= 2 * 64  # one scan page, not 3,000 records
        store.read = 0
        next_page = engine.runs(limit=50, before=page[-1].id)
        assert next_page[0].id < page[-1].id and len(next_page) == 50
        assert store.read <= 2 * 64
        store.read = 0
        older = engine.runs(limit=50, until=middle)  # starts below a time: no skipping
        assert {r.workflow_id for r in older} == {"noop"} and len(older) == 50
        assert store.read <= 2 * 64
        store.read = 0
        recent = engine.runs(limit=None, since=middle)
        assert len(recent) == 1500 and {r.workflow_id for r in recent} == {"other"}
        assert store.read <= 2 * 1500 + 2 * 64  # stops at the first older run
        by_workflow = engine.runs("noop", limit=20)
        assert [r.workflow_id for r in by_workflow] == ["noop"] * 20
        with pytest.raises(af.ClientError, match="since: expected seconds"):
            engine.runs(since="yesterday")  # type: ignore[arg-type]


def _get(app: Any, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path)

    return asyncio.run(go())


def test_paging_graph_and_dashboard_routes(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    (
        engine.define("flow")
        .step("a", steps.noop)
        .if_("big", lambda ctx: True)
        .step("b", steps.noop)
        .else_()
        .step("c", steps.noop)
        .endif()
        .for_each("xs", lambda ctx: [1, 2], steps.slow_item)
    )
    with engine:
        app = engine.asgi()
        ids = [r.id for r in engine.trigger_many("flow", [{"log": "/dev/null"}] * 5)]
        for run_id in ids:
            engine.run(run_id).result(timeout=60)
        first = _get(app, "/api/runs?limit=2")
        assert [r["id"] for r in first.json()] == ids[::-1][:2]
        cursor = first.headers["x-next-cursor"]
        second = _get(app, f"/api/runs?limit=2&before={cursor}")
        assert [r["id"] for r in second.json()] == ids[::-1][2:4]
        assert _get(app, "/api/runs?limit=2&since=soon").status_code == 400
        graph = _get(app, "/api/workflows/flow/graph").json()
        kinds = {n["name"]: n["kind"] for n in graph["nodes"]}
        assert kinds == {
            "a": "step", "big": "branch", "b": "step", "c": "step", "big#join": "join",
            "xs": "for_each", "slow_item": "step",
        }  # fmt: skip
        edges = {(e["from"], e["to"], e["type"], e.get("label")) for e in graph["edges"]}
        index = {n["name"]: n["id"] for n in graph["nodes"]}
        assert (index["big"], index["c"], "arm", "else") in edges
        assert (index["xs"], index["slow_item"], "body", None) in edges
        assert _get(app, "/api/workflows/nope/graph").status_code == 404
        page = _get(app, "/")
        assert page.status_code == 200 and 'src="static/app.js"' in page.text  # relative
        assert _get(app, "/static/app.js").status_code == 200
        assert _get(app, "/ui/config").json() == {"read_only": False, "workflows": ["flow"]}


def test_live_events_stream(make_engine: Callable[..., af.Engine]) -> None:
    from tests.serving import serve

    engine = make_engine()
    engine.define("w").step("a", steps.noop)
    with engine, serve(engine.asgi()) as url:
        lines: list[str] = []
        with httpx.stream("GET", f"{url}/api/stream", timeout=30) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            run = None
            for line in r.iter_lines():
                lines.append(line)
                if line == ": connected":
                    run = engine.trigger("w", {})
                if '"RunFinished"' in line:
                    break
    events = [line for line in lines if line.startswith("data: ")]
    assert run is not None and [run.id in e for e in events] == [True, True, True]
    assert ['"type":"RunStarted"' in events[0], '"type":"RunFinished"' in events[-1]] == [
        True,
        True,
    ]


def test_a_bearer_token_guards_the_api_dashboard_and_metrics(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    engine.define("w").step("a", steps.noop).on_webhook("/hooks/w")
    with engine:
        app = engine.asgi(token="s3cret-token")

        async def go() -> dict[str, Any]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                out: dict[str, Any] = {}
                for path in ("/api/runs", "/", "/metrics", "/api/stream", "/ui/config"):
                    out[path] = (await c.get(path)).status_code
                out["wrong"] = (
                    await c.get("/api/runs", headers={"Authorization": "Bearer nope"})
                ).status_code
                out["bearer"] = (
                    await c.get("/api/runs", headers={"Authorization": "Bearer s3cret-token"})
                ).status_code
                out["healthz"] = (await c.get("/healthz")).status_code
                out["static"] = (await c.get("/static/app.js")).status_code
                out["webhook"] = (await c.post("/hooks/w", json={})).status_code
                first = await c.get("/?token=s3cret-token")
                out["visit"] = (first.status_code, first.headers.get("location"))
                out["cookie"] = first.headers.get("set-cookie", "")
                out["after"] = (await c.get("/api/runs")).status_code  # the cookie now
                return out

        out = asyncio.run(go())
    assert {p: out[p] for p in ("/api/runs", "/", "/metrics", "/api/stream", "/ui/config")} == {
        "/api/runs": 401, "/": 401, "/metrics": 401, "/api/stream": 401, "/ui/config": 401,
    }  # fmt: skip
    assert out["wrong"] == 401 and out["bearer"] == 200
    assert out["healthz"] == 200 and out["static"] == 200 and out["webhook"] == 202
    assert out["visit"] == (303, "./")  # the page itself, relative: right under any prefix
    assert "HttpOnly" in out["cookie"] and "SameSite=Strict" in out["cookie"]
    assert "Path=/;" in out["cookie"]  # not mounted: the whole site
    assert out["after"] == 200


def test_the_listing_says_duration_parent_and_key_and_finds_runs_by_id_or_key(
    make_engine: Callable[..., af.Engine],
) -> None:
    """Issue 25: the runs list had no duration (never sent), no child marks, and no search
    by run id or idempotency key; each is answered from the records, over the API too."""
    store = CountingStore()
    engine = af.Engine(store=store, workers=1)
    engine.define("kid").step("x", steps.noop)
    engine.define("mom").subflow("sub", "kid")
    engine.define("other").step("x", steps.noop)
    with engine:
        app = engine.asgi()
        mom = engine.trigger("mom", {}, idempotency_key="order-7")
        mom.result(timeout=60)
        same_key = engine.trigger("other", {}, idempotency_key="order-7")
        same_key.result(timeout=60)
        others = [engine.trigger("other", {}, idempotency_key=f"o-{i}") for i in range(40)]
        for run in others:
            run.result(timeout=60)
        child_id = mom.inspect().step("sub").child_run_id
        rows = {r.id: r for r in engine.runs(limit=None)}
        top = rows[mom.id]
        assert top.duration is not None and top.duration == top.ended_at - top.created_at
        assert top.started_at is not None and top.created_at <= top.started_at <= top.ended_at
        assert top.idempotency_key == "order-7" and top.parent_run_id is None
        assert rows[child_id].parent_run_id == mom.id

        store.read = 0
        keyed = engine.runs(idempotency_key="order-7")
        assert [r.id for r in keyed] == [same_key.id, mom.id]  # both workflows, newest first
        assert store.read <= 20  # looked up, not a scan of 43 runs
        assert [r.id for r in engine.runs("mom", idempotency_key="order-7")] == [mom.id]
        assert engine.runs(idempotency_key="order-7", status="failed") == []
        assert engine.runs(idempotency_key="nobody") == []

        target = others[17].id
        assert [r.id for r in engine.runs(id_prefix=target)] == [target]
        prefix = target[:12]  # the millisecond part: every run triggered in that ms
        found = engine.runs(id_prefix=prefix, limit=None)
        assert target in [r.id for r in found]
        assert all(r.id.startswith(prefix) for r in found)
        assert [r.id for r in found] == sorted((r.id for r in found), reverse=True)
        assert engine.runs(id_prefix="zzzz") == []
        with pytest.raises(af.ClientError, match="id_prefix: expected a non-empty string"):
            engine.runs(id_prefix="")
        with pytest.raises(af.ClientError, match="idempotency_key: expected a non-empty"):
            engine.runs(idempotency_key=7)  # type: ignore[arg-type]

        listed = _get(app, f"/api/runs?id_prefix={mom.id}").json()
        assert [r["id"] for r in listed] == [mom.id]
        assert listed[0]["duration"] == pytest.approx(top.duration)
        assert listed[0]["idempotency_key"] == "order-7"
        kid = _get(app, f"/api/runs?id_prefix={child_id}").json()[0]
        assert kid["parent_run_id"] == mom.id
        by_key = _get(app, "/api/runs?idempotency_key=order-7&workflow=other").json()
        assert [r["id"] for r in by_key] == [same_key.id]


def test_an_id_prefix_search_pages_and_takes_a_time_window() -> None:
    """Found by a user's probe: "Load more" of an id-prefix search (``before=``) and
    ``until=`` with one both found nothing, the cursor being put after the prefix."""
    engine = af.Engine(store="memory", workers=1)
    engine.define("noop").step("x", steps.noop)
    with engine:
        runs = [engine.trigger("noop", {}) for _ in range(30)]
        for run in runs:
            run.result(timeout=60)
        prefix = runs[0].id[:6]  # the first hours' worth of ids: all 30
        newest_first = [r.id for r in reversed(runs)]
        first = engine.runs(id_prefix=prefix, limit=10)
        assert [r.id for r in first] == newest_first[:10]
        second = engine.runs(id_prefix=prefix, limit=10, before=first[-1].id)
        assert [r.id for r in second] == newest_first[10:20]
        assert [r.id for r in engine.runs(id_prefix=prefix, until=4e9, limit=None)] == newest_first
        assert engine.runs(id_prefix=prefix, until=1.0) == []  # before any of them
        assert engine.runs(id_prefix=prefix, before="0") == []
        cursor = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # past the prefix's ids
        assert len(engine.runs(id_prefix=prefix, before=cursor, limit=None)) == 30
        app = engine.asgi()
        page = _get(app, f"/api/runs?id_prefix={prefix}&limit=10")
        more = _get(
            app, f"/api/runs?id_prefix={prefix}&limit=10&before={page.headers['x-next-cursor']}"
        )
        assert [r["id"] for r in more.json()] == newest_first[10:20]
