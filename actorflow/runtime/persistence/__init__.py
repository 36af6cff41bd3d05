"""Persistence: the store writer and the records kept beside it.

The writer (``_writer``) is the store's only writer: it commits actors' writes in groups
and runs their callbacks once durable. The scheduler (``_scheduler``) keeps the durable
timers; ``_retention`` prunes ended runs; ``_unstarted`` records attempts a stop found
never started; ``_state`` is ``engine.state``'s durable key-value store.
"""
