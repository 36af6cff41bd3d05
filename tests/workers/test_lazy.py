"""Large values reach a step only if it reads them (lazy payload and ctx.last)."""

from __future__ import annotations

from collections.abc import Callable

import actorflow as af
from tests import steps

MakeEngine = Callable[..., af.Engine]
MB = 1 << 20


def test_a_step_that_reads_only_small_values_does_not_receive_large_ones(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(workers=1)
    (
        engine.define("lazy")
        .step("big", steps.big_blob)  # 20 MB output
        .step("small", steps.ignores_last)  # ctx.last would be the 20 MB: never read
        .step("again", steps.big_blob)
        .step("reader", steps.measures_last)  # reads its 20 MB ctx.last: fetched then
    )
    with engine:
        assert engine.trigger("lazy", {"n": 1}).result(timeout=120) == 20 * MB
        sent = engine.statistics()["pool"]["bytes_sent"]
    assert sent < MB, sent  # four task frames; no 20 MB value pushed to any step


def test_a_large_payload_is_fetched_by_the_steps_that_read_it(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    engine.define("payload").step("size", steps.payload_size).step("n", steps.ignores_last)
    with engine:
        run = engine.trigger("payload", {"blob": "x" * (5 * MB), "n": 41})
        assert run.result(timeout=120) == 42
        assert run.inspect().step("size").output == str(5 * MB)
        sent = engine.statistics()["pool"]["bytes_sent"]
    assert sent < MB, sent
