"""Worker processes: the wire protocol, the worker main loop, the step context, spawning."""

from __future__ import annotations

from actorflow.workers._context import RunInfo, StepContext, StepOutput

__all__ = ["RunInfo", "StepContext", "StepOutput"]
