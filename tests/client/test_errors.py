"""The API's errors, mapped back onto actorflow's exception tree with the server's detail."""

from __future__ import annotations

import asyncio
import pickle
import socket
from collections.abc import Iterator

import pytest

import actorflow as af
from actorflow.client import HttpAnswer
from tests.client.conftest import Server
from tests.serving import free_port, serve


def test_an_unknown_run_is_run_not_found(client: af.Client) -> None:
    for call in (
        lambda: client.run("nope"),
        lambda: client.result("nope", timeout=5),
        lambda: client.status("nope"),
        lambda: client.inspect("nope"),
        lambda: client.cancel("nope"),
        lambda: client.signal("nope", "close"),
        lambda: client.retry("nope"),
    ):
        with pytest.raises(af.RunNotFound) as caught:
            call()
        assert str(caught.value) == "no run with id 'nope'"
        assert isinstance(caught.value, KeyError) and caught.value.run_id == "nope"
        answer = caught.value.http  # type: ignore[attr-defined]
        assert isinstance(answer, HttpAnswer) and (answer.status, answer.error) == (
            404, "not_found",
        )  # fmt: skip


def test_an_unknown_workflow_is_workflow_not_found_naming_the_defined_ones(
    client: af.Client,
) -> None:
    with pytest.raises(af.WorkflowNotFound, match=r"no workflow 'nope'; defined: .*double"):
        client.trigger("nope", {})


def test_a_failed_run_raises_step_failed_with_the_detail(client: af.Client) -> None:
    run = client.trigger("boom", {})
    with pytest.raises(af.StepFailed) as caught:
        run.result(timeout=60)
    exc = caught.value
    assert str(exc) == "step 'charge' failed on attempt 1: builtins.ValueError: card declined"
    assert (exc.step, exc.attempt, exc.run_id) == ("charge", 1, run.id)
    assert (exc.error_type, exc.error_message) == ("builtins.ValueError", "card declined")
    assert "declined" in exc.traceback
    cause = exc.__cause__
    assert isinstance(cause, af.RemoteError) and cause.type_name == "builtins.ValueError"
    assert str(cause) == "builtins.ValueError: card declined"
    assert isinstance(cause.__cause__, af.RemoteTraceback)
    assert "declined" in str(cause.__cause__)
    copy = pickle.loads(pickle.dumps(exc))  # as a local StepFailed, it pickles
    assert (type(copy), copy.step, str(copy)) == (af.StepFailed, "charge", str(exc))


def test_each_run_error_is_its_own_class(client: af.Client) -> None:
    with pytest.raises(af.StepTimeout) as timed_out:
        client.trigger("naps", {}).result(timeout=60)
    assert timed_out.value.timeout == 0.1 and timed_out.value.step == "nap"
    assert isinstance(timed_out.value, af.StepFailed)
    with pytest.raises(af.RunTimeout, match=r"exceeded the workflow timeout of 0\.2s") as late:
        client.trigger("late", {}).result(timeout=60)
    assert late.value.timeout == 0.2
    with pytest.raises(af.WorkflowFailed, match="out of stock"):
        client.trigger("fails", "out of stock").result(timeout=60)
    run = client.trigger("gate", {"id": "cancelled"})
    run.cancel("by the test")
    with pytest.raises(af.RunCancelled) as cancelled:
        run.result(timeout=60)
    assert cancelled.value.reason == "by the test"
    assert str(cancelled.value) == f"run {run.id} cancelled: by the test"


def test_the_token_is_required_and_must_be_the_engines(server: Server) -> None:
    with af.Client(server.url) as anonymous, pytest.raises(af.AccessDenied) as caught:
        anonymous.runs()
    assert caught.value.status == 401
    assert "needs its token" in str(caught.value)
    assert "this client sent no token: af.Client(url, token=...)" in str(caught.value)
    with af.Client(server.url, token="wrong") as wrong, pytest.raises(af.AccessDenied) as bad:
        wrong.trigger("double", {"n": 1})
    assert "the token this client sent is not the engine's API token" in str(bad.value)
    assert isinstance(bad.value, af.ClientError)
    with af.Client(server.url) as anonymous:  # health checks are open
        assert anonymous.health()["ready"] is True


def test_nothing_listening_is_engine_unreachable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # closed again: nothing listens there
    with af.Client(url) as client, pytest.raises(af.EngineUnreachable) as caught:
        client.trigger("double", {})
    exc = caught.value
    assert exc.url == url and str(exc).startswith(f"no engine answers at {url} (")
    assert exc.timeout is None
    assert isinstance(exc, af.EngineNotRunning) and isinstance(exc, ConnectionError)

    async def status() -> af.RunStatus:
        async with af.AsyncClient(url) as client:
            return await client.status("r-1")

    with pytest.raises(af.EngineUnreachable, match=url):
        asyncio.run(status())
    assert pickle.loads(pickle.dumps(exc)).url == url


@pytest.fixture
def silent() -> Iterator[str]:
    """A socket that takes connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_no_answer_within_the_timeout_is_engine_unreachable(silent: str) -> None:
    with af.Client(silent, timeout=0.3) as client, pytest.raises(af.EngineUnreachable) as caught:
        client.trigger("double", {})
    assert caught.value.timeout == 0.3
    assert f"the engine at {silent} did not answer within 0.3s" in str(caught.value)
    with af.Client(silent, timeout=0.3) as client, pytest.raises(af.ResultTimeout):
        client.update("r-1", "add", 1, timeout=0.3)  # an update that runs on: as locally


def test_arguments_the_client_cannot_use(server: Server) -> None:
    for url in ("localhost:8080", "ftp://x", "http://", "http://h:99999", None):
        with pytest.raises(af.ClientError, match="url: expected"):
            af.Client(url)  # type: ignore[arg-type]
    with pytest.raises(af.ClientError, match="timeout"):
        af.Client(server.url, timeout=0)
    with server.client() as client:
        with pytest.raises(af.InvalidPayload, match="cannot be sent as JSON"):
            client.trigger("double", {"n": object()})
        with pytest.raises(af.ClientError, match="timeout"):
            client.result("r-1", timeout=-1)
        with pytest.raises(af.RunNotFound):
            client.run("")


def test_read_only_and_stopped_engines(tmp_path: object) -> None:
    engine = af.Engine(store="memory", executor="inline")
    engine.define("w").step("s", lambda ctx: 1)
    with engine:
        with serve(engine.asgi(read_only=True)) as url, af.Client(url) as client:
            with pytest.raises(af.AccessDenied, match="read-only") as refused:
                client.trigger("w", {})
            assert refused.value.status == 403
            assert client.runs() == []  # reading is allowed
        with serve(engine.asgi()) as url, af.Client(url) as client:
            run = client.trigger("w", {})
            assert run.result(timeout=60) == 1
            engine.stop()  # the server goes on; the engine does not
            with pytest.raises(af.EngineNotRunning) as stopped:
                client.trigger("w", {})
            assert not isinstance(stopped.value, af.EngineUnreachable)
            assert stopped.value.http.status == 503  # type: ignore[attr-defined]
