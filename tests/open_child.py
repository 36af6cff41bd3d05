"""Open an engine on a data directory and say what happened, for the data-file tests.

Usage: python -m tests.open_child DATA_DIR [recreate]

Prints ``OPENED <number of runs>`` or ``REFUSED <error type> <message>``, exit status 0. A
SIGBUS (LMDB reading a page the file does not have) kills this process, not the test suite:
the test then sees exit status -7.
"""

from __future__ import annotations

import sys

import actorflow as af


def main(data_dir: str, recreate: bool) -> None:
    engine = af.Engine(data_dir=data_dir, workers=1, recreate_store=recreate)
    try:
        engine.start()
    except af.ActorflowError as exc:
        print("REFUSED", type(exc).__name__, exc, flush=True)
        return
    try:
        print("OPENED", len(engine.runs(limit=None)), flush=True)
    finally:
        engine.stop()


if __name__ == "__main__":
    main(sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "recreate")
