"""The codec chain: one value compressed (zstd, gzip) and encrypted (AES-GCM), self-describing.

A sealed value starts with a magic prefix, then the chain as it was applied (each codec's id,
and for AES-GCM its key id and nonce), then the body. Codecs apply in the order given
(compress, then encrypt). The first key encrypts; every listed key decrypts, so keys rotate
by putting a new one first and keeping the old ones until nothing needs them. The caller
gives the associated data that binds a value to its place (see :mod:`actorflow.store._sealing`
for records, :mod:`actorflow.store._sealedblobs` for blob files' chunks).

Key material never appears in errors, logs or reprs: only key ids do.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import struct
import threading
from collections.abc import Sequence
from typing import Any

from actorflow._extras import require
from actorflow.errors import ConfigError, StoreCorrupted

__all__ = ["CODECS", "Codecs", "is_sealed", "parse_keys"]

#: Known codecs and their ids in a sealed record.
CODECS = {"zstd": 1, "gzip": 2, "aesgcm": 3}
_NAMES = {v: k for k, v in CODECS.items()}
_MAGIC = b"\xafS1"  # no encoded value (J, P, B, S) or record starts with 0xAF


def parse_keys(keys: Sequence[str]) -> dict[str, bytes]:
    """``("kid:base64", ...)`` -> {kid: key}, in order (the first encrypts).

    Raises:
        ConfigError: a malformed entry (named by its position and key id, never its key).
    """
    out: dict[str, bytes] = {}
    for i, entry in enumerate(keys):
        kid, sep, b64 = str(entry).partition(":")
        if not sep or not kid or not b64:
            raise ConfigError(
                f"codec_keys[{i}]: expected 'key-id:base64-key', got an entry without "
                "a key id or a key"
            )
        try:
            key = base64.b64decode(b64.strip() + "=" * (-len(b64.strip()) % 4), validate=False)
        except (binascii.Error, ValueError):
            raise ConfigError(f"codec_keys[{i}] ({kid!r}): the key is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise ConfigError(
                f"codec_keys[{i}] ({kid!r}): expected a 128, 192 or 256-bit AES key "
                f"(16, 24 or 32 bytes), got {len(key)} bytes"
            )
        if kid in out:
            raise ConfigError(f"codec_keys[{i}]: key id {kid!r} appears twice")
        if len(kid.encode()) > 255:
            raise ConfigError(f"codec_keys[{i}]: key id longer than 255 bytes")
        out[kid] = key
    return out


class Codecs:
    """An ordered codec chain with its keys.

    Args:
        names: codec names in the order they apply on write.
        keys: ``("kid:base64", ...)``; the first encrypts.

    Raises:
        ConfigError: an unknown codec, a bad order, a missing or bad key.
        MissingExtra: a codec whose library is not installed (``pip install
            'actorflow[codecs]'``; a :class:`ConfigError` too).
    """

    def __init__(self, names: Sequence[str], keys: Sequence[str] = ()) -> None:
        names = tuple(names)
        for n in names:
            if n not in CODECS:
                raise ConfigError(f"codecs: unknown codec {n!r}; known: {', '.join(CODECS)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"codecs: a codec appears twice in {list(names)}")
        if "aesgcm" in names and names[-1] != "aesgcm":
            raise ConfigError("codecs: 'aesgcm' must come last (compress before encrypting)")
        if "zstd" in names and "gzip" in names:
            raise ConfigError("codecs: choose one compression, 'zstd' or 'gzip'")
        self.names = names
        self.keys = parse_keys(keys)
        if "aesgcm" in names and not self.keys:
            raise ConfigError("codec_keys: 'aesgcm' needs at least one key ('key-id:base64')")
        #: The key id new records are encrypted with.
        self.active = next(iter(self.keys), "")
        self._aead: dict[str, Any] = {}
        if "aesgcm" in names or self.keys:
            aead = require("cryptography.hazmat.primitives.ciphers.aead", "codecs: 'aesgcm'")
            self._aead = {kid: aead.AESGCM(key) for kid, key in self.keys.items()}
        self._zstd: Any = None
        # (De)compressors per thread: making one costs ~15 us, more than sealing a record,
        # and one may not be used by two threads at once.
        self._local = threading.local()
        if "zstd" in names:
            self._zstd = require("zstandard", "codecs: 'zstd'")

    def __repr__(self) -> str:
        return f"Codecs({list(self.names)}, key ids {list(self.keys)})"

    def seal(self, data: bytes, aad: bytes) -> bytes:
        """Apply the chain to ``data``; ``aad`` binds it to where it is stored."""
        header = bytearray(_MAGIC)
        header.append(len(self.names))
        body = data
        for name in self.names:
            header.append(CODECS[name])
            if name == "zstd":
                body = self._zstd_pair()[0].compress(body)
            elif name == "gzip":
                body = gzip.compress(body, compresslevel=6, mtime=0)
            else:
                kid = self.active.encode()
                nonce = os.urandom(12)
                header += bytes([len(kid)]) + kid + nonce
                body = self._aead[self.active].encrypt(nonce, body, aad + b"\0" + kid)
        return bytes(header) + body

    def open(self, data: bytes | memoryview, aad: bytes, where: str) -> bytes:
        """Undo the chain recorded in ``data``'s header (plain records pass through).

        ``data`` may be a view (a blob file's chunk), which is not copied before decrypting.

        Raises:
            StoreCorrupted: a malformed header, an unknown key id, or a record that does
                not decrypt (a wrong key, or a record altered or moved).
        """
        if not is_sealed(data):
            return bytes(data)
        try:
            pos = len(_MAGIC)
            count = data[pos]
            pos += 1
            steps: list[tuple[str, bytes, bytes]] = []
            for _ in range(count):
                name = _NAMES[data[pos]]
                pos += 1
                kid = nonce = b""
                if name == "aesgcm":
                    n = data[pos]
                    kid = bytes(data[pos + 1 : pos + 1 + n])
                    nonce = bytes(data[pos + 1 + n : pos + 13 + n])
                    pos += 13 + n
                steps.append((name, kid, nonce))
        except (IndexError, KeyError, struct.error):
            raise StoreCorrupted(f"{where}: a sealed record has a malformed codec header") from None
        body: bytes | memoryview = data[pos:]
        for name, kid, nonce in reversed(steps):
            if name == "aesgcm":
                aead = self._aead.get(kid.decode(errors="replace"))
                if aead is None:
                    raise StoreCorrupted(
                        f"{where}: encrypted with key id {kid.decode(errors='replace')!r}, "
                        f"which is not configured (codec_keys has {list(self.keys) or 'none'})"
                    )
                try:
                    body = aead.decrypt(nonce, body, aad + b"\0" + kid)
                except Exception:
                    raise StoreCorrupted(
                        f"{where}: cannot decrypt with key id {kid.decode(errors='replace')!r}: "
                        "authentication failed (a wrong key for that id, or an altered record)"
                    ) from None
            elif name == "zstd":
                body = self._zstd_pair()[1].decompress(body)
            else:
                body = gzip.decompress(body)
        return bytes(body)  # no copy of what a codec returned (bytes)

    def _zstd_pair(self) -> tuple[Any, Any]:
        """This thread's zstd compressor and decompressor."""
        pair: tuple[Any, Any] | None = getattr(self._local, "zstd", None)
        if pair is None:
            if self._zstd is None:  # a zstd record read by a chain without zstd
                self._zstd = require("zstandard", "reading a record compressed with 'zstd'")
            pair = (self._zstd.ZstdCompressor(level=3), self._zstd.ZstdDecompressor())
            self._local.zstd = pair
        return pair

    def key_ids(self, data: bytes | memoryview) -> list[str]:
        """The key ids a sealed record names (empty for a plain one)."""
        if not is_sealed(data):
            return []
        out = []
        pos = len(_MAGIC) + 1
        for _ in range(data[len(_MAGIC)]):
            name = _NAMES.get(data[pos])
            pos += 1
            if name == "aesgcm":
                n = data[pos]
                out.append(bytes(data[pos + 1 : pos + 1 + n]).decode(errors="replace"))
                pos += 13 + n
        return out


def is_sealed(data: bytes | memoryview) -> bool:
    """Whether a stored value went through a codec chain."""
    return data[: len(_MAGIC)] == _MAGIC
