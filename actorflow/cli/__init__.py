"""The ``actorflow`` command line (``actorflow --help`` lists its commands and exit statuses).

``_main`` parses and runs the commands, ``_output`` prints for all of them (tables, JSON,
errors) and decides how they end; ``_remote`` drives a running engine over its REST API,
``_store`` looks after the store, and ``_serve``, ``_doctor``, ``_replay``, ``_demo`` are the
commands of those names.
"""

from __future__ import annotations

from actorflow.cli._main import main

__all__ = ["main"]
