"""Defining workflows: the fluent builder, immutable specs, retry and timeout options."""

from __future__ import annotations

from actorflow.definition._builder import Workflow
from actorflow.definition._flow import ITEM, Flow
from actorflow.definition._options import Retry, parse_duration
from actorflow.definition._spec import (
    ArmSpec,
    BranchSpec,
    CancelSpec,
    ForEachSpec,
    FunctionRef,
    NodeSpec,
    ParallelSpec,
    SleepSpec,
    StepSpec,
    SubflowSpec,
    WhileSpec,
    WorkflowSpec,
    function_ref,
    walk,
)

__all__ = [
    "ITEM",
    "ArmSpec",
    "BranchSpec",
    "CancelSpec",
    "Flow",
    "ForEachSpec",
    "FunctionRef",
    "NodeSpec",
    "ParallelSpec",
    "Retry",
    "SleepSpec",
    "StepSpec",
    "SubflowSpec",
    "WhileSpec",
    "Workflow",
    "WorkflowSpec",
    "function_ref",
    "parse_duration",
    "walk",
]
