"""The figures of issue 24 ("Parity where users rely on it") alone, in one run.

``python -m bench.parity [--quick]``: B8 (a code workflow of 200 steps beside a graph
workflow's, runs interleaved on one engine), B18's ``ctx.map`` of 10 ms items beside a
graph for_each of them (head CPU per item, measured one after the other in this run), and
B20 (a filtered page at 100,000 runs beside an unfiltered one). Each figure is printed
beside its baseline and written to ``bench/results/parity-<time>.json``. ``make bench``
measures them too, with everything else.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import actorflow as af
from bench.code import code_sequential
from bench.scale import _code_map, _for_each
from bench.search import filtered_pages


def run(quick: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="actorflow-parity-"))

    def engine_for(name: str, **settings: Any) -> af.Engine:
        path = root / name
        shutil.rmtree(path, ignore_errors=True)
        settings.setdefault("workers", 2)
        return af.Engine(data_dir=path, **settings)

    try:
        b8 = code_sequential(engine_for, 200, 3 if quick else 7)
        items = 500 if quick else 1000
        for_each = _for_each(engine_for, "p-10ms", 2, items, 10.0, warmup=20)
        cmap = _code_map(engine_for, items)
        b20 = filtered_pages(engine_for, 20_000 if quick else 100_000, 5 if quick else 9)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "B8": {**b8, "ratio": b8["code_ms"] / b8["graph_ms"], "target_ratio": 1.2},
        "B18_map": {
            "map_head_us_per_item": cmap["head_us_per_item"],
            "for_each_head_us_per_item": for_each["head_us_per_item"],
            "ratio": cmap["head_us_per_item"] / for_each["head_us_per_item"],
            "target_ratio": 1.0,
        },
        "B20": {**b20, "target_ratio": 2.0},
    }


def main() -> None:
    quick = "--quick" in sys.argv
    results = run(quick)
    out = Path(__file__).parent / "results" / f"parity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    b8, b18, b20 = results["B8"], results["B18_map"], results["B20"]
    print(f"B8  code {b8['code_ms']:.3f} ms/step vs graph {b8['graph_ms']:.3f} "
          f"(interleaved): {b8['ratio']:.2f}x (target <= 1.2x)")  # fmt: skip
    print(f"B18 ctx.map {b18['map_head_us_per_item']:.0f} us/item vs for_each "
          f"{b18['for_each_head_us_per_item']:.0f}: {b18['ratio']:.2f}x (<= 1.0x)")  # fmt: skip
    for name in ("equality", "equality_and_range", "range"):
        print(f"B20 {name}: {b20['ms'][name]:.2f} ms vs unfiltered {b20['ms']['unfiltered']:.2f}"
              f" at {b20['runs']:,} runs: {b20['ratio'][name]:.2f}x")  # fmt: skip
    print(f"written to {out}")


if __name__ == "__main__":
    main()
