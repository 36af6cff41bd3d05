"""A module for ``preload``: it notes which process imported it (see tests/test_platform.py)."""

from __future__ import annotations

import os

IMPORTED_IN = os.getpid()
