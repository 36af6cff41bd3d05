"""Build script for the optional native extension.

Everything else lives in pyproject.toml. The Cython evaluator is optional: when it cannot be
built (no C compiler, a compiler that fails, no Cython) the build still succeeds, installs the
pure-Python twin (actorflow/graph/_evaluator_py.py) and says so in one warning: recent pip
shows it for ``pip install .`` even with ``--quiet`` (for an sdist archive, and in older pip,
only ``-v`` does), and ``python -m build`` shows it. ``ACTORFLOW_NO_EXTENSIONS=1`` skips the extension on purpose.
``actorflow doctor`` reports which evaluator an installation loads, and why.

``Extension(optional=True)`` is not enough: it does not survive ``cythonize()``, and where it
applies it logs the failure where pip hides it. So a failed build is caught here, in the way
msgpack, PyYAML and zope.interface make theirs optional.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

try:
    from Cython.Compiler.Errors import CompileError as CythonError

    _HAVE_CYTHON = True
except ImportError:  # a build without isolation, where Cython is not installed
    _HAVE_CYTHON = False

    class CythonError(Exception):  # type: ignore[no-redef]
        """Stands in for Cython's error when Cython is not installed."""


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words: the compiler's command line is not one of them."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, subprocess.CalledProcessError):
            return f"the C compiler {seen.cmd[0]} exited with status {seen.returncode}"
        if isinstance(seen, FileNotFoundError) and seen.filename:
            return f"no C compiler: {seen.filename} not found"
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _fall_back(reason: str) -> None:
    """Say once, as a warning (pip forwards a backend's warnings), that the pure twin is used."""
    warnings.warn(
        f"actorflow: the compiled graph evaluator was not built ({reason}); the pure-Python "
        "evaluator will be used (same results, slower per event; `actorflow doctor` shows "
        "which one is loaded)",
        UserWarning,
        stacklevel=2,
    )


class OptionalBuildExt(build_ext):
    """build_ext whose failure leaves the package installable on the pure-Python evaluator."""

    def run(self) -> None:
        """Build every extension; no usable compiler for this platform means the pure twin."""
        try:
            super().run()
        except PlatformError as exc:  # no usable compiler at all for this platform
            _fall_back(_reason(exc))

    def build_extension(self, ext: Any) -> None:
        """Build one extension, or say why not and leave it out."""
        if not _HAVE_CYTHON:  # setuptools would compile a .c that the sdist does not carry
            _fall_back("Cython is not installed")
            return
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError) as exc:
            _fall_back(_reason(exc))
        except CythonError as exc:  # a .pyx this Cython cannot translate
            _fall_back(f"Cython: {_reason(exc)}")


def _extensions() -> list[Extension]:
    if os.environ.get("ACTORFLOW_NO_EXTENSIONS") == "1":
        return []
    ext = Extension("actorflow.graph._evaluator_c", ["native/_evaluator_c.pyx"])
    # Read by Cython's build_ext (setuptools' base class when Cython is importable): the
    # generated C goes to the build's temporary directory, never next to the .pyx, so the
    # sdist (which ships the .pyx alone) can never pick up a stale one.
    ext.cython_c_in_temp = True  # type: ignore[attr-defined]
    return [ext]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
