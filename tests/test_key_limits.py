"""Values that become store keys are checked where they enter; nothing a client sends halts
the engine.

Issue 18, item 1: ``engine.publish("evt", {}, key="k" * 600)`` used to fail inside LMDB
("key too long"); the writer took that for a store failure and the engine halted, while
``/healthz`` kept answering 200. Now every such value is refused at the boundary with a
``ClientError`` (or ``DefinitionError`` at definition time) naming the field and its limit;
a record that would still be refused fails only its own run (the shards check keys before
they join a group commit); and only a fault of the store halts the engine, which liveness
then reports.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

import actorflow as af
from actorflow.store import MemoryStore
from tests import code_steps, steps
from tests.conftest import wait_until

LONG = "k" * 600


def _serving(engine: af.Engine) -> None:
    """The engine still takes and finishes work, and says it is alive."""
    assert engine.trigger("ok", {"n": 1}).result(timeout=30) == 2
    assert engine.alive and engine.health()["alive"]


def _define(engine: af.Engine) -> af.Engine:
    engine.define("ok").step("add", steps.add_one)
    engine.define("waits").wait_for_event("paid", key=lambda ctx: ctx.payload["key"])

    @engine.workflow("signals")
    async def signals(ctx: af.WorkflowContext) -> Any:
        return await ctx.wait_for_signal("go")

    @engine.workflow("long-step-name")
    async def long_step_name(ctx: af.WorkflowContext) -> Any:
        return await ctx.step("s" * 300, code_steps.square, 2)

    return engine


# (what, call, the field the error names)
CLIENT_CALLS: list[tuple[str, Callable[[af.Engine], Any], str]] = [
    ("event key", lambda e: e.publish("evt", {}, key=LONG), "key: expected at most 256"),
    ("event name", lambda e: e.publish(LONG, {}), "event: expected at most 200"),
    ("event NUL", lambda e: e.publish("evt", {}, key="a\x00b"), "key: must not contain NUL"),
    (
        "idempotency key",
        lambda e: e.trigger("ok", {"n": 1}, idempotency_key="i" * 1025),
        "idempotency_key: expected at most 1024",
    ),
    ("state key", lambda e: e.state.set(LONG, 1), "state key: expected at most 256"),
    ("state prefix", lambda e: e.state.keys(LONG), "prefix: expected at most 256"),
    (
        "workflow state key",
        lambda e: e.state.of("ok").set("\u00e9" * 129, 1),
        "state key: expected at most 256",
    ),
    (
        "signal name",
        lambda e: e.trigger("signals").signal(LONG, 1),
        "signal: name: expected at most 200",
    ),
    (
        "signal idempotency key",
        lambda e: e.trigger("signals").signal("go", 1, idempotency_key="i" * 2000),
        "idempotency_key: expected at most 1024",
    ),
    (
        "update name",
        lambda e: e.trigger("signals").update(LONG, 1, timeout=5),
        "update: name: expected at most 200",
    ),
    (
        "query name",
        lambda e: e.trigger("signals").query(LONG, timeout=5),
        "query: name: expected at most 200",
    ),
]


@pytest.mark.parametrize(("what", "call", "field"), CLIENT_CALLS, ids=[c[0] for c in CLIENT_CALLS])
def test_client_values_are_checked_at_the_boundary(
    make_engine: Callable[..., af.Engine], what: str, call: Callable[[af.Engine], Any], field: str
) -> None:
    engine = _define(make_engine())
    with engine:
        with pytest.raises(af.ClientError, match=field):
            call(engine)
        _serving(engine)


def test_lookups_by_overlong_ids_are_misses(make_engine: Callable[..., af.Engine]) -> None:
    engine = _define(make_engine())
    with engine:
        with pytest.raises(af.RunNotFound):
            engine.run(LONG)
        with pytest.raises(af.RunNotFound):
            engine.inspect(LONG)
        with pytest.raises(af.ApprovalNotFound):
            engine.resume(LONG, {})
        assert engine.runs(before=LONG, limit=5) == []
        assert engine.approvals(run_id=LONG) == []
        _serving(engine)


def test_definitions_are_checked() -> None:
    with pytest.raises(af.DefinitionError, match="expected at most 200 bytes"):
        af.Workflow("w" * 201).step("s", steps.noop).build()
    with pytest.raises(af.DefinitionError, match="expected at most 200 bytes"):
        af.Workflow("w").step("\u00e9" * 101, steps.noop).build()
    with pytest.raises(af.DefinitionError, match="key: expected at most 256"):
        af.Workflow("w").wait_for_event("paid", key=LONG).build()
    # Names within the limit, nested so that an item's path could not be stored.
    deep = af.Flow().for_each("b" * 150, items=lambda ctx: [1], body=steps.double_item)
    with pytest.raises(af.DefinitionError, match=r"step path .* over the limit of 256"):
        af.Workflow("w").for_each("a" * 150, items=lambda ctx: [1], body=deep).build()


def test_values_computed_in_a_run_fail_only_that_run(
    make_engine: Callable[..., af.Engine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = _define(make_engine())
    with engine:
        # A wait's key computed from the payload: the step fails, naming the limit.
        run = engine.trigger("waits", {"key": LONG})
        with pytest.raises(af.StepFailed, match=r"key\(ctx\): expected at most 256"):
            run.result(timeout=30)
        # A code workflow's command name: the run panics (a bug in its code), saying why.
        code = engine.trigger("long-step-name")
        wait_until(lambda: code.status() == af.RunStatus.PANICKED, timeout=30)
        assert "ctx.step: name: expected at most 200 bytes" in caplog.text
        _serving(engine)


def test_a_record_past_the_key_limit_fails_only_its_run(
    make_engine: Callable[..., af.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the definition check (switched off here), the shard's key check holds: the run
    whose records cannot be stored fails, alone, and every other run goes on."""
    monkeypatch.setattr("actorflow.definition._builder.path_problems", lambda block: [])
    engine = _define(make_engine())
    inner = af.Flow().for_each("c" * 190, items=lambda ctx: [1], body=steps.double_item)
    mid = af.Flow().for_each("b" * 190, items=lambda ctx: [1], body=inner)
    engine.define("deep").for_each("a" * 190, items=lambda ctx: [1], body=mid)
    with engine:
        others = [engine.trigger("ok", {"n": i}) for i in range(20)]
        deep = engine.trigger("deep")
        with pytest.raises(af.ActorflowError, match="key too long for the store"):
            deep.result(timeout=30)
        assert [r.result(timeout=30) for r in others] == [i + 1 for i in range(20)]
        assert engine.statistics()["store"]["rejected"] == 0  # stopped before the writer
        _serving(engine)


