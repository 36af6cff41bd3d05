"""``actorflow doctor``: check that this machine and data directory can run an engine.

Each check gives a verdict (``ok``, ``warn``, ``fail``) and what it saw. The command exits 4
if any check failed. It never changes stored data: the store is opened read-only when an
engine holds it, and the writability check uses a temporary file.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One verdict.

    Attributes:
        name: what was checked.
        verdict: ``"ok"``, ``"warn"`` or ``"fail"``.
        detail: what was seen, and what to do about a problem.
    """

    name: str
    verdict: str
    detail: str


def _store(data_dir: Path) -> list[Check]:
    from actorflow.errors import StoreError
    from actorflow.store import LmdbStore
    from actorflow.store import _keys as K
    from actorflow.store._protocol import ensure_format

    out: list[Check] = []
    probe = data_dir if data_dir.exists() else data_dir.parent
    if not probe.exists():
        return [Check("store", "fail", f"{data_dir}: neither it nor its parent exists")]
    try:
        fd, name = tempfile.mkstemp(prefix=".doctor-", dir=probe)
        os.close(fd)
        os.unlink(name)
        out.append(Check("store writable", "ok", f"{probe} accepts new files"))
    except OSError as exc:
        out.append(Check("store writable", "fail", f"cannot write in {probe}: {exc}"))
    if not (data_dir / "data.mdb").exists():
        out.append(Check("store format", "ok", f"no store yet at {data_dir}: one will be made"))
        return out
    try:
        store = LmdbStore(data_dir, read_only=True)
    except StoreError as exc:
        return [*out, Check("store format", "fail", str(exc))]
    try:
        version = ensure_format(store)
        runs = len(store.scan(K.RUNS, limit=1_000_000))
        out.append(Check("store format", "ok", f"format {version}, {runs} runs"))
    except StoreError as exc:
        out.append(Check("store format", "fail", str(exc)))
    finally:
        store.close()
    holder = data_dir / "engine.lock"
    if holder.exists():
        import fcntl

        fd = os.open(holder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            out.append(Check("store lock", "ok", "no engine holds the store"))
        except OSError:
            pid = holder.read_text().strip() or "?"
            out.append(Check("store lock", "warn", f"an engine (pid {pid}) holds the store now"))
        finally:
            os.close(fd)
    return out


def _native() -> Check:
    from actorflow.graph import NATIVE, NATIVE_REASON, evaluator

    if NATIVE:
        return Check(
            "native evaluator",
            "ok",
            f"the compiled (Cython) evaluator is loaded ({evaluator.__file__})",
        )
    pure = f"the pure-Python evaluator is in use: {NATIVE_REASON}"
    if os.environ.get("ACTORFLOW_NO_EXTENSIONS") == "1":
        return Check("native evaluator", "ok", f"{pure} (same results, slower per event)")
    return Check(
        "native evaluator",
        "warn",
        f"{pure}. It gives the same results, about 10x slower per event; reinstall where a C "
        "compiler works (`pip install -v` shows why a build left the extension out)",
    )


def _workers(start_method: str) -> Check:
    from actorflow.workers import _protocol as W
    from actorflow.workers._pool import mp_context, spawn_worker

    started = time.monotonic()
    try:
        proc, conn = spawn_worker(mp_context(start_method), ())
    except Exception as exc:
        return Check("workers", "fail", f"cannot start a worker process ({start_method}): {exc}")
    try:
        if not conn.poll(30):
            return Check("workers", "fail", "a worker process started but did not answer in 30s")
        reader = W.FrameReader(conn.fileno())
        messages = reader.read()
        if not messages or messages[0][0] != W.HELLO:
            return Check("workers", "fail", f"unexpected first message {messages!r}")
        took = (time.monotonic() - started) * 1000
        return Check("workers", "ok", f"a worker ({start_method}) was ready in {took:.0f} ms")
    finally:
        proc.kill()
        proc.join(5)
        conn.close()


def _shared_memory() -> Check:
    from actorflow.store._blobfiles import segment_read, segment_write
    from actorflow.workers._shm import SHM_DIR, create_segment, shm_space, unlink_segment

    name = f"af_doctor_{secrets.token_hex(4)}"
    try:
        fd = create_segment(name, 1 << 20)
    except OSError as exc:
        return Check(
            "shared memory",
            "warn",
            f"cannot create a segment ({exc}); set shm_threshold=0 to send large values "
            "through pipes",
        )
    try:
        # (Not pwrite/pread: macOS segments are read and written through a mapping only.)
        segment_write(fd, b"ok", 0)
        good = segment_read(fd, 2, 0) == b"ok"
    finally:
        os.close(fd)
        unlink_segment(name)
    if not good:
        return Check("shared memory", "fail", "a segment did not read back what was written")
    total, free = shm_space()
    if not total:  # no /dev/shm to read (macOS): shm_max_bytes alone bounds the segments
        return Check("shared memory", "ok", "segments work (free space not readable here)")
    detail = f"segments work; {_mib(free)} free of {_mib(total)} in {SHM_DIR}"
    if total < _SMALL_SHM:
        return Check(
            "shared memory",
            "warn",
            f"{detail}: small (a container's default is 64 MiB). Large values that do not fit "
            "go through pipes and are stored in LMDB, which is slower; give it more room "
            "(docker run --shm-size=1g, or a Kubernetes emptyDir with medium: Memory)",
        )
    return Check("shared memory", "ok", detail)


#: A /dev/shm smaller than this gets a warning: one large hand-off may not fit.
_SMALL_SHM = 512 << 20


def _mib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def _port(host: str, port: int) -> Check:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            return Check("webhook port", "warn", f"{host}:{port} is taken ({exc.strerror})")
    return Check("webhook port", "ok", f"{host}:{port} is free")


def _codecs(data_dir: Path, names: tuple[str, ...], keys: tuple[str, ...]) -> Check:
    """The codec chain and its keys, tried on sealed records of the store (read-only)."""
    from actorflow.errors import ActorflowError
    from actorflow.store import LmdbStore
    from actorflow.store._sealing import SEALED_DBS, Codecs, is_sealed, record_aad

    try:
        codecs = Codecs(names, keys)
    except ActorflowError as exc:
        return Check("payload codecs", "fail", str(exc))
    sample: dict[str, tuple[str, bytes, bytes]] = {}  # a record per key id it names
    sealed_count = 0
    if (data_dir / "data.mdb").exists():
        try:
            store = LmdbStore(data_dir, read_only=True)
        except ActorflowError as exc:
            return Check("payload codecs", "warn", f"store not readable: {exc}")
        try:
            for db in sorted(SEALED_DBS):
                for key, raw in store.scan(db, limit=10_000):
                    ids = codecs.key_ids(raw)
                    if is_sealed(raw):
                        sealed_count += 1
                    for kid in ids:
                        sample.setdefault(kid, (db, key, raw))
                    if not ids and is_sealed(raw):
                        sample.setdefault("", (db, key, raw))
        finally:
            store.close()
    for _kid, (db, key, raw) in sorted(sample.items()):
        try:
            codecs.open(raw, record_aad(db, key), f"{db} {key.decode(errors='replace')!r}")
        except ActorflowError as exc:
            return Check("payload codecs", "fail", str(exc))
    if not names:
        if sealed_count:
            return Check(
                "payload codecs",
                "warn",
                f"no codecs configured for new records, but {sealed_count} sealed records "
                "exist (they were read back with the configured keys)",
            )
        return Check("payload codecs", "ok", "none configured")
    shown = " -> ".join(names)
    key_ids = ", ".join(f"{kid} (active)" if kid == codecs.active else kid for kid in codecs.keys)
    detail = f"{shown}" + (f"; keys {key_ids}" if key_ids else "")
    detail += f"; {sealed_count} sealed records seen, one per key id decrypted"
    return Check("payload codecs", "ok", detail)


def run_checks(data_dir: Path, host: str = "127.0.0.1", port: int = 8080) -> list[Check]:
    """Every check, in order."""
    from actorflow._platform import default_start_method
    from actorflow.config import EngineConfig
    from actorflow.errors import ActorflowError

    start_method: str = default_start_method()
    out: list[Check] = []
    codecs: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    try:
        cfg = EngineConfig.from_sources()
        start_method = cfg.start_method
        codecs, keys = cfg.codecs, cfg.codec_keys
        out.append(Check("configuration", "ok", "defaults, ACTORFLOW_* and pyproject.toml"))
    except ActorflowError as exc:
        out.append(Check("configuration", "fail", str(exc)))
        # Still try the codecs as given, to name the bad key precisely.
        codecs = _raw_list("ACTORFLOW_CODECS")
        keys = _raw_list("ACTORFLOW_CODEC_KEYS")
    out += _store(data_dir)
    out.append(_native())
    out.append(_workers(start_method))
    out.append(_shared_memory())
    out.append(_port(host, port))
    out.append(_codecs(data_dir, codecs, keys))
    return out


def _raw_list(var: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in os.environ.get(var, "").split(",") if x.strip())
