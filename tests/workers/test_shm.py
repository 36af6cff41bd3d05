"""Large values travel through shared memory: zero-copy, intact, and never left behind."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actorflow as af
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from actorflow.store._blobfiles import BlobFiles
from actorflow.workers._shm import store_segments
from tests import shm_steps
from tests.conftest import executions, wait_until
from tests.runtime.test_recovery import child, finish, result_line

MakeEngine = Callable[..., af.Engine]
MB = 1 << 20


def _token(engine: af.Engine) -> str:
    assert engine._core is not None
    token: str = engine._core.blobs.token
    return token


def _shm(engine: af.Engine) -> dict[str, Any]:
    stats: dict[str, Any] = engine.statistics()["shm"]
    return stats


def test_numpy_arrays_arrive_as_views_of_shared_memory_with_layout_intact(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.define("arrays").step("make", shm_steps.make_arrays).step(
        "look", shm_steps.describe_arrays
    )
    with engine:
        seen = engine.trigger("arrays").result(timeout=60)
        assert _shm(engine)["lent"] >= 6  # one segment per large buffer
    expected = shm_steps.arrays()
    for name, got in seen.items():
        a = expected[name]
        assert got["equal"], name
        assert got["shape"] == list(a.shape), name
        assert got["dtype"] == (a.dtype.str if a.dtype.names is None else repr(a.dtype.descr))
    for name in ("c", "f", "structured", "complex"):  # contiguous: mapped, not copied
        assert seen[name]["strides"] == list(expected[name].strides), name
        assert seen[name]["shared"], name
        assert not seen[name]["writeable"], name  # a view of the producer's output
    # Not contiguous: copied into a contiguous array (C order), same values.
    for name in ("strided", "transposed_view"):
        a = np.ascontiguousarray(expected[name])
        assert seen[name]["strides"] == list(a.strides), name
        assert seen[name]["shared"], name
    assert not seen["small"]["shared"]  # below the threshold: in the pipe


def test_the_threshold_is_exclusive_and_configurable(make_engine: MakeEngine) -> None:
    engine = make_engine(shm_threshold="1MiB")
    engine.define("sized").step("make", shm_steps.sized).step("where", shm_steps.where)
    with engine:
        at = engine.trigger("sized", {"size": MB}).result(timeout=60)
        above = engine.trigger("sized", {"size": MB + 1}).result(timeout=60)
        below = engine.trigger("sized", {"size": MB - 1}).result(timeout=60)
        assert _shm(engine)["lent"] == 1
    assert at == [MB, 7 * MB, False]  # exactly the threshold: through the pipe
    assert above == [MB + 1, 7 * (MB + 1), True]
    assert below == [MB - 1, 7 * (MB - 1), False]


def test_shared_memory_can_be_turned_off(make_engine: MakeEngine) -> None:
    engine = make_engine(shm_threshold=0)
    engine.define("sized").step("make", shm_steps.sized).step("where", shm_steps.where)
    with engine:
        assert engine.trigger("sized", {"size": 8 * MB}).result(timeout=60) == [
            8 * MB,
            56 * MB,
            False,
        ]
        assert _shm(engine)["lent"] == 0
        assert store_segments(_token(engine)) == []


def test_bytes_bytearray_and_memoryview_round_trip(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("bufs").step("make", shm_steps.buffers).step("kinds", shm_steps.buffer_kinds)
    with engine:
        kinds = engine.trigger("bufs").result(timeout=60)
        assert _shm(engine)["lent"] == 5
    assert kinds == {
        "bytes": True,
        "bytearray": True,
        "view": ["I", [1024, 512], True, True],
        "top": True,
        "nested": True,
    }


@pytest.mark.parametrize("slow_disk", [False, True])
def test_segments_are_reused_and_released_after_each_run(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, slow_disk: bool
) -> None:
    if slow_disk:  # blob writes that take 0.5 s each must not hold clean-ups back
        write_from = BlobFiles.write_from

        def slow(self: BlobFiles, *args: Any, **kwargs: Any) -> bool:
            time.sleep(0.5)
            return write_from(self, *args, **kwargs)

        monkeypatch.setattr(BlobFiles, "write_from", slow)
    engine = make_engine(blob_write_delay=0)
    engine.define("big").step("make", shm_steps.make_big).step("where", shm_steps.total_and_where)
    with engine:
        token = _token(engine)
        for _ in range(20):
            total, shared, writeable = engine.trigger("big", {"n": MB}).result(timeout=60)
            assert total == float(sum(range(MB))) and shared and not writeable
            # Each run's segment is released once its clean-up ran (off the hot path): the
            # next run then reuses it. Without waiting, a loaded machine may start the next
            # run first and rightly take a second segment.
            wait_until(lambda: _shm(engine)["in_use"] == 0)
        stats = _shm(engine)
        assert stats["lent"] == 20
        assert stats["reused"] >= 18  # written in place, not a new segment per value
        assert stats["segments"] <= 2, stats
        assert len(store_segments(token)) == stats["segments"]
        # Intermediate values of completed runs are deleted, on disk too.
        wait_until(lambda: not engine._core.store.scan(K.BLOBS), 60)  # type: ignore[union-attr]
        assert engine._core.store.blobs.ids() == []  # type: ignore[union-attr]
    assert store_segments(token) == []


@pytest.mark.parametrize(
    ("consumer", "status"),
    [
        (shm_steps.sum_then_fail, af.RunStatus.FAILED),
        (shm_steps.sum_then_hang, af.RunStatus.FAILED),  # killed at its timeout
        (shm_steps.sum_then_die, af.RunStatus.FAILED),  # worker crash
    ],
)
def test_segments_are_released_when_the_consumer_fails_times_out_or_crashes(
    make_engine: MakeEngine, consumer: Any, status: af.RunStatus
) -> None:
    engine = make_engine()
    engine.define("big").step("make", shm_steps.make_big).step("use", consumer, timeout=2)
    with engine:
        token = _token(engine)
        run = engine.trigger("big", {"n": 2 * MB})
        with pytest.raises(af.ActorflowError):
            run.result(timeout=60)
        assert run.status() == status
        wait_until(lambda: _shm(engine)["in_use"] == 0)  # no task holds a segment
        # A failed run keeps its values (it may be retried): on disk, not pinned in memory.
        wait_until(lambda: _shm(engine)["pending_writes"] == 0)
        assert len(engine._core.store.blobs.ids()) == 1  # type: ignore[union-attr]
    assert store_segments(token) == []


def test_a_large_result_is_kept_and_read_back_after_a_restart(make_engine: MakeEngine) -> None:
    engine = make_engine(blob_write_delay=0)
    engine.define("big").step("make", shm_steps.make_big)
    with engine:
        run = engine.trigger("big", {"n": 3 * MB})
        first = run.result(timeout=60)
        assert first.shape == (3 * MB,) and first[-1] == 3 * MB - 1
        detail = run.inspect()
        assert "large buffer" in detail.result  # summarised, never dumped
    again = make_engine(blob_write_delay=0)
    again.define("big").step("make", shm_steps.make_big)
    with again:
        value = again.run(run.id).result(timeout=10)  # from the blob file
        assert np.array_equal(value, first)
        assert again._core.store.blobs.ids() != []  # type: ignore[union-attr]


def test_a_large_payload_and_code_workflow_arguments_use_shared_memory(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.define("sum").step("where", shm_steps.total_and_where)

    @engine.workflow("code-big")
    async def code_big(ctx: af.WorkflowContext, n: int) -> list[Any]:
        a = await ctx.step("make", shm_steps.code_make, n)
        # The engine decodes the step's output without copying it, and passes it on.
        assert not a.flags.writeable
        return await ctx.step("total", shm_steps.code_total, a)  # type: ignore[no-any-return]

    with engine:
        payload = np.arange(2 * MB, dtype=np.float64)
        # ctx.last of a first step is None; feed the payload through a one-step workflow.
        engine.define("echo").step("where", lambda ctx: shm_steps.total_and_where(_Last(ctx)))
        total, shared, _ = engine.trigger("echo", payload).result(timeout=60)
        assert total == float(payload.sum()) and shared
        assert engine.trigger("code-big", 2 * MB).result(timeout=60) == [
            float(np.arange(2 * MB).sum()),
            True,
        ]


class _Last:
    """A context whose ``last`` is the payload."""

    def __init__(self, ctx: Any) -> None:
        self.last = ctx.payload


@pytest.mark.crash
def test_engine_sigkill_keeps_a_recorded_value_and_leaves_no_segment(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "shm"))
    assert code == -signal.SIGKILL, (out, err)
    store = LmdbStore(data_dir, read_only=True)
    try:
        token = store.get(K.META, K.BLOB_TOKEN_KEY)
        assert token is not None
        [(_, record)] = store.scan(K.BLOBS, b"b\x00")  # recorded with the step's output
        assert store.blobs.ids() == []  # never written to disk before the kill...
    finally:
        store.close()
    left = store_segments(token.decode())
    assert json.loads(record)["seg"] in left  # ...but its segment survives the engine
    code, out, err = finish(child(data_dir, log, "shm"))
    assert code == 0, err
    recovered = next(line for line in out.splitlines() if line.startswith("RECOVERED"))
    saved, lost, swept = (int(x) for x in recovered.split()[1:])
    assert (saved, lost) == (1, 0) and swept == len(left)
    assert float(result_line(out)) == float(np.arange(6_250_000, dtype=np.float64).sum())
    assert executions(log)["make"] == 1  # recorded: not run again
    assert store_segments(token.decode()) == []
    for name in left:
        assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.crash
def test_a_value_lost_with_the_machine_fails_its_reader_clearly(tmp_path: Path) -> None:
    """The machine stops before the blob reaches the disk (simulated: the engine is killed
    and its segments vanish, as tmpfs does): the reader fails naming the lost value."""
    data_dir, log = tmp_path / "store", tmp_path / "exec.log"
    code, out, err = finish(child(data_dir, log, "shm"))
    assert code == -signal.SIGKILL, (out, err)
    store = LmdbStore(data_dir, read_only=True)
    token = (store.get(K.META, K.BLOB_TOKEN_KEY) or b"").decode()
    store.close()
    for name in store_segments(token):
        os.unlink(f"/dev/shm/{name}")
    code, out, err = finish(child(data_dir, log, "shm"))
    assert code != 0
    recovered = next((line for line in out.splitlines() if line.startswith("RECOVERED")), "")
    assert recovered.split()[1:3] == ["0", "1"], (code, out, err)  # nothing saved, one lost
    assert "is missing from the store" in err and "step 'sum'" in err, err
    assert executions(log)["make"] == 1


def test_mapped_large_values_do_not_count_against_max_memory_per_worker(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(max_memory_per_worker="150MB", workers=1)
    engine.define("big").step("make", shm_steps.make_big).step("where", shm_steps.total_and_where)
    with engine:
        for n in (5, 6, 7, 8):  # four segments of 40-64 MB, all mapped by the one worker
            total, shared, _ = engine.trigger("big", {"n": n * MB}).result(timeout=60)
            assert shared and total == float(sum(range(n * MB)))
        assert engine.statistics()["recycled"] == 0


def _can_unshare() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare -rm (a private /dev/shm mount)")
@pytest.mark.parametrize("force", ["", "shm,fallocate"])
def test_a_small_dev_shm_never_crashes_a_worker(tmp_path: Path, force: str) -> None:
    """A container's /dev/shm (64 MiB): a 200 MiB hand-off, twenty 10 MiB hand-offs at once
    and a 100 MiB payload used to kill workers with SIGBUS (an ftruncated segment reserves
    nothing on tmpfs) or fail with a bare ENOSPC. Each now takes the pipe instead, and a
    stored large value that no segment can hold reaches its step in band. Also with the
    fallbacks forced (as on macOS): no free space to read, segments reserved by writing
    zeros, and read and written through mappings."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        ["unshare", "-rm", sys.executable, "-m", "tests.shm_child", "64", str(tmp_path / "s")],
        cwd=root,
        env={**os.environ, "ACTORFLOW_FORCE_PORTABLE": force},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["BIG"] == "[200]"
    assert lines["MANY"] == str([10] * 20)
    assert lines["PAYLOAD"] == "100"
    assert lines["LATER"] == "[30]"
    assert lines["CRASHES"] == "0"
    if not force:  # the doctor reads the free space, which the fallback does not have
        assert lines["DOCTOR"].startswith("warn ") and "--shm-size" in lines["DOCTOR"]
    assert "SIGBUS" not in out.stderr
