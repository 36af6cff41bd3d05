"""Helpers for testing workflows.

- :class:`WorkflowTest` (or ``wf.test(payload)``) runs a workflow in memory, with steps run
  inline, mocks, scripted approvals, events and signals, and a clock that skips to the next
  timer, so a workflow with a 24-hour sleep is tested in milliseconds::

      t = orders.test()
      t.mock_step("charge", returns={"ok": True}).approve("approve", {"by": "grace"})
      t.run({"amount": 20_000})
      t.expect_status("completed").expect_step("charge").times(1)

- The pytest plugin (installed with the package) gives the fixtures ``actorflow_engine``
  (a real engine on ``tmp_path``, stopped after the test) and ``workflow_test`` (a factory of
  harnesses, closed after the test).

- :func:`replay` checks that today's code still takes the path a recorded run took::

      doc = engine.export_history(run.id)            # or `actorflow replay RUN --export F`
      result = af.testing.replay(doc, etl)
      assert result.ok, result.error
"""

from __future__ import annotations

from actorflow.code._history import History, load_history
from actorflow.code._replay import ReplayResult, replay
from actorflow.testing._expect import Call, CallExpectation
from actorflow.testing._harness import WorkflowTest

__all__ = [
    "Call",
    "CallExpectation",
    "History",
    "ReplayResult",
    "WorkflowTest",
    "load_history",
    "replay",
]
