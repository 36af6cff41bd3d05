"""``python -m bench`` (``make bench``): run the suite, print a table, write JSON results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.suite import run_all

RESULTS = Path(__file__).parent / "results"


def _b4_rows(b4: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for n in ("1000", "10000", "100000"):
        f = b4[n]
        if f["cython_us"] is None:
            rows.append((f"B4 evaluator {int(n):,} items", "no compiled twin", "-", "-", ">= 10x"))
            continue
        rows.append((
            f"B4 evaluator {int(n):,} items", f"{f['cython_us']:.3f} us/event (Cython)",
            f"{f['python_us']:.3f} us/event (Python)", f"{f['speedup']:.1f}x faster", ">= 10x",
        ))  # fmt: skip
    return rows


def table(results: dict[str, Any]) -> str:
    """The results as a text table."""
    rows = _rows(results)
    head = ("benchmark", "actorflow", "baseline (same run)", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([line.format(*head), line.format(*("-" * w for w in widths))] +
                     [line.format(*r) for r in rows])  # fmt: skip


def _machine() -> dict[str, Any]:
    """What the figures were taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        import psutil

        memory = round(psutil.virtual_memory().total / (1 << 30), 1)
    except Exception:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def markdown(record: dict[str, Any]) -> str:
    """The docs page of a run's figures (``docs/benchmarks.md``)."""
    m = record["machine"]
    rows = _rows(record["results"])
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`) from its latest run; do not edit by hand.",
        "Every figure stands beside a baseline measured in the same run, on the same machine,",
        "so the ratio is what to compare across machines (treat each figure as +-30%).",
        "",
        f"- **Taken**: {record['when']}, in {record['seconds']} s",
        f"- **Machine**: {m.get('cpus')} CPUs ({m.get('cpu', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, {m.get('os', '?')}, Python {m.get('python')}",
        "",
        "| benchmark | actorflow | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(str(c) for c in r)} |" for r in rows),
        "",
        "What each one measures is in `bench/suite.py`'s docstring; `bench/results/` keeps the",
        "JSON of every run.",
        "",
        *_retention_section(),
        *_profile_section(),
    ]
    return "\n".join(out)


def _profile_section() -> list[str]:
    """The head's profile before and after the work on it (``python -m bench.profile``)."""
    records = {}
    for label in ("before", "after"):
        path = RESULTS / f"profile-{label}.json"
        if path.exists():
            records[label] = json.loads(path.read_text())
    if len(records) < 2:
        return []
    out = [
        "## Where the head's CPU goes (py-spy)",
        "",
        "`python -m bench.profile before|after`: a for_each of 10 ms sleeping items, durable "
        "(`sync`), on 2 workers (`few`: 1,000 items) and on 128 (`many`: 20,000); the engine "
        "process's CPU per item, each thread's share, and the top functions by samples (waits "
        "left out). `before`: "
        f"{records['before']['when']}; `after`: {records['after']['when']}. Samples count the "
        "time a thread is busy, a commit's fsync included (`LmdbStore.write` waits there for "
        "the disk, the GIL released): the CPU is in the thread tables. What it measures is "
        "in `bench/profile.py`'s docstring.",
        "",
    ]
    for shape in ("few", "many"):
        b, a = (records[k]["shapes"][shape] for k in ("before", "after"))
        out += [
            f"### {shape}: {a['items']:,} items on {a['workers']} workers",
            "",
            f"Head CPU per item: **{b['head_us_per_item']:.0f} us before, "
            f"{a['head_us_per_item']:.0f} us after** "
            f"(x{a['head_us_per_item'] / b['head_us_per_item']:.2f}).",
            "",
            "| thread | before (user + sys us/item) | after |",
            "|---|---|---|",
        ]
        names = list(dict.fromkeys([*b["threads"], *a["threads"]]))
        for name in names:
            cells = []
            for rec in (b, a):
                t = rec["threads"].get(name)
                cells.append("-" if t is None else f"{t['user_us']:.0f} + {t['sys_us']:.0f}")
            out.append(f"| {name} | {cells[0]} | {cells[1]} |")
        out.append("")
        if b.get("top") and a.get("top"):
            out += ["| top (own samples), before | % | after | % |", "|---|---|---|---|"]
            for (fb, pb), (fa, pa) in zip(b["top"]["own"][:10], a["top"]["own"][:10], strict=False):
                out.append(f"| `{fb}` | {pb} | `{fa}` | {pa} |")
            out.append("")
    return out


def _retention_section() -> list[str]:
    """R1 (``make bench-retention``, run on its own: it takes minutes), if it was run."""
    path = RESULTS / "retention-latest.json"
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    r1 = record["results"]["R1"]
    kept, grown, by_hand = r1["retention"], r1["baseline"], r1["prune_by_hand"]
    mib = 1 << 20
    rows = [
        f"| {a['runs']:,} | {a['data_mdb'] / mib:.1f} MiB | {b['data_mdb'] / mib:.1f} MiB "
        f"| {a['stored_runs']:,} |"
        for a, b in zip(kept["samples"], grown["samples"], strict=True)
    ]
    return [
        "## R1 retention: the store stops growing",
        "",
        f"`make bench-retention` ({record['when']}, {record['seconds']} s): {r1['what']}. "
        "What it measures is in `bench/retention.py`'s docstring.",
        "",
        "| runs done | data.mdb, retention "
        f"{kept['retention_s']:g} s | data.mdb, keep forever | runs kept (retention) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"- **Growth after the first window** (from {kept['after_first_window']['runs']:,} runs "
        f"to the end): x{kept['final_over_first']:.3f} with retention, "
        f"x{grown['final_over_first']:.3f} without (ratio {r1['ratio']:.3f}; target: "
        f"{r1['target']}).",
        f"- **Throughput**: {kept['runs_s']:.0f} runs/s with retention (pruning as fast as runs "
        f"finish), {grown['runs_s']:.0f} runs/s without; 1,000 runs from trigger to last "
        f"result: p50 {kept['chunk_ms']['p50']:.0f} ms / max {kept['chunk_ms']['max']:.0f} ms "
        f"with, p50 {grown['chunk_ms']['p50']:.0f} ms / max {grown['chunk_ms']['max']:.0f} ms "
        "without.",
        f"- **Pruning passes**: {kept['pruning']['passes']} passes pruned "
        f"{kept['pruning']['pruned']:,} runs; a batch's longest wait from hand-over to "
        f"durable (queued behind the hot path's commits): {kept['pruning']['longest_write_ms']:.0f}"
        " ms.",
        f"- **By hand**: the keep-forever store ({by_hand['runs']:,} runs) pruned in "
        f"{by_hand['seconds']} s ({by_hand['runs_s']:.0f} runs/s, {by_hand['batches']} synced "
        f"writes: p50 {by_hand['write_ms']['p50']:.1f} ms, p99 {by_hand['write_ms']['p99']:.1f}"
        f" ms, max {by_hand['write_ms']['max']:.1f} ms); data.mdb stays "
        f"{by_hand['data_mdb_after'] / mib:.0f} MiB (free pages, reused by later runs; "
        "`actorflow store compact` gives them back).",
        "",
    ]


def _b13_rows(b13: dict[str, Any] | None) -> list[tuple[str, str, str, str, str]]:
    if not b13:
        return []
    big, small = b13["big"], b13["small"]
    worst = max((k for k in small if k.endswith("_ms")), key=lambda k: big[k] / small[k])
    return [(
        f"B13 runs list, {b13['runs']:,} runs",
        f"{big['newest_ms']:.2f} ms/page (worst: {worst[:-3]} {big[worst]:.2f} ms)",
        f"{small['newest_ms']:.2f} ms ({b13['baseline_runs']:,} runs; "
        f"{small[worst]:.2f} ms)",
        f"{b13['ratio']:.2f}x", "<= 2x",
    )]  # fmt: skip


def _sharing_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    b14, b15, b16 = results.get("B14"), results.get("B15"), results.get("B16")
    if b14:
        rows.append((
            "B14 4 workers, one data_dir", f"{b14['four_req_s']:.0f} req/s "
            f"({'each run once' if b14['exactly_once'] else 'RUNS LOST OR DOUBLED'})",
            f"{b14['one_req_s']:.0f} req/s (1 process)", f"{b14['ratio']:.2f}x", ">= 0.8x",
        ))  # fmt: skip
    if b15:
        taken = b15["lock_taken_s"]
        rows.append((
            "B15 leader SIGKILLed", f"led again in {taken:.3f} s, longest gap "
            f"{b15['longest_gap_s']:.2f} s" if taken is not None else "no take-over",
            "-", f"{b15['lost']} lost, {b15['duplicated']} doubled", "<= 1 s, 0, 0",
        ))  # fmt: skip
    if b16:
        python = b16.get("python_collector_lag_ms")
        rows.append((
            "B16 loop lag, 10k async runs", f"{b16['lag_ms']:.0f} ms",
            f"{b16['floor_lag_ms']:.0f} ms (asyncio floor)"
            + (f", {python:.0f} ms (collector=python)" if python is not None else ""),
            f"{b16['lag_ms'] / max(b16['floor_lag_ms'], 1e-9):.1f}x floor", "<= 50 ms",
        ))  # fmt: skip
    return rows


def _i1_rows(i1: dict[str, Any] | None) -> list[tuple[str, str, str, str, str]]:
    if not i1:
        return []
    return [(
        "I1 import actorflow", f"{i1['import_ms']:.1f} ms ({i1['modules_after']} modules)",
        f"{i1['floor_ms']:.1f} ms (import json, lmdb)", f"+{i1['over_floor_ms']:.1f} ms",
        "<= 100 ms",
    )]  # fmt: skip


#: B17's efficiency targets by worker count, and B18's head CPU targets (us per item).
_B17_TARGETS = {"128": ">= 0.9", "256": ">= 0.6"}
_B18_ROWS = (
    ("unchunked_10ms", "unchunked 10 ms items", "<= 150 us"),
    ("chunked_1ms", "chunked 1 ms items", "<= 30 us"),
    ("map_10ms", "ctx.map of 10 ms items", "<= 1.2x for_each"),
    ("sequential", "sequential steps", "-"),
    ("webhook", "webhook-started runs", "-"),
)


def _scale_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    b17 = results.get("B17") or {}
    floor = b17.get("sleep_floor")
    if floor:
        rows.append((
            "B17 bare 10 ms sleeps (baseline)", f"{floor['us_per_call']:.0f} us CPU/call",
            f"{floor['procs']} processes x {floor['calls']} sleeps", "-", "-",
        ))  # fmt: skip
    for n, f in b17.items():
        if not isinstance(f, dict) or "items" not in f:
            continue  # its "what" and its baseline
        ideal = f["items"] * 0.010 / f["workers"]
        workers = f.get("workers_us_per_item")
        machine = (
            f", {workers:.0f} us workers' CPU/item (machine allows "
            f"{f['machine_bound_efficiency']:.2f})"
            if workers is not None
            else ""
        )
        rows.append((
            f"B17 {n} sleeping workers", f"{f['wall_s']:.2f} s, {f['head_us_per_item']:.0f} us "
            f"head CPU/item{machine}", f"{ideal:.2f} s (ideal, {f['items']:,} x 10 ms)",
            f"{f['efficiency']:.3f} efficiency", _B17_TARGETS.get(n, "-"),
        ))  # fmt: skip
    b18 = results.get("B18") or {}
    for key, label, target in _B18_ROWS:
        f = b18.get(key)
        if not f:
            continue
        base = "-"
        if key == "map_10ms" and "unchunked_10ms" in b18:
            base = f"{b18['unchunked_10ms']['head_us_per_item']:.0f} us (for_each)"
            ratio = f"{f['head_us_per_item'] / b18['unchunked_10ms']['head_us_per_item']:.2f}x"
        else:
            ratio = f"ceiling {f['ceiling_items_s']:,.0f}/s"
        rows.append((
            f"B18 head CPU, {label}", f"{f['head_us_per_item']:.0f} us/item", base, ratio, target,
        ))  # fmt: skip
    b19 = results.get("B19")
    if b19:
        big, small = b19["large"], b19["small"]
        rows.append((
            f"B19 one run of {big['items']:,} items", f"{big['items_s']:,.0f} items/s",
            f"{small['items_s']:,.0f} items/s ({small['items']:,} items)",
            f"{b19['linearity']:.2f}x", ">= 50,000 items/s",
        ))  # fmt: skip
        anon = "anon_bytes_per_item"
        rows.append((
            "B19 memory and store per item", f"{big.get(anon, 0):,.0f} B held "
            f"({big['rss_bytes_per_item']:,.0f} B RSS with the store's mapped pages), "
            f"{big['store_bytes_per_item']:,.0f} B on disk",
            f"{small.get(anon, 0):,.0f} B held, {small['store_bytes_per_item']:,.0f} B",
            "-", "<= 200 B held, <= 300 B",
        ))  # fmt: skip
    b20 = results.get("B20")
    if b20:
        base = b20["ms"]["unfiltered"]
        for name in ("equality", "equality_and_range", "range"):
            rows.append((
                f"B20 page of {b20['page']} at {b20['runs']:,} runs, {name.replace('_', ' ')}",
                f"{b20['ms'][name]:.2f} ms", f"{base:.2f} ms (unfiltered)",
                f"{b20['ratio'][name]:.2f}x", "<= 2x" if name == "equality" else "-",
            ))  # fmt: skip
    return rows


def _speed(ratio: float) -> str:
    """A speed-up as words: "2.02x faster", or "1.10x slower" below 1."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def _rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    b1, b2, b3, b5, b6, l1, l2 = (results[k] for k in ("B1", "B2", "B3", "B5", "B6", "L1", "L2"))
    rows = [
        ("B1 sequential, sync", f"{b1['sync_ms']:.3f} ms/step", f"{b1['baseline_ms']:.3f} ms/step",
         _speed(b1["speedup_sync"]), "<= 0.35 ms"),
        ("B1 sequential, fast", f"{b1['fast_ms']:.3f} ms/step", f"{b1['baseline_ms']:.3f} ms/step",
         _speed(b1["speedup_fast"]), "<= 0.10 ms"),
        ("B2 concurrent, sync", f"{b2['sync_wf_s']:.0f} wf/s", f"{b2['baseline_wf_s']:.0f} wf/s",
         f"{b2['ratio_sync']:.2f}x", ">= 1500 wf/s"),
        ("B2 concurrent, fast", f"{b2['fast_wf_s']:.0f} wf/s", f"{b2['baseline_wf_s']:.0f} wf/s",
         f"{b2['ratio_fast']:.2f}x", ">= 1500 wf/s"),
        ("B3 fan-out, the pool", f"{b3['floor_efficiency']:.3f}",
         f"{b3['pool_map_efficiency']:.3f} (Pool.map)", f"{b3['floor_ratio']:.3f}x", ">= 0.97x"),
        ("B3 fan-out, durable runs", f"{b3['engine_efficiency']:.3f}",
         f"{b3['pool_map_efficiency']:.3f} (Pool.map)", f"{b3['ratio']:.3f}x", ">= 0.97x"),
        *_b4_rows(results["B4"]),
        ("B5 durable for_each 10 ms", f"{b5['engine_efficiency']:.3f}",
         f"{b5['pool_map_efficiency']:.3f} (Pool.map)", f"{b5['ratio']:.3f}x", ">= 0.95x"),
        ("B6 100k trivial items", f"{b6['items_s']:.0f} items/s",
         f"{b6['pool_map_items_s']:.0f} items/s (Pool.map)", f"{b6['ratio']:.4f}x",
         ">= 20000 items/s"),
        ("B7 webhook triggers", f"{results['B7']['engine_req_s']:.0f} req/s",
         f"{results['B7']['bare_req_s']:.0f} req/s (bare endpoint)",
         f"{results['B7']['ratio']:.3f}x", ">= 2000 req/s"),
        ("B8 code workflow 200 steps", f"{results['B8']['code_ms']:.3f} ms/step",
         f"{results['B8']['graph_ms']:.3f} ms/step (graph, interleaved)",
         f"{results['B8']['ratio']:.3f}x", "<= 1.2x"),
        ("B9 replay 10k events", f"{results['B9']['replay_s']:.3f} s "
         f"({results['B9']['replay_from_store_s']:.3f} s from LMDB)",
         f"{results['B9']['decode_only_s']:.3f} s (decode only)",
         f"{results['B9']['replay_s'] / results['B9']['decode_only_s']:.1f}x", "< 0.5 s"),
        ("B10 50 MB hand-off", f"{results['B10']['shm_ms']:.1f} ms "
         f"({results['B10']['other_process_ms']:.1f} ms to the other worker)",
         f"{results['B10']['shm_off_ms']:.0f} ms (shm off), {results['B10']['pool_ms']:.0f} ms "
         "(Pool)", f"{results['B10']['speedup_vs_off']:.0f}x faster", "<= 25 ms, >= 10x"),
        ("B11 for_each 10k x 1 ms", f"{results['B11']['engine_efficiency']:.3f}",
         f"{results['B11']['pool_map_efficiency']:.3f} (Pool.map)",
         f"{results['B11']['ratio']:.3f}x", ">= 0.9x"),
        ("B12 idle engine, 2 workers", f"{results['B12']['rss_mb']:.0f} MB RSS "
         f"({results['B12']['uss_mb']:.0f} MB unique)", "-", "-", "< 150 MB"),
        ("B12 segments left", f"{results['B12']['left_after_stop']} after "
         f"{results['B12']['handoffs']} hand-offs, {results['B12']['left_after_restart']} "
         "after SIGKILL + restart", f"{results['B12']['left_by_sigkill']} right after the kill",
         "-", "0"),
        *_b13_rows(results.get("B13")),
        *_i1_rows(results.get("I1")),
        *_sharing_rows(results),
        *_scale_rows(results),
        ("L1 timeout 1s, reported", f"{l1['seconds']:.3f} s", "-", "-", "<= 1.1 s"),
        ("L2 crash -> retry", f"{l2['ms']:.1f} ms", "-", "-", "<= 50 ms"),
    ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite docs/benchmarks.md from latest.json"
    )
    args = parser.parse_args(argv)
    docs = Path(__file__).parent.parent / "docs" / "benchmarks.md"
    if args.render:
        record = json.loads((RESULTS / "latest.json").read_text())
        record["machine"] = {**_machine(), **record["machine"]}
        docs.write_text(markdown(record))
        print(f"written to {docs}")
        return
    started = time.time()
    results = run_all(quick=args.quick)
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.time() - started, 1),
        "machine": _machine(),
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"core-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(record, indent=2))
    if docs.parent.is_dir():
        docs.write_text(markdown(record))
    print(table(results))
    print(f"\nwritten to {path} and {docs}")


if __name__ == "__main__":
    main()
