"""Payload codecs: compression and AES-GCM at rest, key rotation, wrong keys, doctor's verdicts."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import actorflow as af
from actorflow.store import LmdbStore
from actorflow.store import _keys as K
from actorflow.store._sealing import Codecs, is_sealed

ROOT = Path(__file__).resolve().parents[2]
KEY1 = base64.b64encode(b"\x01" * 32).decode()
KEY2 = base64.b64encode(b"\x02" * 32).decode()
OTHER = base64.b64encode(b"\x09" * 32).decode()
SECRET_PAYLOAD = {"card": "4111-1111-1111-1111", "rows": ["x" * 40] * 50}


def _run(data_dir: Path, **settings: object) -> str:
    engine = af.Engine(data_dir=data_dir, workers=1, **settings)
    engine.define("echo").step("same", lambda ctx: ctx.payload)
    with engine:
        run = engine.trigger("echo", SECRET_PAYLOAD)
        assert run.result(timeout=60) == SECRET_PAYLOAD
        return run.id


def _raw(data_dir: Path, db: str) -> list[bytes]:
    store = LmdbStore(data_dir, read_only=True)
    try:
        return [value for _, value in store.scan(db)]
    finally:
        store.close()


@pytest.mark.parametrize(
    "codecs", [("gzip",), ("zstd",), ("aesgcm",), ("zstd", "aesgcm"), ("gzip", "aesgcm")]
)
def test_round_trip_through_an_engine_and_a_restart(
    tmp_path: Path, codecs: tuple[str, ...]
) -> None:
    keys = (f"k1:{KEY1}",) if "aesgcm" in codecs else ()
    run_id = _run(tmp_path / "store", codecs=codecs, codec_keys=keys)
    for db in (K.RUNS, K.STEPS):
        raw = _raw(tmp_path / "store", db)
        assert raw and all(is_sealed(v) for v in raw)
        assert not any(b"4111-1111" in v for v in raw)  # neither readable nor stored plainly
    if codecs[0] in ("gzip", "zstd"):
        plain = _run(tmp_path / "plain")
        dbs = (K.RUNS, K.STEPS, K.VALUES)  # the payload and the output are in values
        size = lambda d: sum(len(v) for db in dbs for v in _raw(d, db))  # noqa: E731
        # Compressed, even with AES-GCM's nonce and tag on each record.
        assert size(tmp_path / "store") < size(tmp_path / "plain") * (
            0.6 if len(codecs) == 1 else 0.75
        )
        assert plain
    again = af.Engine(data_dir=tmp_path / "store", codecs=codecs, codec_keys=keys)
    again.define("echo").step("same", lambda ctx: ctx.payload)
    assert again.run(run_id).result(timeout=10) == SECRET_PAYLOAD  # read while stopped
    details = again.inspect(run_id)
    assert "4111-1111" in details.payload and details.steps[0].status == "succeeded"


def test_wrong_key_and_unknown_key_id_give_a_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    run_id = _run(data_dir, codecs=("zstd", "aesgcm"), codec_keys=(f"k1:{KEY1}",))
    wrong = af.Engine(data_dir=data_dir, codecs=("zstd", "aesgcm"), codec_keys=(f"k1:{OTHER}",))
    with pytest.raises(af.StoreCorrupted, match="cannot decrypt with key id 'k1'") as caught:
        wrong.inspect(run_id)
    assert OTHER not in str(caught.value) and KEY1 not in str(caught.value)
    missing = af.Engine(data_dir=data_dir, codecs=("aesgcm",), codec_keys=(f"k2:{KEY2}",))
    with pytest.raises(af.StoreCorrupted, match=r"key id 'k1', which is not configured"):
        missing.inspect(run_id)


def test_keys_rotate_new_records_use_the_first_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    old = _run(data_dir, codecs=("aesgcm",), codec_keys=(f"k1:{KEY1}",))
    rotated = {"codecs": ("aesgcm",), "codec_keys": (f"k2:{KEY2}", f"k1:{KEY1}")}
    new = _run(data_dir, **rotated)
    codecs = Codecs(("aesgcm",), (f"k2:{KEY2}", f"k1:{KEY1}"))
    store = LmdbStore(data_dir, read_only=True)
    try:
        ids = {rid: codecs.key_ids(store.get(K.RUNS, K.run_key(rid)) or b"") for rid in (old, new)}
    finally:
        store.close()
    assert ids == {old: ["k1"], new: ["k2"]}
    engine = af.Engine(data_dir=data_dir, **rotated)  # type: ignore[arg-type]
    assert engine.run(old).result(timeout=10) == engine.run(new).result(timeout=10)


def test_a_record_moved_to_another_key_does_not_decrypt() -> None:
    codecs = Codecs(("aesgcm",), (f"k1:{KEY1}",))
    sealed = codecs.seal(b"Jtrue", b"runs\0a")
    assert codecs.open(sealed, b"runs\0a", "runs 'a'") == b"Jtrue"
    with pytest.raises(af.StoreCorrupted, match="authentication failed"):
        codecs.open(sealed, b"runs\0b", "runs 'b'")
    with pytest.raises(af.StoreCorrupted, match="authentication failed"):
        codecs.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"runs\0a", "runs 'a'")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"codecs": ("brotli",)}, "unknown codec 'brotli'"),
        ({"codecs": ("aesgcm",)}, "'aesgcm' needs at least one key"),
        ({"codecs": ("aesgcm", "zstd"), "codec_keys": (f"k:{KEY1}",)}, "must come last"),
        ({"codecs": ("zstd", "gzip")}, "choose one compression"),
        ({"codecs": ("aesgcm",), "codec_keys": ("k1",)}, r"codec_keys\[0\]: expected"),
        ({"codecs": ("aesgcm",), "codec_keys": ("k1:c2hvcnQ=",)}, "got 5 bytes"),
        ({"codecs": ("aesgcm",), "codec_keys": ("k1:!!!",)}, "not valid base64|got 0 bytes"),
        ({"codec_keys": (f"a:{KEY1}", f"a:{KEY2}")}, "key id 'a' appears twice"),
    ],
)
def test_bad_codec_settings_name_the_field(settings: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message) as caught:
        af.Engine(store="memory", **settings)
    assert KEY1 not in str(caught.value) and KEY2 not in str(caught.value)


def test_codecs_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_CODECS", "zstd,aesgcm")
    monkeypatch.setenv("ACTORFLOW_CODEC_KEYS", f"k2:{KEY2},k1:{KEY1}")
    cfg = af.EngineConfig.from_sources(pyproject=False)
    assert cfg.codecs == ("zstd", "aesgcm") and cfg.codec_keys[0].startswith("k2:")
    assert KEY1 not in repr(cfg)  # keys never appear in a repr


def _doctor(data_dir: Path, **env: str) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        [sys.executable, "-m", "actorflow", "--data-dir", str(data_dir), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    checks["exit"] = {"verdict": str(out.returncode), "detail": out.stderr}
    return checks


def test_doctor_validates_codec_keys_against_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    _run(data_dir, codecs=("zstd", "aesgcm"), codec_keys=(f"k1:{KEY1}",))
    good = _doctor(data_dir, ACTORFLOW_CODECS="zstd,aesgcm", ACTORFLOW_CODEC_KEYS=f"k1:{KEY1}")
    assert good["payload codecs"]["verdict"] == "ok", good["payload codecs"]
    assert "keys k1 (active)" in good["payload codecs"]["detail"]
    bad = _doctor(data_dir, ACTORFLOW_CODECS="zstd,aesgcm", ACTORFLOW_CODEC_KEYS=f"k1:{OTHER}")
    assert bad["payload codecs"]["verdict"] == "fail"
    assert "cannot decrypt with key id 'k1'" in bad["payload codecs"]["detail"]
    assert bad["exit"]["verdict"] == "4"  # a check failed
    malformed = _doctor(data_dir, ACTORFLOW_CODECS="aesgcm", ACTORFLOW_CODEC_KEYS="k1:c2hvcnQ=")
    assert malformed["configuration"]["verdict"] == "fail"
    assert malformed["payload codecs"]["verdict"] == "fail"
    assert "got 5 bytes" in malformed["payload codecs"]["detail"]
    # A read-only place for the store: /proc takes no new files, even from root.
    readonly = _doctor(Path("/proc/actorflow-store"))
    assert readonly["store writable"]["verdict"] == "fail"
    assert readonly["exit"]["verdict"] == "4"
