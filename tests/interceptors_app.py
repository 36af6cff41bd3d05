"""Interceptors the interceptor tests give engines (importable: workers unpickle them)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import actorflow as af


class Recorder(af.Interceptor):
    """Appends a line per call to ``log`` (a file: workers write it from their processes)."""

    def __init__(self, log: str = os.devnull, tag: str = "r") -> None:
        self.log = log
        self.tag = tag

    def _write(self, line: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"{self.tag} {line}\n")

    def workflow_start(self, call: af.StartCall, next: Any) -> str:
        # Adds a search attribute to every run it starts, as a tenant interceptor would.
        attrs = {**(call.search_attributes or {}), "tenant": "acme"}
        run_id: str = next(dataclasses.replace(call, search_attributes=attrs))
        self._write(f"start {call.workflow} {run_id}")
        return run_id

    def signal(self, call: af.SignalCall, next: Any) -> bool:
        self._write(f"signal {call.name} {call.payload}")
        fresh: bool = next(call)
        return fresh

    def query(self, call: af.QueryCall, next: Any) -> Any:
        if call.name == "secret":
            raise PermissionError("queries of 'secret' are refused")
        self._write(f"query {call.name}")
        return next(call)

    def update(self, call: af.UpdateCall, next: Any) -> Any:
        self._write(f"update {call.name} {call.payload}")
        return next(call)

    def step(self, call: af.StepCall, next: Any) -> Any:
        self._write(f"step-in {call.workflow_id} {call.step} {call.attempt} {os.getpid()}")
        out = next(call)
        self._write(f"step-out {call.step} {out!r}")
        return out
