"""Cron slots in a time zone, correct across daylight-saving changes.

croniter walks wall-clock times; this module maps each wall-clock slot to real instants
(PEP 495 folds) with these rules, which are Vixie cron's:

- a wall-clock time that does not exist (skipped by a spring-forward change) fires once, read
  with the offset before the change (02:30 in a 02:00-03:00 gap fires at 03:30 new time);
- a wall-clock time that occurs twice (a fall-back change) fires once, at its first
  occurrence, unless the hour field is a wildcard (``*``, ``*/2``): such a job runs every real
  hour, so it fires at both.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["next_fire", "slots_between"]

# Wall-clock offsets of a zone differ by less than this across any change (DST: 1 h; the
# largest historical jumps are under a day, and cron is about the minutes here).
_SPAN = timedelta(hours=3)


def next_fire(expr: str, tz: str, after: float) -> float:
    """The first instant (seconds since the epoch) strictly after ``after`` that ``expr`` fires."""
    # Imported here: croniter (with dateutil) costs more to import than most of actorflow,
    # and only engines with cron schedules use it (``import actorflow`` stays lean).
    from croniter import croniter

    zone = ZoneInfo(tz)
    wild_hour = expr.split()[1].startswith("*")
    start = datetime.fromtimestamp(after, zone).replace(tzinfo=None) - _SPAN
    it = croniter(expr, start)
    best: float | None = None
    best_wall: datetime | None = None
    for _ in range(100_000):
        naive: datetime = it.get_next(datetime)
        if best_wall is not None and naive > best_wall + _SPAN:
            break  # no later wall time can map to an earlier instant
        for t in _instants(naive, zone, wild_hour):
            if t > after and (best is None or t < best):
                best = t
                best_wall = naive
    if best is None:
        raise ValueError(f"cron {expr!r} never fires after {after}")
    return best


def slots_between(expr: str | None, interval: float | None, tz: str, anchor: float,
                  after: float, until: float, limit: int) -> list[float]:  # fmt: skip
    """Slots in ``(after, until]``, oldest first, at most ``limit`` (the latest ones kept).

    Interval schedules have slots at ``anchor + k * interval``.
    """
    out: list[float] = []
    t = after
    while True:
        t = next_interval(interval, anchor, t) if interval else next_fire(expr or "", tz, t)
        if t > until:
            return out
        out.append(t)
        if len(out) > limit:
            del out[0]


def next_interval(interval: float, anchor: float, after: float) -> float:
    """The first slot ``anchor + k * interval`` strictly after ``after``."""
    if after < anchor:
        return anchor
    k = int((after - anchor) // interval) + 1
    return anchor + k * interval


def _instants(naive: datetime, zone: ZoneInfo, wild_hour: bool) -> list[float]:
    t0 = naive.replace(tzinfo=zone, fold=0).timestamp()
    t1 = naive.replace(tzinfo=zone, fold=1).timestamp()
    if t0 == t1:
        return [t0]
    if t0 < t1:  # occurs twice
        return [t0, t1] if wild_hour else [t0]
    return [t0]  # does not exist: fold 0 reads it with the offset before the change
