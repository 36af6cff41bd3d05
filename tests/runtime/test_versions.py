"""Workflow versions: several versions of one id at once, each run on its own.

As in ``test_deploys.py``, engines run in sequence on one data_dir as a redeployed service
does (stopped cleanly, or SIGKILLed in a child process), and every step execution appends a
marker line so that "ran once" is counted across processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import actorflow as af
from tests import code_steps as cs
from tests.conftest import wait_until
from tests.runtime.test_deploys import (
    _at_gate,
    _by_run,
    _go,
    _key,
    _started,
    _v1,
    _v2_appended,
    mark,
    sigkilled_v1,
)
from tests.serving import serve

HELD = af.RunStatus.WAITING_FOR_DEFINITION


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "markers.log"
    path.touch()
    return path


def _both(engine: af.Engine) -> None:
    """Versions 1 and 2 of "deploy": 2 appends step c."""
    _v1(engine)
    _v2_appended(engine, version=2)


def _by_version(engine: af.Engine, workflow: str = "deploy") -> dict[int, af.WorkflowVersion]:
    return {v.version: v for v in engine.versions(workflow)}


def test_new_runs_take_the_newest_version_and_each_run_keeps_its_own(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    _v1(v1)
    with v1:
        old = _started(v1, log, 2)
        assert [(v.version, v.runs, v.newest) for v in v1.versions("deploy")] == [(1, 2, True)]
    both = make_engine(durability="fast")
    _both(both)
    with both:
        versions = _by_version(both)
        assert versions[1].defined and not versions[1].newest and versions[1].runs == 2
        assert dict(versions[1].statuses) == {"running": 2}
        assert versions[2].newest and versions[2].runs == 0
        new = both.trigger("deploy", {"log": str(log), "k": "new"})
        wait_until(lambda: _at_gate(both, new.id), timeout=60)
        assert both.inspect(new.id).version == 2 and both.inspect(old[0]).version == 1
        assert _by_version(both)[2].runs == 1
        _go(both, ["k0", "k1", "new"])
        assert [both.run(r).result(timeout=60) for r in old] == ["b", "b"]
        assert new.result(timeout=60) == "c"
        shown = [s.name for s in both.inspect(old[0]).steps]
        after = _by_version(both)
        assert both.definition("deploy")["versions"] == [1, 2]
    ran = _by_run(log)
    assert all(ran[r] == ["a", "b"] for r in old) and ran[new.id] == ["a", "b", "c"]
    assert shown == ["a", "gate", "b"]  # shown through version 1's plan
    assert after[1].runs == 0 and after[2].runs == 0  # version 1 may now be dropped


def test_a_dropped_version_holds_its_runs_until_it_returns(
    data_dir: Path, log: Path, make_engine: Callable[..., af.Engine]
) -> None:
    """V1 is SIGKILLed with runs at their gate; an engine that defines only version 2 holds
    them (visibly, with the version in the reason); one that defines both lets them finish."""
    runs = sigkilled_v1(data_dir, log)
    only2 = make_engine(durability="fast")
    _v2_appended(only2, version=2)
    with only2:
        details = only2.inspect(runs[0])
        assert details.status is HELD and details.version == 1
        assert details.held is not None
        assert "version 1 of workflow 'deploy' is not defined on this engine" in details.held
        versions = _by_version(only2)
        assert not versions[1].defined and versions[1].runs == 3
        assert dict(versions[1].statuses) == {"waiting_for_definition": 3}
        assert versions[2].defined and versions[2].newest
        with pytest.raises(af.ResultTimeout):
            only2.run(runs[0]).result(timeout=0.2)
    both = make_engine(durability="fast")
    _both(both)
    with both:
        wait_until(lambda: all(_at_gate(both, r) for r in runs), timeout=60)
        _go(both, ["k0", "k1", "k2"])
        assert [both.run(r).result(timeout=60) for r in runs] == ["b"] * 3
    assert all(_by_run(log)[r] == ["a", "b"] for r in runs)  # a ran once, before the kill


async def _code_v1(ctx: af.WorkflowContext, log: str) -> Any:
    a = await ctx.step("a", cs.logged, log, "a", 1)
    await ctx.wait_for_signal("go")
    return a


async def _code_v2(ctx: af.WorkflowContext, log: str) -> Any:
    a = await ctx.step("a", cs.logged, log, "a", 1)
    b = await ctx.step("b", cs.logged, log, "b", 2)  # recorded history differs from v1's
    await ctx.wait_for_signal("go")
    return a + b


def test_code_workflow_runs_replay_on_their_own_versions_function(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    v1.workflow("coded")(_code_v1)
    with v1:
        old = v1.trigger("coded", str(log)).id
        wait_until(lambda: "a" in Path(log).read_text(), timeout=60)
    both = make_engine(durability="fast")
    both.workflow("coded", version=1)(_code_v1)
    both.workflow("coded", version=2)(_code_v2)
    with both:
        new = both.trigger("coded", str(log))
        wait_until(lambda: Path(log).read_text().count("b ") == 1, timeout=60)
        assert _by_version(both, "coded")[1].runs == 1
        both.run(old).signal("go")
        new.signal("go")
        assert both.run(old).result(timeout=60) == 1  # v1's code: no NondeterminismError
        assert new.result(timeout=60) == 3
        assert both.inspect(old).version == 1 and both.inspect(new.id).version == 2
    names = [line.split()[0] for line in Path(log).read_text().splitlines()]
    assert sorted(names) == ["a", "a", "b"]  # old a once (before the deploy), new a and b


def test_define_checks_versions_at_the_boundary(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    engine.define("w").step("a", mark)
    with pytest.raises(af.DefinitionError, match="pass version=2"):
        engine.define("w").step("a", mark)
    for bad in (0, -1, "2", True, 2.0, 2**31 + 1):
        with pytest.raises(af.DefinitionError, match="version"):
            engine.define("w", version=bad)  # type: ignore[arg-type]
    engine.define("w", version=3).step("a", mark).step("b", mark)
    with pytest.raises(af.DefinitionError, match="version 3 is already defined"):
        engine.define("w", version=3)
    with pytest.raises(af.DefinitionError, match="of one kind"):
        engine.workflow("w", version=4)(_code_v1)
    with engine:
        assert [(v.version, v.newest) for v in engine.versions("w")] == [(1, False), (3, True)]
        engine.trigger("w", {"log": os.devnull}).result(timeout=60)
        with pytest.raises(af.DefinitionError, match="define every version before"):
            engine.define("w", version=4)
        with pytest.raises(af.WorkflowNotFound):
            engine.versions("nope")
        with pytest.raises(af.ClientError, match="workflow: expected a workflow id"):
            engine.versions(3)  # type: ignore[arg-type]


def test_a_held_run_can_be_cancelled_and_stays_cancelled(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    _v1(v1)
    v1.define("ok").step("a", mark).human_in_the_loop("sign", timeout=3600).step("b", mark)
    with v1:
        gated = _started(v1, log, 1)[0]
        signing = v1.trigger("ok", {"log": str(log)}).id
        wait_until(lambda: bool(v1.approvals(run_id=signing)), timeout=60)
    # The next deploy keeps only version 2 of "deploy" and drops "ok" altogether.
    v2 = make_engine(durability="fast")
    _v2_appended(v2, version=2)
    with v2:
        assert v2.inspect(gated).status is HELD and v2.inspect(signing).status is HELD
        v2.run(gated).cancel("version 1 retired")
        v2.run(signing).cancel()
        for run_id in (gated, signing):
            details = v2.inspect(run_id)
            assert details.status is af.RunStatus.CANCELLED, details
            assert not any(s.status == "running" for s in details.steps)
        assert v2.inspect(gated).cancel_reason == "version 1 retired"
        assert v2.approvals(run_id=signing) == []
        assert [v.version for v in v2.versions("deploy")] == [2]  # nothing left on 1
        assert v2.statistics()["waiting_for_definition"] == 0
    back = make_engine(durability="fast")
    _v1(back)
    back.define("ok").step("a", mark).human_in_the_loop("sign", timeout=3600).step("b", mark)
    with back:  # the definitions return: the cancelled runs stay ended
        assert back.inspect(gated).status is af.RunStatus.CANCELLED
        assert back.inspect(signing).status is af.RunStatus.CANCELLED
        assert back.approvals(run_id=signing) == []
    assert _by_run(log)[gated] == ["a"] and _by_run(log)[signing] == ["a"]


def test_the_rest_api_lists_versions_and_their_runs(
    make_engine: Callable[..., af.Engine], log: Path
) -> None:
    v1 = make_engine(durability="fast")
    _v1(v1)
    with v1:
        _started(v1, log, 1)
    both = make_engine(durability="fast")
    _both(both)
    with both, serve(both.asgi()) as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.get("/api/workflows/deploy/versions")
        assert r.status_code == 200, r.text
        assert [(v["version"], v["runs"], v["newest"]) for v in r.json()] == [
            (1, 1, False),
            (2, 0, True),
        ]
        workflows = {w["id"]: w for w in http.get("/api/workflows").json()}
        assert workflows["deploy"]["version"] == 2 and workflows["deploy"]["versions"] == [1, 2]
        missing = http.get("/api/workflows/nope/versions")
        assert missing.status_code == 404 and "nope" in missing.text


def _send(ctx: af.StepContext) -> str:
    return str(ctx.services.mail.send("ada@x")["via"])


def _with_mail(engine: af.Engine) -> None:
    from tests.definition.test_services import mail

    svc = mail.with_config(host="smtp.v1", port=25, api_key="k")
    (
        engine.define("mailer", services=[svc])
        .wait_for_event("go", name="gate", key=_key)
        .step("send", _send)
    )


def test_a_run_calls_the_services_its_own_version_configured(
    make_engine: Callable[..., af.Engine],
) -> None:
    v1 = make_engine(durability="fast")
    _with_mail(v1)
    with v1:
        old = v1.trigger("mailer", {"k": "old"}).id
        wait_until(lambda: _at_gate(v1, old), timeout=60)
    both = make_engine(durability="fast")
    _with_mail(both)
    both.define("mailer", version=2).wait_for_event("go", name="gate", key=_key).step("x", mark)
    with both:  # version 2 configures no service: the version 1 run still has its own
        wait_until(lambda: _at_gate(both, old), timeout=60)
        both.publish("go", None, key="old")
        assert both.run(old).result(timeout=60) == "smtp.v1:25"
