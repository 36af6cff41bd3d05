"""Compiled plans and the graph evaluator.

The evaluator has two twins with one API: ``_evaluator_py`` (the specification) and
``_evaluator_c`` (built by Cython from ``native/_evaluator_c.pyx``). :data:`evaluator` is the
compiled one when it loaded, unless ``ACTORFLOW_NO_EXTENSIONS=1`` forces pure Python;
:data:`NATIVE_REASON` says why the pure one is in use (``actorflow doctor`` shows it).
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
    "NATIVE_REASON",
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
    return _load(native)[0]


def _load(native: bool | None) -> tuple[ModuleType, str]:
    """The evaluator, and why it is the pure one ("" when it is the compiled one)."""
    if native is False:
        return _evaluator_py, "the pure-Python evaluator was asked for"
    if native is None and os.environ.get("ACTORFLOW_NO_EXTENSIONS") == "1":
        return _evaluator_py, "ACTORFLOW_NO_EXTENSIONS=1 is set"
    try:
        return importlib.import_module("actorflow.graph._evaluator_c"), ""
    except ImportError as exc:
        if native:
            raise
        if isinstance(exc, ModuleNotFoundError) and exc.name == "actorflow.graph._evaluator_c":
            # The build fell back (no C compiler or no Cython) and said so at install time.
            return _evaluator_py, "the compiled extension is not installed"
        # Present but unloadable: built for another Python, or a damaged file.
        return _evaluator_py, f"the compiled extension failed to load: {exc}"


evaluator: ModuleType
#: Why the pure-Python evaluator is in use; empty when the compiled one is.
NATIVE_REASON: str
evaluator, NATIVE_REASON = _load(None)
#: True when the compiled evaluator is in use.
NATIVE: bool = evaluator is not _evaluator_py
