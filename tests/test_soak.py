"""The soak in the suite: two minutes at 40 runs a second, a worker SIGKILLed every 5 s.

``make soak`` runs the 30-minute form. Latency figures are reported, not asserted (no test
depends on wall-clock speed); memory, file descriptors and lost runs are asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.soak import soak


@pytest.mark.reliability
@pytest.mark.timeout(900)
def test_two_minute_soak_with_worker_kills(tmp_path: Path) -> None:
    report = soak(seconds=120, rate=40, kill_every=5, data_dir=str(tmp_path / "data"))
    print(json.dumps(report.summary()))
    assert report.runs >= 1000
    assert report.lost == 0 and report.completed == report.runs
    assert report.worker_kills >= 20
    assert report.worker_deaths >= report.worker_kills  # each kill noticed, worker replaced
    assert report.workers_at_end == 2
    assert report.fd_growth <= 2  # no descriptor leaks per worker restart or per run
    # flat after warm-up (RSS also counts the store's mapped pages, which grow with it)
    assert report.heap_growth_mb < 8, report.heap_mb
    assert report.rss_growth_mb < 24, report.rss_mb
