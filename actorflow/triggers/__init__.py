"""Triggers: what starts runs besides ``engine.trigger``.

- ``_cron``: cron and interval slot arithmetic, DST-correct in any IANA time zone.
- ``_schedules``: fires schedules from the engine's durable timers, persisting each slot.
- ``_http``: the ASGI app (webhooks, REST API, health) served by ``actorflow serve``.
"""
