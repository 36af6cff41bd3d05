"""Fault injection with SIGKILL: an engine process killed at random points, over and over.

``python -m tests.chaos`` (``make test-faults``) is the long form; ``tests/test_chaos.py``
runs a shorter one in the suite. See :mod:`tests.chaos.driver` and docs/reliability.md.
"""
