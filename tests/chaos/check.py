"""The invariants of the chaos test, checked from the store and from the outside log."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import actorflow as af
from tests.chaos.workload import ATTEMPTS, DEFAULT_ATTEMPTS, KINDS, build, expected, read_log


@dataclass
class Findings:
    """What the checker counted, and every invariant violation it found."""

    runs: int = 0  # runs in the store (children included)
    keys: int = 0  # idempotency keys acknowledged
    executions: int = 0  # step executions in the outside log
    recorded_attempts: int = 0  # step attempts recorded in the store
    events: int = 0  # events published, signals sent, approvals resumed (acknowledged)
    interrupted: int = 0  # attempts the engine's death cut short (run again after restart)
    most_interrupted: int = 0  # the most interrupted attempts of one step (max_interruptions)
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _base(step: str) -> str:
    return step.rsplit("/", 1)[-1].split("[", 1)[0]


def check(data_dir: str, log: str) -> Findings:
    found = Findings()
    bad = found.violations.append
    lines = read_log(log)
    # -- acknowledged triggers and idempotency keys --------------------------------------
    by_key: dict[str, set[str]] = defaultdict(set)
    for p in lines:
        if p[0] == "T":
            by_key[p[2]].add(p[3])
        elif p[0] == "DUP":
            bad(f"key {p[2]} gave two runs in one generation: {p[3]} and {p[4]}")
        elif p[0] in ("P", "G", "A"):
            found.events += 1
    found.keys = len(by_key)
    for key, ids in by_key.items():
        if len(ids) != 1:
            bad(f"idempotency key {key} gave {len(ids)} runs: {sorted(ids)}")
    # -- executions (outside log) against what the store and lifecycle recorded -----------
    executed: dict[tuple[str, str, int], list[tuple[int, str]]] = defaultdict(list)
    succeeded_at: dict[tuple[str, str], int] = {}
    finished: dict[str, list[str]] = defaultdict(list)
    for pos, p in enumerate(lines):
        if p[0] == "X":
            found.executions += 1
            run_id, step, attempt, gen = p[2], p[3], int(p[4]), p[1]
            if (run_id, step) in succeeded_at:
                bad(
                    f"run {run_id} step {step}: executed again (attempt {attempt}, generation "
                    f"{gen}) after its success was durable (log line {succeeded_at[run_id, step]})"
                )
            executed[run_id, step, attempt].append((pos, gen))
        elif p[0] == "S" and p[5] == "succeeded":
            if (p[2], p[3]) in succeeded_at:
                bad(f"run {p[2]} step {p[3]}: a second durable success (attempt {p[4]})")
            succeeded_at.setdefault((p[2], p[3]), pos)
        elif p[0] == "F":
            finished[p[2]].append(p[3])
    for (run_id, step, attempt), seen in executed.items():
        gens = [g for _, g in seen]
        if len(gens) != len(set(gens)):
            bad(
                f"run {run_id} step {step} attempt {attempt}: executed twice in one engine "
                f"lifetime (generations {gens})"
            )
    for run_id, statuses in finished.items():
        if len(statuses) > 1:
            bad(f"run {run_id} finished {len(statuses)} times: {statuses}")
    # -- the store: every run final, exact results, steps recorded once --------------------
    engine = build(data_dir)
    runs = engine.runs(limit=1_000_000)
    found.runs = len(runs)
    by_id = {r.id: r for r in runs}
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        counts[r.workflow_id] += 1
        if not r.status.terminal:
            bad(f"run {r.id} ({r.workflow_id}) is not final: {r.status.value}")
    for key, ids in by_key.items():
        run_id = next(iter(ids))
        kind = KINDS[int(key[1:]) % len(KINDS)]
        if run_id not in by_id:
            bad(f"acknowledged run {run_id} (key {key}) is not in the store")
            continue
        details = engine.inspect(run_id)
        if details.status is not af.RunStatus.COMPLETED:
            bad(f"run {run_id} (key {key}, {kind}) ended {details.status.value}: {details.error}")
            continue
        if details.idempotency_key != key:
            bad(f"run {run_id} has key {details.idempotency_key!r}, acknowledged as {key!r}")
        output = engine.run(run_id).result(timeout=10)
        if output != expected(kind, key):
            bad(f"run {run_id} (key {key}) output {output!r} != {expected(kind, key)!r}")
    recorded: dict[tuple[str, str], dict[int, str]] = {}
    for r in runs:
        for step in engine.inspect(r.id).steps:
            ok = [a for a in step.attempts if a.status == "succeeded"]
            found.recorded_attempts += len(step.attempts)
            if len(ok) > 1:
                bad(f"run {r.id} step {step.path}: {len(ok)} succeeded attempts recorded")
            numbers = [a.attempt for a in step.attempts]
            if len(numbers) != len(set(numbers)):
                bad(f"run {r.id} step {step.path}: attempts recorded twice: {numbers}")
            recorded[r.id, step.path] = {a.attempt: a.status for a in step.attempts}
            # The retry policy bounds the attempts that ended on their own; an attempt the
            # engine's death interrupted is recorded as such and run again (at-least-once).
            own = [a for a in step.attempts if a.status != "interrupted"]
            allowed = ATTEMPTS.get(_base(step.path), DEFAULT_ATTEMPTS)
            if len(own) > allowed:
                bad(f"run {r.id} step {step.path}: {len(own)} attempts > the {allowed} allowed")
            found.interrupted += len(step.attempts) - len(own)
            found.most_interrupted = max(found.most_interrupted, len(step.attempts) - len(own))
    # Record before dispatch: every execution is an attempt the store recorded; and one that
    # was interrupted ran again only in a later engine lifetime.
    for (run_id, step, attempt), seen in executed.items():
        status = recorded.get((run_id, step), {}).get(attempt)
        if status is None:
            bad(f"run {run_id} step {step} attempt {attempt}: executed, never recorded")
        elif status == "interrupted":
            later = executed.get((run_id, step, attempt + 1))
            if later and int(later[0][1]) <= int(seen[-1][1]):
                bad(
                    f"run {run_id} step {step}: attempt {attempt} was interrupted but attempt "
                    f"{attempt + 1} ran in the same engine lifetime"
                )
    top = sum(counts[k] for k in set(KINDS))
    if top != len(by_key):
        bad(f"{top} top-level runs in the store for {len(by_key)} idempotency keys")
    with_child = sum(1 for k in by_key if KINDS[int(k[1:]) % len(KINDS)] in ("parent", "coded"))
    if counts["child"] != with_child:
        bad(f"{counts['child']} child runs for {with_child} parents (each starts exactly one)")
    return found
