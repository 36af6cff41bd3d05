"""Shared fixtures: engines on a temporary store, a manual clock, and a check that every
test stops every actor it started (a leaked actor thread would hang the next tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

import actorflow as af


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``packaging`` (minutes of builds) run only when ``-m`` names the marker.

    ``make test-packaging`` runs them (CI does); ``make test`` and a bare ``pytest`` leave them
    out, whatever other ``-m`` expression they pass.
    """
    if "packaging" in (config.option.markexpr or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("packaging")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("packaging")]


@pytest.fixture(autouse=True)
def _no_leaked_actors() -> Iterator[None]:
    yield
    leaked = pykka.ActorRegistry.get_all()
    if leaked:
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
        pytest.fail(f"test left {len(leaked)} actors running: {leaked}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def make_engine(data_dir: Path) -> Iterator[Callable[..., af.Engine]]:
    """Build engines on the test's store (2 workers unless told); all are stopped after."""
    engines: list[af.Engine] = []

    def make(**settings: Any) -> af.Engine:
        settings.setdefault("workers", 2)
        settings.setdefault("data_dir", data_dir)
        engine = af.Engine(**settings)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop(drain=False, timeout=5)


@pytest.fixture
def engine(make_engine: Callable[..., af.Engine]) -> af.Engine:
    return make_engine()


@pytest.fixture
def counter_file(tmp_path: Path) -> Path:
    """A file steps append to, one line per execution, to count executions across processes."""
    path = tmp_path / "executions.log"
    path.touch()
    return path


def executions(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name = line.split()[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


def wait_until(
    predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.01
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """The process exited: it is a zombie, or gone (it may vanish between two checks)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def sigkill_when(tmp_path: Path, code: str, marker: str) -> str:
    """Run ``code`` (an engine script) in its own process until it prints ``marker RUN_ID``,
    then SIGKILL it, as a crash would; return the run id it printed."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "engine_script.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(marker):
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"the engine script printed {line!r}, not {marker}")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    return line.split()[1]
