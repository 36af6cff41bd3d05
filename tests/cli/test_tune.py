"""``actorflow tune``: a real sweep of a tiny workflow (two points), as users run it, and the
rules that turn points into a recommendation (on made-up points: nothing here is timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actorflow.cli._tune_report import KNOBS, Point, Sample, recommend, settle, verdicts
from actorflow.config import EngineConfig

ROOT = Path(__file__).resolve().parents[2]


def tune(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorflow", "tune", "tests.tune_app:engine", "fan", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_two_point_sweep_measures_each_setting_and_recommends(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "mine"  # kept as it is\n\n[tool.actorflow]\nretention = "7d"\n'
    )
    plot = tmp_path / "tune.html"
    done = tune(
        "--payload", "20", "--knob", "workers=1,2", "--runs", "2", "--repeat", "2",
        "--pyproject", str(pyproject), "--plot", str(plot), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    labels = [p["label"] for p in report["points"]]
    assert labels == ["base", "workers=1", "recommended"]  # base: the app's workers=2
    for point in report["points"]:
        assert point["error"] is None
        assert point["rounds"] == 2 and point["items_per_run"] == 20
        assert point["runs_per_s"] > 0 and point["items_per_s"] > point["runs_per_s"]
        assert point["head_us_per_item"] > 0
        assert 0 <= point["p50_ms"] <= point["p99_ms"]
    assert [p["settings"]["workers"] for p in report["points"][:2]] == [2, 1]
    verdicts_seen = [p["verdict"] for p in report["points"]]
    assert verdicts_seen.count("best") == 1
    chosen = report["recommended"]
    assert set(chosen) == set(KNOBS) and chosen["workers"] in (1, 2)
    assert chosen["durability"] == "sync"  # measured, never changed by tune
    # Written into the file's [tool.actorflow], the rest of the file as it was, and read
    # back by the engine's own configuration loader.
    text = pyproject.read_text()
    assert text.startswith('[project]\nname = "mine"  # kept as it is\n')
    assert report["written"] == str(pyproject)
    config = EngineConfig.from_sources(pyproject=pyproject)
    assert {name: getattr(config, name) for name in KNOBS} == chosen
    assert config.retention == 7 * 86400.0
    page = plot.read_text()
    assert "<svg" in page and "workers=1" in page


def test_dry_run_prints_the_table_and_writes_nothing(tmp_path: Path) -> None:
    done = tune(
        "--payload", "5", "--knob", "shards=1", "--runs", "1", "--repeat", "1", "--dry-run",
        "--plot", str(tmp_path / "tune.png"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["setting", "runs/s", "items/s"]
    assert [line.split("\t")[0] for line in lines[1:4]] == ["base", "shards=1", "recommended"]
    assert "[tool.actorflow]" in done.stdout and "shards = " in done.stdout
    assert not (tmp_path / "pyproject.toml").exists()
    assert (tmp_path / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--knob", "bogus=1"], "--knob: expected NAME=V1,V2"),
        (["--knob", "workers=many"], "--knob workers: cannot read 'many' as ints"),
        (["--knob", "shards=0"], "shards: expected an integer >= 1, got 0"),
        (["--payload", "{not json"], "--payload: expected JSON"),
        (["--runs", "0"], "--runs and --repeat: expected 1 or more"),
        (["--plot", "out.gif"], "--plot: expected a .html, .svg or .png file"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(args: list[str], says: str, tmp_path: Path) -> None:
    done = tune(*args, "--dry-run", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr


def test_a_workflow_that_fails_at_every_setting_is_an_error(tmp_path: Path) -> None:
    # (no --payload: the workflow's items source cannot read None)
    done = tune("--knob", "shards=1", "--runs", "1", "--repeat", "1", "--dry-run", cwd=tmp_path)
    assert done.returncode == 1
    assert "no setting could be measured: StepFailed" in done.stderr


def test_an_unknown_workflow_names_the_known_ones() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actorflow", "tune", "tests.tune_app:engine", "nope"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 1
    assert "defines no workflow 'nope' (fan)" in done.stderr


BASE = {"workers": 2, "prefetch": 32, "chunk_budget": 0.02, "durability": "sync",
        "shm_threshold": 1 << 20, "shards": 4}  # fmt: skip


def point(knob: str, value: Any, *rates: float) -> Point:
    settings = dict(BASE) if not knob or knob == "recommended" else {**BASE, knob: value}
    if knob == "recommended":
        settings.update(value)
    return Point(knob, settings, tuple(Sample(r, 10 * r, 50.0) for r in rates))


def test_a_knob_moves_only_when_it_beats_the_base_beyond_noise() -> None:
    points = [
        point("", None, 100, 102, 98),
        point("workers", 4, 130, 131, 129),  # clearly better
        point("prefetch", 8, 103, 99, 101),  # within noise: kept at the base value
        point("durability", "fast", 300, 300, 300),  # better, but tune never picks it
    ]
    chosen = recommend(points, BASE)
    assert chosen == {**BASE, "workers": 4}
    assert verdicts(points) == ["", "", "", "best"]


def test_settings_that_do_not_add_up_fall_back_to_the_best_single_point() -> None:
    singles = [
        point("", None, 100, 100),
        point("workers", 4, 130, 130),
        point("shards", 1, 120, 121),
    ]
    together = point("recommended", {"workers": 4, "shards": 1}, 90, 91)  # worse together
    assert settle([*singles, together], BASE) == {**BASE, "workers": 4}
    fine = point("recommended", {"workers": 4, "shards": 1}, 135, 134)
    assert settle([*singles, fine], BASE) == {**BASE, "workers": 4, "shards": 1}
    # nothing beat the base: the base is kept
    flat = [point("", None, 100, 100), point("workers", 4, 100, 101)]
    assert settle([*flat, point("recommended", {}, 99, 100)], BASE) == BASE


def test_a_failed_setting_is_shown_and_not_chosen() -> None:
    failed = Point("workers", {**BASE, "workers": 4}, error="StepFailed: boom")
    points = [point("", None, 100, 100), failed]
    assert recommend(points, BASE) == BASE
    assert verdicts(points) == ["best", "failed"]
