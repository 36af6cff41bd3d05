"""The store sealed at rest: records and blob files compressed and encrypted by a codec chain.

``Engine(codecs=("zstd", "aesgcm"), codec_keys=("k2:<base64>", "k1:<base64>"))`` seals every
value that can hold user bytes (the chain itself is :mod:`actorflow.store._chain`):

- **Records** of :data:`SEALED_DBS`: payloads, outputs and results (``values``), step and
  run records with their inline outputs, errors and tracebacks (``steps``, ``runs``), code
  workflows' histories, ``ctx.state``, buffered events, approvals, steps' log records
  (``logs``). A record's database and key are its associated data: a record copied
  elsewhere in the store does not decrypt. The
  other databases hold what the engine derives from the code's definitions and its own
  bookkeeping (definitions, the status index, timers, schedules, idempotency and blob
  records, meta); see docs/operations.md for why keys themselves stay readable.
- **Blob files** (buffers above ``shm_threshold``, :mod:`actorflow.store._blobfiles`), in
  fixed chunks of :data:`CHUNK` bytes, streamed from their shared-memory segment to the file
  and back, so a 200 MB buffer is never held twice::

      header   SEALED_MAGIC, version (1), flags (u8), size (u64), chunk size (u32)
      frames   per chunk: length (u32), the chunk sealed by the chain as a record is (its
               own chain, key id and nonce), then a CRC-32 if the flags say so

  A chunk's associated data is the file's whole header (size, chunk size, flags), the blob
  id, the chunk's index and whether it is the last: a chunk moved to another place or blob,
  a dropped or repeated chunk, a file cut short or grown, and a wrong key all fail with
  :class:`~actorflow.errors.StoreCorrupted` naming the blob, before any byte of that chunk
  is handed out. With compression but no ``aesgcm`` nothing is authenticated; a CRC-32 of
  each frame, seeded with the same binding, catches accidental damage and misplaced chunks.

Everything stays self-describing. Records and blob files written before codecs were turned
on (or with another chain) are read as they are, so a store switches over gradually; with no
codec configured (keys only, to read old sealed data) new blobs are written plain, by the
kernel's copy. Key material never appears in errors, logs or reprs: only key ids do.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from actorflow.errors import StoreCorrupted, StoreError
from actorflow.store import _keys as K
from actorflow.store._blobfiles import SEALED_MAGIC, BlobFiles, segment_read, segment_write
from actorflow.store._chain import CODECS, Codecs, is_sealed, parse_keys
from actorflow.store._protocol import BlobStore, Op, Store, get_many

__all__ = [
    "CHUNK",
    "CODECS",
    "SEALED_DBS",
    "Codecs",
    "SealedBlobs",
    "SealedStore",
    "is_sealed",
    "parse_keys",
    "record_aad",
    "sealed",
]

#: Databases whose values can carry user bytes (see the module docstring for the others).
SEALED_DBS = frozenset(
    {K.VALUES, K.RUNS, K.STEPS, K.HISTORY, K.STATE, K.EVENTS, K.APPROVALS, K.LOGS}
)


def record_aad(db: str, key: bytes) -> bytes:
    """What a record is bound to: its database and key."""
    return db.encode() + b"\0" + key


class SealedStore:
    """A store whose user-data databases are sealed by ``codecs`` (the same contract).

    Args:
        inner: the store.
        codecs: the chain.
    """

    def __init__(self, inner: Store, codecs: Codecs) -> None:
        self.inner = inner
        self.codecs = codecs
        files = inner.blobs
        # In-memory blobs are not at rest: only files are sealed.
        self._blobs = SealedBlobs(files, codecs) if isinstance(files, BlobFiles) else files

    @property
    def path(self) -> Any:
        return getattr(self.inner, "path", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # the store's own extras (stats, map size...)

    @property
    def blobs(self) -> BlobStore:
        """The large values' files, sealed by the same chain."""
        return self._blobs

    def get(self, db: str, key: bytes) -> bytes | None:
        raw = self.inner.get(db, key)
        if raw is None or db not in SEALED_DBS:
            return raw
        return self.codecs.open(raw, record_aad(db, key), f"{db} {key.decode(errors='replace')!r}")

    def get_many(self, db: str, keys: list[bytes]) -> list[bytes | None]:
        found = get_many(self.inner, db, keys)
        if db not in SEALED_DBS:
            return found
        codecs = self.codecs
        return [
            codecs.open(raw, record_aad(db, k), f"{db} {k.decode(errors='replace')!r}")
            if raw is not None
            else None
            for k, raw in zip(keys, found, strict=True)
        ]

    def scan(self, db: str, prefix: bytes = b"", **kwargs: Any) -> list[tuple[bytes, bytes]]:
        found = self.inner.scan(db, prefix, **kwargs)
        if db not in SEALED_DBS:
            return found
        codecs = self.codecs
        return [
            (key, codecs.open(raw, record_aad(db, key), f"{db} {key.decode(errors='replace')!r}"))
            for key, raw in found
        ]

    def write(self, ops: Sequence[Op]) -> None:
        if self.codecs.names:
            seal = self.codecs.seal
            # An empty value (an index entry) holds nothing to hide: it stays empty.
            ops = [
                (db, key, seal(value, record_aad(db, key)))
                if value and db in SEALED_DBS
                else (db, key, value)
                for db, key, value in ops
            ]
        self.inner.write(ops)

    def sync(self) -> None:
        self.inner.sync()

    def close(self) -> None:
        self.inner.close()


