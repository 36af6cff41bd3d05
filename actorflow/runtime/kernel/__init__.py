"""The actor kernel: what every actor of the runtime is built on.

- ``_inbox``: the actor base (a mailbox drained in batches, with activity counting);
- ``_promise``: a thread-safe promise (the reply of a message, a durable write's ack);
- ``_messages``: the messages, frozen: commands imperative (``StartRun``), events past
  tense (``AttemptSucceeded``, ``AttemptFailed``);
- ``_lifecycle``: lifecycle events for subscribers (``RunStarted``, ``StepAttempted``...);
- ``_counts``: the counters behind the metrics, each written by one actor's thread;
- ``_offload``: the threads the async API runs its blocking part on.

Nothing here knows workflows, runs or the store's contents.
"""