def test_a_refused_group_commit_costs_only_its_own_runs(
    make_engine: Callable[..., af.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last guard: with the shard's check off too, the store refuses the write, the
    writer fails that write alone, its runs fail, and the engine does not halt."""
    monkeypatch.setattr("actorflow.definition._builder.path_problems", lambda block: [])
    monkeypatch.setattr("actorflow.runtime.supervision._shard_writes.long_key", lambda ops: None)
    engine = _define(make_engine())
    inner = af.Flow().for_each("c" * 190, items=lambda ctx: [1], body=steps.double_item)
    mid = af.Flow().for_each("b" * 190, items=lambda ctx: [1], body=inner)
    engine.define("deep").for_each("a" * 190, items=lambda ctx: [1], body=mid)
    with engine:
        # The run's first write (its record and first dispatch) is the one refused: the
        # trigger that carried it fails, and nothing else does.
        with pytest.raises(af.WriteRejected, match="key too long"):
            engine.trigger("deep")
        assert engine.statistics()["store"]["rejected"] == 1
        _serving(engine)


# -- over real HTTP ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Callable[[af.Engine], httpx.Client]]:
    servers: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def start(engine: af.Engine) -> httpx.Client:
        port = _free_port()
        srv = uvicorn.Server(
            uvicorn.Config(engine.asgi(), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        wait_until(lambda: srv.started)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        servers.append((srv, thread, client))
        return client

    yield start
    for srv, thread, client in servers:
        client.close()
        srv.should_exit = True
        thread.join(30)


def test_http_hostile_key_is_a_400_and_the_engine_keeps_serving(
    make_engine: Callable[..., af.Engine], serve: Callable[[af.Engine], httpx.Client]
) -> None:
    engine = _define(make_engine())
    engine.define("hook").step("echo", steps.echo_payload).on_webhook("/hooks/open")
    with engine:
        client = serve(engine)
        r = client.post("/api/events/evt", json={"payload": {}, "key": LONG})
        assert r.status_code == 400, r.text
        assert "key: expected at most 256 bytes" in r.json()["detail"]
        assert client.get(f"/api/runs/{LONG}").status_code == 404
        r = client.post(f"/api/approvals/{LONG}/resume", json={})
        assert r.status_code == 404, r.text
        # Everything else is still served, and liveness says so.
        r = client.post("/hooks/open", json={"n": 1})
        assert r.status_code == 202, r.text
        assert engine.run(r.json()["run_id"]).result(timeout=30) == {"n": 1}
        r = client.post("/api/events/evt", json={"payload": {}, "key": "k"})
        assert r.status_code == 202, r.text
        assert client.get("/healthz").json() == {"status": "ok"}


class _FailingStore(MemoryStore):
    """A store whose disk starts failing (an I/O error on every commit)."""

    failing = False

    def write(self, ops: Any) -> None:
        if self.failing:
            raise af.StoreError(f"disk error while writing: [Errno {os.strerror(5)}]")
        super().write(ops)


def test_a_store_failure_halts_and_liveness_says_so(
    make_engine: Callable[..., af.Engine], serve: Callable[[af.Engine], httpx.Client]
) -> None:
    store = _FailingStore()
    engine = _define(make_engine(store=store))
    with engine:
        client = serve(engine)
        assert client.get("/healthz").status_code == 200
        store.failing = True
        with pytest.raises(af.StoreError):
            engine.trigger("ok", {"n": 1})
        r = client.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "halted", r.text
        assert "disk error" in r.json()["detail"]
        assert not engine.alive and engine.health()["alive"] is False
        assert client.get("/readyz").status_code == 503
