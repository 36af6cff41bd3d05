"""The chaos driver: start the workload's engine process, SIGKILL it, start it again.

Each generation runs ``tests.chaos.workload`` for a random time and is then killed with
SIGKILL, either by the driver (at a random moment) or by itself at an armed crash point
(``ACTORFLOW_CRASH_AT``: the N-th time a step result reaches its supervisor before it is
recorded, a group commit becomes durable before its effects, or a recorded dispatch is
about to be sent). A last generation runs until every acknowledged run is final. Then the
invariants of :mod:`tests.chaos.check` are checked.

Usage: python -m tests.chaos [--kills 200] [--runs 120] [--seed 1] [--dir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.chaos.check import check

ROOT = Path(__file__).resolve().parents[2]
POINTS = ("shard.before_record", "writer.after_commit", "dispatcher.before_send")


@dataclass
class Report:
    """What a chaos session did and found."""

    kills: int = 0  # SIGKILLs the engine process died of
    by_driver: int = 0  # ... sent by the driver at a random moment
    at_points: int = 0  # ... at an armed crash point
    generations: int = 0
    seconds: float = 0.0
    findings: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # a generation that did not behave

    @property
    def ok(self) -> bool:
        return not self.failures and not self.findings.get("violations")


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait for the killed engine's workers to exit (they watch it); return the lingering."""
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        left = [p for p in left if psutil.pid_exists(p) and _alive(p)]
        time.sleep(0.02)
    return left


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run(
    kills: int,
    runs: int,
    seed: int,
    workdir: Path,
    up: tuple[float, float] = (0.3, 1.6),
    settle_timeout: float = 300.0,
) -> Report:
    """Kill the engine ``kills`` times while it works through ``runs`` runs; then check."""
    rng = random.Random(seed)
    data_dir, log = workdir / "data", workdir / "executions.log"
    report = Report()
    began = time.monotonic()
    gen = 0

    def start(mode: str, crash_at: str | None) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env.pop("ACTORFLOW_CRASH_AT", None)
        if crash_at:
            env["ACTORFLOW_CRASH_AT"] = crash_at
        errors = open(workdir / f"gen{gen}.err", "w")  # noqa: SIM115 (kept for the child)
        return subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.workload", str(data_dir), str(log), str(gen),
             str(runs), mode],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors, text=True,
        )  # fmt: skip

    while report.kills < kills:
        crash_at = None
        if rng.random() < 0.35:
            crash_at = f"{rng.choice(POINTS)}={rng.randint(1, 40)}"
        proc = start("run", crash_at)
        deadline = time.monotonic() + rng.uniform(*up) + 1.0  # + about the engine's start
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            workers = []
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        if code == -signal.SIGKILL:
            report.kills += 1
            if crash_at and time.monotonic() < deadline:
                report.at_points += 1
            else:
                report.by_driver += 1
        else:
            report.failures.append(
                f"generation {gen} exited with {code}: "
                + (workdir / f"gen{gen}.err").read_text()[-2000:]
            )
            break
        lingering = _wait_gone(workers)
        if lingering:
            report.failures.append(f"generation {gen}: workers {lingering} outlived the engine")
            for pid in lingering:
                os.kill(pid, signal.SIGKILL)
        gen += 1
    report.generations = gen
    if not report.failures:
        proc = start("settle", None)
        try:
            out, _ = proc.communicate(timeout=settle_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out = ""
        report.generations += 1
        if "SETTLED" not in out:
            report.failures.append(
                f"the last generation did not settle (exit {proc.returncode}): "
                + (workdir / f"gen{gen}.err").read_text()[-3000:]
            )
        else:
            report.findings = check(str(data_dir), str(log)).as_dict()
    report.seconds = round(time.monotonic() - began, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="actorflow-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = run(args.kills, args.runs, args.seed, workdir)
    summary = {
        "kills": report.kills,
        "by_driver": report.by_driver,
        "at_crash_points": report.at_points,
        "generations": report.generations,
        "seconds": report.seconds,
        **report.findings,
        "failures": report.failures,
        "workdir": str(workdir),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if report.ok else 1
