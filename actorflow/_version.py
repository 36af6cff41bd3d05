"""The package's version, in a module of its own so any layer can name it.

(``actorflow.__version__`` re-exports it; importing the root package from a subpackage
would import every layer, and close an import cycle through it.) Keep it equal to
``version`` in pyproject.toml: ``tests/test_exports.py`` checks that they agree.
"""

__version__ = "0.1.0"
