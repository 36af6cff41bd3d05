"""Defining workflows: the fluent builder, immutable specs, retry and timeout options."""

from __future__ import annotations

from actorflow.definition._builder import Workflow
from actorflow.definition._cache import Cache
from actorflow.definition._flow import ITEM, Flow
from actorflow.definition._options import Retry, parse_duration
from actorflow.definition._services import Secret, Service, ServiceInstance, define_service
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
    WaitSpec,
    WhileSpec,
    WorkflowSpec,
    function_ref,
    walk,
)
from actorflow.definition._triggers import ScheduleSpec, WebhookSpec

__all__ = [
    "ITEM",
    "ArmSpec",
    "BranchSpec",
    "Cache",
    "CancelSpec",
    "Flow",
    "ForEachSpec",
    "FunctionRef",
    "NodeSpec",
    "ParallelSpec",
    "Retry",
    "ScheduleSpec",
    "Secret",
    "Service",
    "ServiceInstance",
    "SleepSpec",
    "StepSpec",
    "SubflowSpec",
    "WaitSpec",
    "WebhookSpec",
    "WhileSpec",
    "Workflow",
    "WorkflowSpec",
    "define_service",
    "function_ref",
    "parse_duration",
    "walk",
]
