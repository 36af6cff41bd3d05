"""Dispatch: where steps run.

The process pool (``_pool``: the engine's own supervised worker processes), and the
remote-dispatcher base (``_remote``) with its two transports: a Dask cluster (``_dask``)
and threads of the engine process (``_inline``, for tests). Each takes ``Dispatch``
messages and reports ``AttemptSucceeded`` / ``AttemptFailed`` to the run's shard.
"""
