"""Build script for the optional native extension.

Everything else lives in pyproject.toml. The Cython evaluator is optional: without Cython or a
C compiler the build falls back to the pure-Python twin (actorflow/graph/_evaluator_py.py), and
``ACTORFLOW_NO_EXTENSIONS=1`` skips it on purpose.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
    if os.environ.get("ACTORFLOW_NO_EXTENSIONS") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython: the pure-Python evaluator is used
        return []
    ext = Extension(
        "actorflow.graph._evaluator_c",
        ["native/_evaluator_c.pyx"],
        # A failed compile must not fail the install: the pure twin takes over.
        optional=True,
    )
    return list(cythonize([ext], language_level=3, quiet=True))


setup(ext_modules=_extensions())
