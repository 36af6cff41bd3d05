"""Defining workflows: the fluent builder, immutable specs, retry and timeout options."""

from __future__ import annotations

from actorflow.definition._builder import Workflow
from actorflow.definition._options import Retry, parse_duration
from actorflow.definition._spec import FunctionRef, StepSpec, WorkflowSpec, function_ref

__all__ = [
    "FunctionRef",
    "Retry",
    "StepSpec",
    "Workflow",
    "WorkflowSpec",
    "function_ref",
    "parse_duration",
]
