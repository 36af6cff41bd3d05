"""Every example runs as a user would run it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import actorflow as af
from actorflow.testing import WorkflowTest

ROOT = Path(__file__).resolve().parents[1]


def test_orders_example_survives_its_own_sigkill(tmp_path: Path) -> None:
    env = {**os.environ, "ORDERS_DATA_DIR": str(tmp_path / "store")}
    cmd = [sys.executable, str(ROOT / "examples" / "orders.py")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "shipped 3 items, charged 49.0" in second.stdout
    assert "reserve  succeeded  attempts: succeeded\n" in second.stdout  # never ran again
    assert "charge   succeeded  attempts: interrupted, succeeded" in second.stdout


def test_thumbnails_example_and_its_tuning(tmp_path: Path) -> None:
    env = {**os.environ, "THUMBS_DATA_DIR": str(tmp_path / "store"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "examples" / "thumbnails.py")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "checksum: 254864" in out.stdout
    # docs/tuning.md's command, shortened: never opens the example's own store
    tune = [sys.executable, "-m", "actorflow", "tune", f"{ROOT}/examples/thumbnails.py:engine",
            "thumbnails", "--payload", '{"images": 50}', "--knob", "workers=1", "--runs", "1",
            "--repeat", "1", "--dry-run"]  # fmt: skip
    (tmp_path / "store").rename(tmp_path / "kept")
    out = subprocess.run(tune, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[tool.actorflow]" in out.stdout and not (tmp_path / "store").exists()


def test_control_flow_example(tmp_path: Path) -> None:
    env = {**os.environ, "FLOW_DATA_DIR": str(tmp_path / "store")}
    cmd = [sys.executable, str(ROOT / "examples" / "control_flow.py")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "result: 499950" in out.stdout  # the child run's sum of the 10,000 scores
    assert "branch taken: big | race winner: from_cache" in out.stdout
    assert "halvings: 7 |" in out.stdout and "'succeeded': 10000" in out.stdout
    assert "small run: cancelled - too small to report" in out.stdout


def test_triggers_example(tmp_path: Path) -> None:
    env = {**os.environ, "TRIGGERS_DATA_DIR": str(tmp_path / "store")}
    cmd = [sys.executable, str(ROOT / "examples" / "triggers.py")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "small order: charged 40.00 EUR for A-1; shipped by DHL" in out.stdout
    assert "big order: charged 900.00 EUR for A-2; shipped by UPS" in out.stdout
    assert 'approved by: {"approved_by":"grace"} | token used: resumed' in out.stdout
    assert "orders by ada: 2" in out.stdout
    assert "nightly report next at: " in out.stdout


def test_code_workflow_example(tmp_path: Path) -> None:
    env = {**os.environ, "CODE_DATA_DIR": str(tmp_path / "store")}
    cmd = [sys.executable, str(ROOT / "examples" / "code_workflow.py")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "progress: waiting for approval" in out.stdout
    assert "'rows': 200, 'checksum': 930979, 'approved_by': 'grace'" in out.stdout
    assert "steps: extract, transform, pause, approve, load" in out.stdout
    assert "'succeeded': 200" in out.stdout
    assert "replay: deterministic=True" in out.stdout and "same result: True" in out.stdout


# -- the same examples' workflows, tested with the test harness (the pytest plugin's fixture) ----


def _load(name: str) -> Any:
    """Import examples/<name>.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_orders_example_in_the_harness(workflow_test: Callable[..., WorkflowTest]) -> None:
    orders = _load("orders")
    wf = orders.define(af.Engine(store="memory"))
    order = {"id": "A-1", "lines": [[2, 9.5], [1, 30.0]], "engine_pid": 0}
    # charge_card would SIGKILL the engine the first time: the harness replaces it.
    t = workflow_test(wf).mock_step("charge", returns={"charged": 49.0}).run(order)
    t.expect_output("shipped 3 items, charged 49.0")
    t.expect_step("reserve").times(1).output({"order": "A-1", "reserved": 3})

    declined = workflow_test(wf).mock_step("charge", raises=ConnectionError("card network"))
    declined.run(order).expect_error(ConnectionError, match="card network")
    declined.expect_step("charge").times(3)  # Retry(attempts=3), backoff skipped
    declined.expect_step("ship").not_called()


def test_control_flow_example_in_the_harness(workflow_test: Callable[..., WorkflowTest]) -> None:
    control_flow = _load("control_flow")
    engine = af.Engine(store="memory")
    report = control_flow.define(engine)
    # The slow race branch sleeps 5 s in a worker; in the harness it is replaced.
    t = workflow_test(report).mock_step("from_origin", returns="origin").run({"n": 1000})
    expected = sum((i * 7919) % 101 for i in range(1000))
    t.expect_output(expected)
    t.expect_step("score").times(1000).called_with(999)
    t.expect_step("total").times(1)
    d = t.details
    assert d.step("big").branch == "big" and d.step("halve").iterations == 4
    assert d.step("source").winner in ("from_cache", "from_origin")

    small = workflow_test(report).run({"n": 10})
    small.expect_status("cancelled")
    small.expect_step("score").not_called()


def test_triggers_example_in_the_harness(workflow_test: Callable[..., WorkflowTest]) -> None:
    triggers = _load("triggers")
    orders = triggers.engine._definitions["orders"]
    small = {"order": "A-1", "customer": "ada", "amount": 40}
    t = workflow_test(orders).send_event("parcel.shipped", {"carrier": "DHL"}, key="A-1")
    t.run(small).expect_output("charged 40.00 EUR for A-1; shipped by DHL")
    t.expect_step("approve").skipped()

    big = {"order": "A-2", "customer": "ada", "amount": 900}
    b = workflow_test(orders).mock_service("billing", charge=lambda order, amount: "paid")
    b.approve("approve", {"approved_by": "grace"}).send_event(
        "parcel.shipped", {"carrier": "UPS"}, key="A-2"
    )
    b.run(big).expect_output("paid; shipped by UPS")
    b.expect_service("billing", "charge").called_with("A-2", 900)
    assert len(triggers.tokens) == 1  # on_pause was called with the approval's token

    unapproved = workflow_test(orders).run(big)  # nobody approves within the hour
    unapproved.expect_error(af.WaitTimeout).expect_step("charge").not_called()
    assert unapproved.elapsed == 3600.0


def test_code_workflow_example_in_the_harness(workflow_test: Callable[..., WorkflowTest]) -> None:
    code_workflow = _load("code_workflow")
    t = workflow_test(code_workflow.etl).approve("approve", {"by": "grace"}).run("s3://x.csv")
    out = t.result()
    assert (out["rows"], out["checksum"], out["approved_by"]) == (200, 930979, "grace")
    t.expect_step("transform").times(200)
    t.expect_step("store").times(1)

    nobody = workflow_test(code_workflow.etl).run("s3://x.csv")  # the signal never comes
    nobody.expect_error(af.WorkflowFailed, match="nobody approved the load")
