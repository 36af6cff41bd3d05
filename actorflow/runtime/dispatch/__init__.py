"""Dispatch: where steps run.

One dispatcher actor (``_dispatcher``) whatever runs the steps: it keeps the task table,
deadlines, cancels, drains, the answers to steps' requests and the reports to the runs'
shards. Below it, transports (``_transport`` is the interface) move the tasks: the
engine's own supervised worker processes (``_pool_workers`` <- ``_pool_wire`` <- ``_pool``),
and those whose steps run elsewhere (``_remote``): threads of the engine's process
(``_inline``), a Dask cluster (``_dask``) and Ray (``_ray``), the last two over the callback
link (``_link``). ``_executors`` turns ``Engine(executor=...)`` into a transport; the public
names are in :mod:`actorflow.executors`.
"""
