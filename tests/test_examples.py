"""Every example runs as a user would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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
