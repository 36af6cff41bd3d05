"""What the operating system offers the engine, and the portable way taken where it does not.

Linux has four facilities the engine leans on; macOS (and other POSIX systems) lack them, so
each has a fallback (docs/operations.md, "Platforms", says what each costs):

- :data:`PDEATHSIG`: ``prctl(PR_SET_PDEATHSIG)``, the kernel killing a worker when the engine
  process dies. Fallback: a thread in each worker that checks every
  :data:`PARENT_POLL_INTERVAL` seconds whether the engine is still alive.
- :data:`SHM_FILES`: POSIX shared memory as files of a tmpfs (``/dev/shm``), so segments can
  be listed (to sweep those of a killed engine), its free space read, and a segment read and
  written like a file (``pread``, ``pwrite``, ``sendfile``). Fallback: segment names are
  recorded in a file beside the store, the budget is ``shm_max_bytes`` alone, and segments
  are read and written through a mapping.
- :data:`FALLOCATE`: ``posix_fallocate``, reserving a file's or a segment's blocks at once.
  Fallback: zeros written into what is not yet allocated.
- :data:`FORKSERVER`: the ``forkserver`` start method as the default, with the worker module
  preloaded in it. Fallback: ``spawn`` (macOS's own default: forking a process that loaded
  Apple's frameworks is unsafe), every worker importing ``preload`` itself at start.

``ACTORFLOW_FORCE_PORTABLE`` (``pdeathsig``, ``shm``, ``fallocate``, ``forkserver``,
comma-separated, or ``all``) takes the fallbacks on Linux too: CI cannot run macOS, so the
tests force each one there. It is read once, at import; worker processes inherit it.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Literal

__all__ = [
    "FALLOCATE",
    "FORCED",
    "FORKSERVER",
    "PARENT_POLL_INTERVAL",
    "PDEATHSIG",
    "PORTABLE_NAMES",
    "SHM_FILES",
    "default_start_method",
    "start_methods",
]

#: The fallbacks ``ACTORFLOW_FORCE_PORTABLE`` can force.
PORTABLE_NAMES = ("pdeathsig", "shm", "fallocate", "forkserver")

#: Seconds between two checks of the engine by a worker without a parent-death signal.
PARENT_POLL_INTERVAL = 0.5


def _forced(value: str) -> frozenset[str]:
    names = {part.strip().lower() for part in value.split(",") if part.strip()}
    if "all" in names:
        return frozenset(PORTABLE_NAMES)
    unknown = sorted(names - set(PORTABLE_NAMES))
    if unknown:
        warnings.warn(
            f"ACTORFLOW_FORCE_PORTABLE: unknown {', '.join(map(repr, unknown))} ignored; "
            f"expected some of {', '.join(PORTABLE_NAMES)}, or 'all'",
            RuntimeWarning,
            stacklevel=2,
        )
    return frozenset(names & set(PORTABLE_NAMES))


#: The fallbacks taken although the platform has the facility.
FORCED = _forced(os.environ.get("ACTORFLOW_FORCE_PORTABLE", ""))

_LINUX = sys.platform.startswith("linux")

PDEATHSIG: bool = _LINUX and "pdeathsig" not in FORCED
SHM_FILES: bool = _LINUX and os.path.isdir("/dev/shm") and "shm" not in FORCED
FALLOCATE: bool = hasattr(os, "posix_fallocate") and "fallocate" not in FORCED
# Linux always offers forkserver (it needs fd passing over Unix sockets, which Linux has).
FORKSERVER: bool = _LINUX and "forkserver" not in FORCED


def start_methods() -> tuple[str, ...]:
    """The start methods this Python offers.

    Read when an engine is configured, not at import: finding them imports multiprocessing,
    which ``import actorflow`` does without (``tests/test_extras.py``).
    """
    import multiprocessing

    return tuple(multiprocessing.get_all_start_methods())


def default_start_method() -> Literal["forkserver", "spawn"]:
    """``"forkserver"`` where it is the platform's sound choice (Linux), else ``"spawn"``."""
    return "forkserver" if FORKSERVER else "spawn"