def sealed(store: Store, names: Sequence[str], keys: Sequence[str]) -> Store:
    """``store`` sealed by the chain, or as it is when no codec or key is configured."""
    if not names and not keys:
        return store
    return SealedStore(store, Codecs(names, keys))


#: Plaintext bytes per sealed chunk of a blob file.
CHUNK = 4 << 20
_VERSION = 1
_HEADER = struct.Struct("<BBQI")  # version, flags, size, chunk size (after SEALED_MAGIC)
_HEADER_SIZE = len(SEALED_MAGIC) + _HEADER.size
_FRAME = struct.Struct("<I")  # a frame's sealed chunk length; also its CRC-32
_PLACE = struct.Struct(">QB")  # chunk index, last chunk (in the associated data)
_F_CRC = 1  # frames end with a CRC-32 (the chain does not authenticate)
_F_ENCRYPTED = 2  # every chunk must be encrypted
_MIN_FRAME = _FRAME.size + 4  # a length, and at least a sealed record's magic and count


def _never() -> bool:
    return False


def _count(size: int, chunk: int) -> int:
    """Chunks of a blob of ``size`` bytes: at least one, so that even an empty blob is bound."""
    return max(1, -(-size // chunk))


def _binding(header: bytes, blob_id: str, index: int, last: bool) -> bytes:
    """A chunk's associated data: its file's header, its blob, its index, whether last."""
    return header + blob_id.encode() + b"\0" + _PLACE.pack(index, last)


def _parse(blob_id: str, head: bytes, length: int) -> tuple[int, int, int]:
    """(flags, size, chunk size) from a sealed blob file's header; ``length``: the file's.

    Raises:
        StoreCorrupted: a short, unknown or impossible header.
    """
    if len(head) < _HEADER_SIZE:
        raise StoreCorrupted(f"blob {blob_id}: a sealed file cut short in its header")
    version, flags, size, chunk = _HEADER.unpack_from(head, len(SEALED_MAGIC))
    if version != _VERSION:
        raise StoreCorrupted(
            f"blob {blob_id}: sealed file format {version} is unknown to this actorflow"
        )
    if (
        chunk <= 0
        or flags & ~(_F_CRC | _F_ENCRYPTED)
        or _count(size, chunk) * _MIN_FRAME > length - _HEADER_SIZE
    ):
        raise StoreCorrupted(f"blob {blob_id}: a sealed file with a damaged header")
    return flags, size, chunk


def _write_all(fd: int, data: bytes, at: int | None = None) -> None:
    """Write all of ``data`` at the file position, or at offset ``at``."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if at is None else os.pwrite(fd, view, at)
        view = view[n:]
        if at is not None:
            at += n


class SealedBlobs:
    """Blob files sealed by ``codecs``, chunk by chunk (the :class:`BlobStore` contract).

    Args:
        files: the blob files underneath.
        codecs: the chain; with no codec in it (keys only), new blobs are written plain.
        chunk: plaintext bytes per chunk.
    """

    def __init__(self, files: BlobFiles, codecs: Codecs, chunk: int = CHUNK) -> None:
        self.files = files
        self.codecs = codecs
        self.chunk = chunk
        self.read_only = files.read_only

    def write_from(
        self, blob_id: str, fd: int, size: int, cancelled: Callable[[], bool] = _never
    ) -> bool:
        """Store ``size`` bytes from the start of ``fd`` as ``blob_id``, sealed.

        Returns:
            False if ``cancelled()`` turned true first (nothing is left behind).

        Raises:
            StoreError: the write failed (disk full, the source ended early...).
        """
        if not self.codecs.names:
            return self.files.write_from(blob_id, fd, size, cancelled)
        flags = _F_ENCRYPTED if "aesgcm" in self.codecs.names else _F_CRC
        chunk = self.chunk
        header = SEALED_MAGIC + _HEADER.pack(_VERSION, flags, size, chunk)
        n = _count(size, chunk)

        def fill(out: int) -> bool:
            _write_all(out, header)
            for i in range(n):
                if cancelled():
                    return False
                want = min(chunk, size - i * chunk)
                plain = segment_read(fd, want, i * chunk)
                if len(plain) != want:
                    raise StoreError(
                        f"cannot write blob {blob_id}: its source ended after "
                        f"{i * chunk + len(plain)} of {size} bytes"
                    )
                binding = _binding(header, blob_id, i, i == n - 1)
                record = self.codecs.seal(plain, binding)
                length = _FRAME.pack(len(record))
                _write_all(out, length)  # not joined: that would copy the chunk again
                _write_all(out, record)
                if flags & _F_CRC:
                    crc = zlib.crc32(record, zlib.crc32(length, zlib.crc32(binding)))
                    _write_all(out, _FRAME.pack(crc))
            return True

        return self.files.write_with(blob_id, fill)

    def read_into(self, blob_id: str, fd: int) -> int | None:
        """Copy blob ``blob_id`` to the start of ``fd``; its size (None: no such blob).

        Raises:
            StoreCorrupted: a sealed file that does not open (a wrong key, altered...).
        """
        opened = self._open(blob_id, lambda at, data: segment_write(fd, data, at))
        if opened is None:
            return None
        return self.files.read_into(blob_id, fd) if opened < 0 else opened

    def read(self, blob_id: str) -> bytes | memoryview | None:
        """The bytes of blob ``blob_id`` (None: no such blob).

        Raises:
            StoreCorrupted: a sealed file that does not open.
        """
        out: list[mmap.mmap] = []

        def put(at: int, data: bytes) -> None:
            out[0][at : at + len(data)] = data

        # Into an anonymous map, not a growing bytes object: a large value is not held twice.
        opened = self._open(blob_id, put, lambda size: out.append(mmap.mmap(-1, max(1, size))))
        if opened is None:
            return None
        if opened < 0:
            return self.files.read(blob_id)
        return memoryview(out[0])[:opened].toreadonly()

    def size(self, blob_id: str) -> int | None:
        """The size of blob ``blob_id``'s value (not of its file), or None if absent."""
        try:
            with open(self.files.file(blob_id), "rb") as f:
                head = f.read(_HEADER_SIZE)
                length = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            return None
        if not head.startswith(SEALED_MAGIC):
            return length
        try:
            return _parse(blob_id, head, length)[1]
        except StoreCorrupted:
            # The file's own length, which is not the value's: start-up's recovery takes it
            # for an incomplete blob instead of failing, and reading it names the damage.
            return length

    def delete(self, blob_id: str) -> None:
        """Remove blob ``blob_id`` (no error if absent)."""
        self.files.delete(blob_id)

    def ids(self) -> list[str]:
        """Every stored blob id."""
        return self.files.ids()

    def _open(
        self,
        blob_id: str,
        put: Callable[[int, bytes], None],
        sized: Callable[[int], None] | None = None,
    ) -> int | None:
        """Open the sealed file of ``blob_id`` chunk by chunk, each to ``put(offset, bytes)``.

        Returns:
            The blob's size; -1 for a plain file (nothing read); None if there is none.
        """
        try:
            src = os.open(self.files.file(blob_id), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            head = os.pread(src, _HEADER_SIZE, 0)
            if not head.startswith(SEALED_MAGIC):
                return -1
            length = os.fstat(src).st_size
            flags, size, chunk = _parse(blob_id, head, length)
            if sized is not None:
                sized(size)
            n = _count(size, chunk)
            pos = _HEADER_SIZE
            for i in range(n):
                where = f"blob {blob_id} (chunk {i + 1} of {n})"
                binding = _binding(head, blob_id, i, i == n - 1)
                record, pos = self._frame(src, pos, flags, binding, where, length)
                plain = self._unseal(record, flags, binding, where)
                want = min(chunk, size - i * chunk)
                if len(plain) != want:
                    raise StoreCorrupted(f"{where}: holds {len(plain)} bytes, expected {want}")
                put(i * chunk, plain)
            if pos != length:
                raise StoreCorrupted(
                    f"blob {blob_id}: {length - pos} unexpected bytes after its last chunk"
                )
            return size
        except OSError as exc:
            raise StoreError(f"cannot read blob {blob_id}: {exc}") from exc
        finally:
            os.close(src)

    @staticmethod
    def _frame(
        src: int, pos: int, flags: int, binding: bytes, where: str, length: int
    ) -> tuple[memoryview, int]:
        """The sealed chunk of the frame at ``pos`` (a view), and where the next one starts."""
        raw = os.pread(src, _FRAME.size, pos)
        trailer = _FRAME.size if flags & _F_CRC else 0
        if len(raw) == _FRAME.size:
            (n,) = _FRAME.unpack(raw)
            frame = memoryview(os.pread(src, _FRAME.size + n + trailer, pos))
            if len(frame) == _FRAME.size + n + trailer:
                if trailer and _FRAME.unpack_from(frame, _FRAME.size + n)[0] != zlib.crc32(
                    frame[:-trailer], zlib.crc32(binding)
                ):
                    raise StoreCorrupted(f"{where}: checksum mismatch (altered or moved)")
                return frame[_FRAME.size : _FRAME.size + n], pos + len(frame)
        raise StoreCorrupted(f"{where}: the file is cut short ({length} bytes)")

    def _unseal(self, record: memoryview, flags: int, binding: bytes, where: str) -> bytes:
        # A chunk must be sealed, and encrypted if its file says so: a plain or merely
        # compressed chunk put in its place would otherwise pass for the original.
        if not is_sealed(record):
            raise StoreCorrupted(f"{where}: a chunk that is not sealed")
        try:
            plain = self.codecs.open(record, binding, where)
        except StoreCorrupted:
            raise
        except Exception as exc:  # a compressed body that does not decompress
            raise StoreCorrupted(f"{where}: does not decode ({exc})") from None
        if flags & _F_ENCRYPTED and not self.codecs.key_ids(record):
            raise StoreCorrupted(f"{where}: a chunk that is not encrypted in an encrypted file")
        return plain
