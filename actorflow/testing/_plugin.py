"""The pytest plugin (registered by the package as ``pytest11``): two fixtures.

- ``actorflow_engine``: a real engine (LMDB store, worker processes) in ``tmp_path``, not
  yet started, so the test defines its workflows first; stopped after the test if started.
- ``workflow_test``: ``workflow_test(wf, **options)`` returns a
  :class:`~actorflow.testing.WorkflowTest`; every harness it made is closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actorflow.engine._engine import Engine
from actorflow.testing._harness import WorkflowTest

__all__ = ["actorflow_engine", "workflow_test"]


@pytest.fixture
def actorflow_engine(tmp_path: Path) -> Iterator[Engine]:
    """A real engine on ``tmp_path / "actorflow"`` (2 workers), stopped after the test."""
    engine = Engine(data_dir=tmp_path / "actorflow", workers=2)
    try:
        yield engine
    finally:
        if engine.running:
            engine.stop(drain=False, timeout=10.0)


@pytest.fixture
def workflow_test() -> Iterator[Callable[..., WorkflowTest]]:
    """A factory of test harnesses: ``workflow_test(wf, **options)``; closed after the test."""
    made: list[WorkflowTest] = []

    def make(workflow: Any, **options: Any) -> WorkflowTest:
        harness = WorkflowTest(workflow, **options)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            harness.close()
