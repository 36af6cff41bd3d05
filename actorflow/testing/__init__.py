"""Helpers for testing workflows.

- :func:`replay` checks that today's code still takes the path a recorded run took::

      doc = engine.export_history(run.id)            # or `actorflow replay RUN --export F`
      result = af.testing.replay(doc, etl)
      assert result.ok, result.error
"""

from __future__ import annotations

from actorflow.code._history import History, load_history
from actorflow.code._replay import ReplayResult, replay

__all__ = ["History", "ReplayResult", "load_history", "replay"]
