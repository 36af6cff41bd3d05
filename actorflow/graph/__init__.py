"""Compiled plans and the graph evaluator.

The evaluator has two twins with one API: ``_evaluator_py`` (the specification) and
``_evaluator_c`` (built by Cython from ``native/_evaluator_c.pyx``). :data:`evaluator` is the
compiled one when it loaded, unless ``ACTORFLOW_NO_EXTENSIONS=1`` forces pure Python.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from actorflow.graph import _evaluator_py
from actorflow.graph._compile import compile_plan
from actorflow.graph._cycles import check_subflow_cycles, subflow_targets
from actorflow.graph._plan import Plan

__all__ = [
    "NATIVE",
    "Plan",
    "check_subflow_cycles",
    "compile_plan",
    "evaluator",
    "load_evaluator",
    "subflow_targets",
]


def load_evaluator(native: bool | None = None) -> ModuleType:
    """Return the evaluator module to use.

    Args:
        native: True to require the compiled twin (ImportError if missing), False for pure
            Python, None to prefer the compiled one unless ``ACTORFLOW_NO_EXTENSIONS=1``.
    """
    if native is False or (native is None and os.environ.get("ACTORFLOW_NO_EXTENSIONS") == "1"):
        return _evaluator_py
    try:
        return importlib.import_module("actorflow.graph._evaluator_c")
    except ImportError:
        if native:
            raise
        return _evaluator_py


evaluator: ModuleType = load_evaluator()
#: True when the compiled evaluator is in use.
NATIVE: bool = evaluator is not _evaluator_py
