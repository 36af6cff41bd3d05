"""The chaos test in the suite: the engine process SIGKILLed 12 times while it works.

The long form (200+ kills) is ``make test-faults``. Both check the same invariants
(tests/chaos/check.py): every acknowledged run final with exactly its expected output, no
key giving two runs, no step executed after its success was durable, no attempt executed
twice in one engine lifetime nor beyond its retry policy, no run finishing twice, exactly one
child run per parent, no acknowledged event, signal or approval lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.check import check
from tests.chaos.driver import run


@pytest.mark.reliability
@pytest.mark.timeout(900)
def test_sigkill_the_engine_again_and_again_loses_nothing(tmp_path: Path) -> None:
    report = run(kills=12, runs=72, seed=12, workdir=tmp_path)
    assert report.failures == []
    assert report.kills == 12
    findings = report.findings
    assert findings["violations"] == []
    assert findings["keys"] == 72  # every run was acknowledged, once per key
    assert findings["runs"] == 72 + 24  # and each parent or code run started one child
    assert findings["executions"] >= 72 * 3

    # The checker can fail: doctor the outside log and it finds each kind of violation.
    log = tmp_path / "executions.log"
    lines = log.read_text().splitlines()
    done = next(line.split() for line in lines if line.startswith("S ") and "succeeded" in line)
    taken = next(line.split() for line in lines if line.startswith("T "))
    with log.open("a") as f:
        f.write(f"X 999 {done[2]} {done[3]} {done[4]} 1\n")  # ran after its success
        f.write(f"T 999 {taken[2]} 01ffffffffffffffffffffff\n")  # a key's second run
        f.write(f"F 999 {done[2]} completed\nF 999 {done[2]} failed\n")  # finished twice
    violations = "\n".join(check(str(tmp_path / "data"), str(log)).violations)
    assert f"run {done[2]} step {done[3]}: executed again" in violations
    assert f"idempotency key {taken[2]} gave 2 runs" in violations
    assert f"run {done[2]} finished" in violations
