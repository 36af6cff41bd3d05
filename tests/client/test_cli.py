"""The CLI's remote commands (trigger, cancel, retry, resume, ``wait --url``) run on
``af.Client``: real ``actorflow`` processes against the real server, behind its token."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import actorflow as af
from actorflow.cli._output import Exit
from tests.client.conftest import ENV, ROOT, Server


def cli(server: Server, *args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "ACTORFLOW_URL": server.url}
    if token:
        env["ACTORFLOW_TOKEN"] = server.token
    return subprocess.run(
        [sys.executable, "-m", "actorflow", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip


def test_trigger_cancel_retry_resume(server: Server, client: af.Client) -> None:
    key = uuid.uuid4().hex
    out = cli(server, "trigger", "double", '{"n": 5}', "--key", key, "--json")
    assert out.returncode == 0, out.stderr
    started = json.loads(out.stdout)
    assert started["workflow"] == "double" and client.result(started["run_id"], 60) == 10
    again = cli(server, "trigger", "double", '{"n": 5}', "--key", key)
    assert again.stdout == f"run {started['run_id']} of double started\n"

    held = client.trigger("gate", {"id": uuid.uuid4().hex})
    out = cli(server, "cancel", held.id, "--reason", "cli")
    assert (out.returncode, out.stdout) == (0, f"run {held.id} cancelled\n"), out.stderr
    out = cli(server, "cancel", held.id, "--json")
    assert out.returncode == Exit.FAILED and json.loads(out.stdout)["cancelled"] is False

    careful = client.trigger("careful")
    while careful.status() != af.RunStatus.RUNNING:
        time.sleep(0.05)
    out = cli(server, "cancel", careful.id, "--terminate", "--reason", "now")
    assert (out.returncode, out.stdout) == (0, f"run {careful.id} cancelled\n"), out.stderr
    details = careful.inspect()
    assert details.status == af.RunStatus.CANCELLED and details.cancel_reason == "now"
    assert "cleanup" not in {s.name for s in details.steps}  # its code was not told

    out = cli(server, "retry", held.id, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["run_id"] != held.id

    waiting = client.trigger("approve", {})
    while not client.approvals(run_id=waiting.id):
        time.sleep(0.05)
    out = cli(server, "resume", waiting.id, '"ok"', "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["resumed"] is True and waiting.result(timeout=60) == "ok"

    missing = cli(server, "trigger", "nope", "--json")
    assert missing.returncode == Exit.ERROR
    body = json.loads(missing.stdout)
    assert (body["error"], body["status"]) == ("not_found", 404)
    assert body["detail"].startswith("POST /api/workflows/nope/trigger: 404 no workflow 'nope'")
    refused = cli(server, "cancel", held.id, token=False)
    assert refused.returncode == Exit.ERROR
    assert "401" in refused.stderr and "set ACTORFLOW_TOKEN" in refused.stderr


def test_wait_url_follows_a_run_through_the_api(server: Server, client: af.Client) -> None:
    done = client.trigger("double", {"n": 21})
    out = cli(server, "wait", done.id, "--url", server.url, "--no-progress")
    assert out.returncode == Exit.OK, out.stderr
    assert out.stdout == f"run {done.id}: completed\nresult: 42\n"

    failed = client.trigger("boom", {})
    out = cli(server, "wait", failed.id, "--url", server.url)
    assert out.returncode == Exit.FAILED, out.stderr
    assert out.stdout == (f"run {failed.id}: failed\nerror: builtins.ValueError: card declined\n")

    held = client.trigger("gate", {"id": uuid.uuid4().hex})
    out = cli(server, "wait", held.id, "--url", server.url, "--timeout", "0.5", "--json")
    assert out.returncode == Exit.TIMEOUT, out.stderr
    body = json.loads(out.stdout)
    assert (body["id"], body["status"], body["timed_out"]) == (held.id, "running", True)
    assert body["workflow_id"] == "gate" and [s["name"] for s in body["steps"]] == ["go", "done"]
    client.cancel(held.id)
    out = cli(server, "wait", held.id, "--url", server.url, "--json")
    assert out.returncode == Exit.FAILED and json.loads(out.stdout)["status"] == "cancelled"

    out = cli(server, "wait", "nope", "--url", server.url, "--json")
    assert out.returncode == Exit.ERROR and json.loads(out.stdout)["error"] == "not_found"
