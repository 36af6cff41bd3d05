"""Supervision: runs on shards, each owned by its supervisor.

A shard actor (``_shard``) holds the runs routed to it and commits their effects. Each run
is a :class:`~actorflow.runtime.supervision._run.RunMachine`: the graph supervisor
(``_graph``: the evaluator over the run's plan) or the code supervisor (``_code`` and
``_code_commands``: the workflow function on its deterministic loop). Around them: loading
a run with its version and plan (``_loading``, ``_plans``, ``_replay``), steps and their
attempts (``_steps``, ``_nodes``), waits for events and approvals (``_waits``,
``_external``), run depth (``_depth``), and held runs (``_held``).
"""
