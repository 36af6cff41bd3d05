"""``actorflow plan diff APP:ENGINE``: what deploying this code would do to the runs in flight.

V1 runs wait on a real store; the command, run as a user runs it (a separate process, the
app given as ``file.py:engine``), compares a V2 app against them and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import actorflow as af
from tests.cli.test_cli import cli
from tests.conftest import wait_until
from tests.runtime.test_deploys import _at_gate, _key, _v1

V2 = """
import actorflow as af
from tests.runtime.test_deploys import _key, mark

engine = af.Engine(data_dir={data_dir!r})
(
    engine.define("deploy")
    .step("a", mark)
    .wait_for_event("go", name="gate", key=_key)
    .step("{last}", mark)
    .step("c", mark)
)
engine.define("other").step("x", mark)
"""


def _app(tmp_path: Path, data_dir: Path, last: str) -> str:
    path = tmp_path / f"v2_{last}.py"
    path.write_text(V2.format(data_dir=str(data_dir), last=last))
    return f"{path}:engine"


def test_plan_diff_lists_the_runs_each_change_affects(
    make_engine: Callable[..., af.Engine], data_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "markers.log"
    log.touch()
    v1 = make_engine(durability="fast")
    _v1(v1)
    v1.define("gone").wait_for_event("never", name="w", key=_key)
    with v1:
        runs = [v1.trigger("deploy", {"log": str(log), "k": f"k{i}"}).id for i in range(2)]
        gone = v1.trigger("gone", {"k": "g"}).id
        wait_until(lambda: all(_at_gate(v1, r) for r in runs), timeout=60)
    before = sorted(p.name for p in data_dir.iterdir())

    # V2 appends c and keeps b: the runs go on on their own plan; "gone" is removed.
    keeps = cli(data_dir, "plan", "diff", _app(tmp_path, data_dir, "b"), "--json")
    changes = {c["workflow"]: c for c in json.loads(keeps.stdout)}
    assert keeps.returncode == 4, keeps.stderr  # the removed workflow's run would wait
    deploy = changes["deploy"]
    assert sorted(deploy["runs"]) == sorted(runs) and deploy["added"] == ["c"]
    assert deploy["removed"] == [] and deploy["held"] is None and deploy["reach"] == []
    assert changes["gone"]["runs"] == [gone] and "not defined" in changes["gone"]["held"]

    # V2 renames b: a run that reaches b would wait for its definition there.
    renames = cli(data_dir, "plan", "diff", _app(tmp_path, data_dir, "b2"))
    assert renames.returncode == 4, renames.stderr
    assert "added: b2, c" in renames.stdout and "removed: b" in renames.stdout
    assert "a run that reaches 'b' would wait for its definition" in renames.stdout

    assert sorted(p.name for p in data_dir.iterdir()) == before  # nothing was written
    v1b = make_engine(durability="fast")
    _v1(v1b)
    with v1b:
        assert all(v1b.run(r).status() is af.RunStatus.RUNNING for r in runs)


VERSIONED = """
import actorflow as af
from tests.runtime.test_deploys import _key, _v1, _v2_appended, mark

engine = af.Engine(data_dir={data_dir!r})
if {keep_v1!r}:
    _v1(engine)
_v2_appended(engine, version=2)
"""


def test_versions_and_plan_diff_speak_of_each_runs_version(
    make_engine: Callable[..., af.Engine], data_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "markers.log"
    log.touch()
    v1 = make_engine(durability="fast")
    _v1(v1)
    with v1:
        runs = [v1.trigger("deploy", {"log": str(log), "k": f"k{i}"}).id for i in range(2)]
        wait_until(lambda: all(_at_gate(v1, r) for r in runs), timeout=60)
    apps = {}
    for keep in (True, False):
        path = tmp_path / f"versioned_{keep}.py"
        path.write_text(VERSIONED.format(data_dir=str(data_dir), keep_v1=keep))
        apps[keep] = f"{path}:engine"

    # From the store alone: version 1 (what the last engine defined) has both runs.
    listed = cli(data_dir, "versions", "deploy", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(v["version"], v["defined"], v["runs"]) for v in json.loads(listed.stdout)] == [
        (1, True, 2)
    ]
    # Against code that drops version 1: its runs would wait; code that keeps it: fine.
    dropped = cli(data_dir, "versions", "deploy", "--app", apps[False])
    assert dropped.returncode == 0, dropped.stderr
    assert "not defined: its runs wait for it" in dropped.stdout
    assert "new runs start here" in dropped.stdout
    held = cli(data_dir, "plan", "diff", apps[False], "--json")
    assert held.returncode == 4, held.stderr
    (change,) = json.loads(held.stdout)
    assert change["version"] == 1 and sorted(change["runs"]) == sorted(runs)
    assert "version 1 of workflow 'deploy' is not defined by this code" in change["held"]
    kept = cli(data_dir, "plan", "diff", apps[True])
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "no run in flight started on a plan other than this code's" in kept.stdout
    missing = cli(data_dir, "versions", "nope")
    assert missing.returncode == 1 and "no workflow 'nope'; defined: deploy" in missing.stderr
