"""A poison step (one that kills the engine process every time it runs) cannot put the
engine in a crash loop: after max_interruptions restarts during its attempts, it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import executions
from tests.runtime.test_recovery import child, finish

pytestmark = pytest.mark.crash


@pytest.mark.parametrize("kind", ["graph", "code"])
def test_a_step_that_kills_the_engine_fails_after_max_interruptions(
    tmp_path: Path, kind: str
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "log"
    codes = []
    out = ""
    for _ in range(4):
        code, out, err = finish(child(data_dir, log, "poison", kind))
        codes.append(code)
        if code == 0:
            break
    # two starts die of it; the third gives up on the step (max_interruptions=2)
    assert codes == [-9, -9, 0], (codes, err[-2000:])
    assert executions(log)["boom"] == 2
    expected = "interrupted by 2 engine stops while it ran (max_interruptions=2)"
    if kind == "graph":
        assert out.startswith("FAILED "), out
        assert expected in out and "'boom'" in out
    else:  # the workflow's code sees the step fail, like any other step failure
        assert out.startswith("RESULT caught: "), out
        assert expected in out
