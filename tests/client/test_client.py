"""``af.Client`` against a real server (``actorflow serve`` in its own process): each method,
with the engine's arguments, results and errors."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

import actorflow as af
from actorflow.client import _calls
from tests.client.conftest import Server


def _key() -> str:
    return uuid.uuid4().hex


def test_trigger_result_status_run_and_inspect(client: af.Client) -> None:
    run = client.trigger("double", {"n": 21}, idempotency_key=f"order-{_key()}")
    assert isinstance(run, af.RemoteRunHandle)
    assert run.workflow_id == "double" and run.id
    assert run.result(timeout=60) == 42
    assert run.status() is af.RunStatus.COMPLETED
    assert client.status(run.id) is af.RunStatus.COMPLETED
    assert client.result(run.id, timeout=60) == 42
    again = client.run(run.id)
    assert again == run and again.workflow_id == "double"
    details = run.inspect()
    assert isinstance(details, af.RunDetails) and details == client.inspect(run.id)
    assert (details.id, details.workflow_id, details.status) == (
        run.id, "double", af.RunStatus.COMPLETED,
    )  # fmt: skip
    [step] = details.steps
    assert isinstance(step, af.StepDetails) and step.status is af.StepStatus.SUCCEEDED
    assert step.name == "x2" and step.output == "42"
    assert isinstance(step.attempts[0], af.AttemptDetails)
    assert details.result == "42" and details.error is None
    assert run.progress() == []  # no fan-out


def test_the_same_idempotency_key_is_the_same_run(client: af.Client) -> None:
    key = _key()
    first = client.trigger("double", {"n": 1}, idempotency_key=key)
    second = client.trigger("double", {"n": 1}, idempotency_key=key)
    assert first.id == second.id
    assert client.trigger("double", {"n": 1}).id != first.id


def test_trigger_many_in_order_with_keys(client: af.Client) -> None:
    keys = [_key() for _ in range(4)]
    runs = client.trigger_many("double", [{"n": i} for i in range(4)], idempotency_keys=keys)
    assert [r.result(timeout=60) for r in runs] == [0, 2, 4, 6]
    again = client.trigger_many("double", [{"n": i} for i in range(4)], idempotency_keys=keys)
    assert [r.id for r in again] == [r.id for r in runs]  # sent again: the same runs
    with pytest.raises(af.ClientError, match="expected 2 keys"):
        client.trigger_many("double", [1, 2], idempotency_keys=["a"])


def test_result_times_out_then_cancel_ends_the_run(client: af.Client) -> None:
    run = client.trigger("gate", {"id": _key()})
    began = time.monotonic()
    with pytest.raises(af.ResultTimeout, match=r"did not finish within 0\.3s"):
        run.result(timeout=0.3)
    assert time.monotonic() - began >= 0.3
    with pytest.raises(af.ResultTimeout):
        client.result(run.id, timeout=0)  # one poll, answered at once
    assert run.status() is af.RunStatus.RUNNING
    assert client.cancel(run.id, "not needed") is True
    assert run.cancel() is False  # already ended
    with pytest.raises(af.RunCancelled) as caught:
        run.result(timeout=60)
    assert caught.value.reason == "not needed" and caught.value.run_id == run.id
    assert run.status() is af.RunStatus.CANCELLED
    assert run.inspect().cancel_reason == "not needed"


def test_priority_orders_a_priority_queue_over_rest(client: af.Client) -> None:
    key = _key()
    hold = client.trigger("ranked-hold", key)
    deadline = time.monotonic() + 60
    while hold.status() != af.RunStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runs = [client.trigger("ranked", tag, priority=p) for tag, p in [("late", 9), ("soon", 1)]]
    assert [r.status() for r in runs] == [af.RunStatus.QUEUED] * 2
    with pytest.raises(af.ClientError, match="not on a queue that orders by priority"):
        client.trigger("double", {"n": 1}, priority=2)
    with pytest.raises(af.ClientError, match="priority: expected an integer from 0"):
        client.trigger("ranked", "x", priority=-4)
    with pytest.raises(af.ClientError, match="priority: expected an integer"):
        client.trigger("ranked", "x", priority="high")  # type: ignore[arg-type]
    assert client.publish("rank-go", None, key=key) == 1
    assert [r.result(timeout=60) for r in runs] == ["late", "soon"]
    late, soon = (r.inspect().started_at or 0 for r in runs)
    assert soon < late  # priority 1 started before priority 9, triggered first


def test_publish_delivers_to_the_waiting_run(client: af.Client) -> None:
    key = _key()
    run = client.trigger("gate", {"id": key})
    deadline = time.monotonic() + 60
    while "go" not in {s.name for s in run.inspect().steps if s.status.value == "running"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.publish("go", {"ok": 1}, key=key) == 1
    assert run.result(timeout=60) == {"got": {"ok": 1}}
    assert client.publish("go", "kept", key=_key(), ttl="1m") == 0  # nobody waits: kept


def test_signal_query_update_of_a_code_workflow(client: af.Client) -> None:
    run = client.trigger("tally", {"n": 2})
    assert run.query("n") == 2  # replays the run first if it is not in memory yet
    assert client.query(run.id, "times", 3) == 6
    assert run.update("add", 5) == 7
    assert client.update(run.id, "add", 1, timeout=60) == 8
    with pytest.raises(af.RemoteError, match="ValueError: negative") as failed:
        run.update("add", -1)
    assert failed.value.type_name == "ValueError"
    with pytest.raises(af.ClientError, match="nope"):
        run.query("nope")
    key = _key()
    assert run.signal("bump", 10, idempotency_key=key) is True
    assert client.signal(run.id, "bump", 10, idempotency_key=key) is False  # a repeat: dropped
    assert run.signal("close", "bye") is True
    assert run.result(timeout=60) == {"n": 18, "closing": "bye"}
    with pytest.raises(af.ClientError, match="has finished"):
        run.signal("close", "again")


def test_approvals_and_resume(client: af.Client) -> None:
    run = client.trigger("approve", {})
    deadline = time.monotonic() + 60
    while not client.approvals(run_id=run.id):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [approval] = client.approvals(run_id=run.id)
    assert approval["step"] == "ok" and approval["status"] == "waiting"
    assert approval in client.approvals()  # waiting ones by default
    client.resume(approval["token"], {"by": "grace"})
    assert run.result(timeout=60) == {"by": "grace"}
    assert any(a["token"] == approval["token"] for a in client.approvals(None))
    assert [a["status"] for a in client.approvals("resumed", run_id=run.id)] == ["resumed"]
    with pytest.raises(af.ApprovalAlreadyResolved, match="already"):
        client.resume(approval["token"], {})
    with pytest.raises(af.ApprovalNotFound, match="no approval has this token"):
        client.resume("no-such-token")


def test_retry_and_restart(client: af.Client) -> None:
    failed = client.trigger("boom", {})
    with pytest.raises(af.StepFailed):
        failed.result(timeout=60)
    again = client.retry(failed.id)
    assert again.id != failed.id and again.workflow_id == "boom"
    with pytest.raises(af.StepFailed):
        again.result(timeout=60)
    done = client.trigger("double", {"n": 1})
    done.result(timeout=60)
    with pytest.raises(af.ClientError, match="only a failed or cancelled run"):
        client.retry(done.id)
    with pytest.raises(af.ClientError, match="panicked"):
        client.restart(done.id)  # not a panicked code workflow run


def test_search_attributes_over_rest(client: af.Client, server: Server) -> None:
    tag = _key()
    runs = [
        client.trigger(
            "double", {"n": i}, search_attributes={"tag": tag, "n": i}, memo={"by": "test"}
        )
        for i in range(4)
    ]
    for r in runs:
        r.result(timeout=60)
    found = client.runs(where={"tag": tag, "n>=": 2})
    assert [r.id for r in found] == [runs[3].id, runs[2].id]
    assert found[0].search_attributes == {"tag": tag, "n": 3}
    assert runs[1].inspect().memo == {"by": "test"}
    with pytest.raises(af.ClientError, match=r"where\['n>'\]: expected a string"):
        client.runs(where={"n>": [1]})
    # By run id prefix and by idempotency key (issue 25), with the listing's new fields.
    keyed = client.trigger("double", {"n": 9}, idempotency_key=tag)
    keyed.result(timeout=60)
    [by_key] = client.runs(idempotency_key=tag)
    assert by_key.id == keyed.id and by_key.idempotency_key == tag
    assert by_key.duration is not None and by_key.started_at is not None
    assert [r.id for r in client.runs(id_prefix=runs[2].id)] == [runs[2].id]
    with pytest.raises(af.ClientError, match="id_prefix: expected a non-empty string"):
        client.runs(id_prefix="")
    with pytest.raises(af.ClientError, match=r"search_attributes\['x'\]: expected a string"):
        client.trigger("double", {"n": 1}, search_attributes={"x": {"a": 1}})
    auth = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=auth) as h:
        bad = h.get("/api/runs", params={"where": "{not json"})
        assert bad.status_code == 400 and "where: expected JSON" in bad.text


def test_cancel_runs_clean_up_and_terminate_does_not(client: af.Client) -> None:
    cancelled, terminated = client.trigger("careful"), client.trigger("careful")
    for run in (cancelled, terminated):
        deadline = time.monotonic() + 60
        while run.status() != af.RunStatus.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert cancelled.cancel("stop") is True
    assert client.terminate(terminated.id, "stop now") is True
    for run in (cancelled, terminated):
        with pytest.raises(af.RunCancelled):
            run.result(timeout=60)
    assert "cleanup" in {s.name for s in cancelled.inspect().steps}
    assert "cleanup" not in {s.name for s in terminated.inspect().steps}
    assert terminated.terminate() is False  # it had ended


def test_retry_with_overrides(client: af.Client) -> None:
    failed = client.trigger("boom", {})
    with pytest.raises(af.StepFailed):
        failed.result(timeout=60)
    mocked = client.retry(failed.id, mock_steps={"charge": "paid by hand"})
    assert mocked.result(timeout=60) == "paid by hand"
    done = client.trigger("double", {"n": 1})
    assert done.result(timeout=60) == 2
    assert client.retry(done.id, payload={"n": 21}).result(timeout=60) == 42
    with pytest.raises(af.ClientError, match="name no step of workflow 'double'"):
        client.retry(done.id, mock_steps={"nope": 1})
    with pytest.raises(af.ClientError, match="it takes payload= and mock_steps="):
        client.retry(done.id, payloads=[1])


def test_runs_filters_and_pages(
    client: af.Client, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = time.time()  # (run ids carry their trigger time: only these runs are newer)
    ids = [r.id for r in client.trigger_many("listed", [None] * 7)]
    for run_id in ids:
        client.result(run_id, timeout=60)
    newest_first = list(reversed(ids))
    listed = client.runs("listed", since=since, limit=None)
    assert [r.id for r in listed] == newest_first
    assert all(isinstance(r, af.RunSummary) and r.status is af.RunStatus.COMPLETED for r in listed)
    assert [r.id for r in client.runs("listed", limit=3, since=since)] == newest_first[:3]
    assert [r.id for r in client.runs("listed", before=ids[3], since=since)] == newest_first[4:]
    assert client.runs("listed", "failed", since=since) == []
    assert client.runs("listed", until=since) == [
        r for r in client.runs("listed") if r.id not in ids
    ]
    # Pages of two: each next page starts at the X-Next-Cursor of the one before.
    monkeypatch.setattr(_calls, "PAGE", 2)
    assert [r.id for r in client.runs("listed", since=since, limit=None)] == newest_first
    assert [r.id for r in client.runs("listed", since=since, limit=5)] == newest_first[:5]
    with pytest.raises(af.ClientError, match="status: expected one of"):
        client.runs(status="sleeping")


def test_versions_are_the_engines(client: af.Client) -> None:
    assert client.trigger("versioned").result(timeout=30) == 2  # the newest
    listed = client.versions("versioned")
    assert [(v.version, v.defined, v.newest, v.runs) for v in listed] == [
        (1, True, False, 0),
        (2, True, True, 0),
    ]
    assert all(isinstance(v, af.WorkflowVersion) for v in listed)
    with pytest.raises(af.WorkflowNotFound, match="nope"):
        client.versions("nope")
    with pytest.raises(af.ClientError, match="workflow: expected a non-empty string"):
        client.versions("")


def test_health_is_the_engines(client: af.Client) -> None:
    health = client.health()
    assert health["ready"] is True and health["alive"] is True
    assert health["checks"]["store"]["ok"] is True


def test_the_url_may_end_with_a_slash_and_the_token_is_never_shown(server: Server) -> None:
    with af.Client(server.url + "/", token=server.token) as c:
        assert c.url == server.url
        assert server.token not in repr(c) and server.token not in repr(c.trigger("listed"))
