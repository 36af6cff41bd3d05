"""``GET /api/runs/{run_id}/result?wait=SECONDS``: the REST API's long-poll for a run's result,
over HTTP on a real server (``actorflow serve`` in its own process)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.client.conftest import Server

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    bearer = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=bearer, timeout=90) as client:
        yield client


def _start(http: httpx.Client, workflow: str, payload: Any) -> str:
    r = http.post(f"/api/workflows/{workflow}/trigger", json=payload)
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def test_it_answers_as_soon_as_the_run_finishes(http: httpx.Client) -> None:
    key = uuid.uuid4().hex
    run_id = _start(http, "gate", {"id": key})
    answers: list[tuple[float, httpx.Response]] = []

    def poll() -> None:
        began = time.monotonic()
        answer = http.get(f"/api/runs/{run_id}/result", params={"wait": "60"})
        answers.append((time.monotonic() - began, answer))

    waiting = threading.Thread(target=poll)
    waiting.start()
    # (whether the poll is already held or arrives after this, it answers once finished)
    r = http.post("/api/events/go", json={"payload": "opened", "key": key})
    assert r.status_code == 202 and r.json()["delivered"] == 1, r.text
    waiting.join(90)
    [(took, answer)] = answers
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "run_id": run_id,
        "workflow": "gate",
        "status": "completed",
        "finished": True,
        "result": {"got": "opened"},
    }
    assert took < 50  # the run's end answered it, not the 60 s of wait


def test_it_answers_at_wait_with_the_status_of_a_run_still_going(http: httpx.Client) -> None:
    run_id = _start(http, "gate", {"id": uuid.uuid4().hex})
    began = time.monotonic()
    r = http.get(f"/api/runs/{run_id}/result", params={"wait": "0.5"})
    took = time.monotonic() - began
    assert r.status_code == 200, r.text
    assert r.json() == {
        "run_id": run_id,
        "workflow": "gate",
        "status": "running",
        "finished": False,
    }
    assert took >= 0.5  # it waited
    r = http.get(f"/api/runs/{run_id}/result")  # no wait: the answer now
    assert r.json()["finished"] is False and r.json()["status"] == "running"
    assert http.post(f"/api/runs/{run_id}/cancel", json={}).json()["cancelled"] is True


@pytest.mark.parametrize("wait", ["x", "-1", "60.5", "1e9", "nan", "inf"])
def test_a_bad_wait_is_a_400_naming_wait(http: httpx.Client, wait: str) -> None:
    run_id = _start(http, "double", {"n": 1})
    r = http.get(f"/api/runs/{run_id}/result", params={"wait": wait})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "bad_request"
    assert body["detail"].startswith("wait: expected seconds from 0 to 60"), body


def test_a_failed_run_answers_its_error_step_and_cause(http: httpx.Client) -> None:
    run_id = _start(http, "boom", {})
    body = http.get(f"/api/runs/{run_id}/result", params={"wait": "60"}).json()
    assert (body["status"], body["finished"]) == ("failed", True) and "result" not in body
    error = body["error"]
    assert error["type"] == "StepFailed"
    assert (
        error["message"] == "step 'charge' failed on attempt 1: builtins.ValueError: card declined"
    )
    assert (error["step"], error["attempt"]) == ("charge", 1)
    assert (error["error_type"], error["error_message"]) == ("builtins.ValueError", "card declined")
    assert "card declined" in error["traceback"] and "declined" in error["traceback"]
    assert error["cause"] == {"type": "builtins.ValueError", "message": "card declined"}


def test_a_cancelled_run_answers_run_cancelled_with_its_reason(http: httpx.Client) -> None:
    run_id = _start(http, "gate", {"id": uuid.uuid4().hex})
    http.post(f"/api/runs/{run_id}/cancel", json={"reason": "deploy"})
    body = http.get(f"/api/runs/{run_id}/result", params={"wait": "60"}).json()
    assert (body["status"], body["finished"]) == ("cancelled", True)
    assert body["error"]["type"] == "RunCancelled"
    assert body["error"]["reason"] == "deploy"
    assert body["error"]["message"] == f"run {run_id} cancelled: deploy"


def test_an_unknown_run_is_a_404_and_the_token_is_required(
    http: httpx.Client, server: Server
) -> None:
    r = http.get("/api/runs/nope/result", params={"wait": "1"})
    assert r.status_code == 404, r.text
    assert r.json() == {"error": "not_found", "detail": "no run with id 'nope'"}
    run_id = _start(http, "double", {"n": 2})
    anonymous = httpx.get(f"{server.url}/api/runs/{run_id}/result")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
