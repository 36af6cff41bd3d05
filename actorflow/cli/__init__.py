"""The ``actorflow`` command line: ``demo``, ``runs``, ``show``."""

from __future__ import annotations

from actorflow.cli._main import main

__all__ = ["main"]
