"""The local channel between a leader engine and its followers: where it is, how it frames.

Data flow: a follower's call (a trigger, a wait for a result, a cancel...) becomes one
*request* frame ``(request id, op, args)`` on a Unix domain socket; the leader answers each
with one *reply* frame ``(request id, ok, value)``, in any order (a wait for a result is
answered when the run finishes, long after later requests). The leader also pushes lifecycle
events to a follower that subscribed, as frames with request id 0.

Frames are a 4-byte little-endian length and a pickle. Pickle is safe here because only the
store's owner can reach the socket: it lives in the data directory (owner-only, as the store
is) or, when that path is too long for a socket address, in a private per-user directory;
the socket itself is made owner-only before it listens, and on Linux each peer's uid is
checked (``SO_PEERCRED``). Whoever can connect could also open the store's files.

Exceptions cross the channel by class, arguments and attributes (see :func:`dumps`), not by
calling their constructors: many actorflow errors take other arguments than the message they
keep, which plain pickling would pass back to ``__init__``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import queue
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import cloudpickle

from actorflow.errors import RemoteError

__all__ = ["Connection", "dumps", "loads", "peer_is_owner", "socket_path"]

_HEADER = struct.Struct("<I")
#: Frames larger than this are refused (a payload this big belongs in a blob anyway).
MAX_FRAME = 1 << 30
#: ``sun_path`` holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
_MAX_SOCKET_PATH = 100


def socket_path(data_dir: Path) -> Path:
    """Where the leader of the store at ``data_dir`` listens (the same in every process)."""
    data_dir = Path(os.path.realpath(data_dir))
    near = data_dir / "leader.sock"
    if len(os.fsencode(near)) <= _MAX_SOCKET_PATH:
        return near
    # Too long for a socket address: a private directory of this user, named for the store.
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    private = base / f"actorflow-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{private} must be a directory of this user that only it can read "
            f"(owner {info.st_uid}, mode {oct(info.st_mode & 0o777)})"
        )
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:24]
    return private / f"{digest}.sock"


def listen(path: Path) -> socket.socket:
    """A listening socket at ``path``, owner-only before anyone can connect.

    The caller holds the store's lock, so a socket file left there is a dead leader's.
    """
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() creates the file with the process umask; it is chmod-ed before listen(), and
    # nobody can connect to a socket that does not listen yet.
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def peer_is_owner(sock: socket.socket) -> bool:
    """True unless the platform says the peer is another user (Linux ``SO_PEERCRED``)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True  # the socket's mode is the guard there
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


class Connection:
    """One end of the channel: frames are posted from any thread, received on one.

    :meth:`post` pickles on the caller's thread (so a value that cannot travel fails its
    caller) and queues the bytes; one sender thread writes whatever is queued in one
    ``sendall``. Nobody else blocks on the socket: replies are posted from actor threads
    (the writer completes a trigger's promise), which must never wait for a slow peer.

    Args:
        sock: a connected Unix socket.
        name: the sender thread's name.
    """

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb", buffering=1 << 16)
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.closed = False
        self._sender = threading.Thread(target=self._send_loop, name=name, daemon=True)
        self._sender.start()

    def post(self, obj: Any) -> None:
        """Queue one frame (pickled now: an unpicklable value raises here)."""
        data = dumps(obj)
        self._queue.put(_HEADER.pack(len(data)) + data)

    def recv(self) -> Any:
        """The next frame (blocking).

        Raises:
            EOFError: the other end closed the channel.
            OSError: the channel broke.
        """
        head = self._reader.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise EOFError("channel closed")
        (size,) = _HEADER.unpack(head)
        if size > MAX_FRAME:
            raise OSError(f"frame of {size} bytes is over the {MAX_FRAME} byte limit")
        body = self._reader.read(size)
        if len(body) < size:
            raise EOFError("channel closed mid-frame")
        return loads(body)

    def close(self) -> None:
        """Close both directions; a reader blocked in :meth:`recv` gets EOF."""
        if self.closed:
            return
        self.closed = True
        self._queue.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _send_loop(self) -> None:
        q = self._queue
        while True:
            first = q.get()
            if first is None:
                return
            parts = [first]
            while True:  # everything queued meanwhile goes in the same write
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.closed = True
                    break
                parts.append(more)
            try:
                self.sock.sendall(b"".join(parts))
            except OSError:
                return  # the peer is gone: its reader sees EOF and cleans up
            if self.closed:
                return


# -- pickling --------------------------------------------------------------------------------


def _rebuild(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any], cause: Any
) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    if cause is not None:
        exc.__cause__ = cause
    return exc


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle (payloads may hold functions), with exceptions sent by their parts."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            state = {k: v for k, v in vars(obj).items() if _picklable(v)}
            cause = obj.__cause__ if _picklable(obj.__cause__) else None
            args = obj.args if _picklable(obj.args) else (str(obj),)
            return _rebuild, (type(obj), args, state, cause)
        return super().reducer_override(obj)


def _picklable(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bytes | bool):
        return True
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for the channel (exceptions by their parts, see the module docstring)."""
    buf = io.BytesIO()
    try:
        _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    except Exception as exc:
        if not isinstance(obj, tuple) or len(obj) != 3 or obj[1] is not False:
            raise
        # A reply carrying an error that cannot travel: send what can be said about it.
        error = obj[2]
        stand_in = RemoteError(type(error).__qualname__, f"{error} (not picklable: {exc})")
        return dumps((obj[0], False, stand_in))
    return buf.getvalue()


def loads(data: bytes) -> Any:
    """Unpickle a frame."""
    return pickle.loads(data)
