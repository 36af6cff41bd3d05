"""What ``actorflow tune`` concludes from its points, and how it shows and keeps it.

- :class:`Point`: one setting and what was measured there (a :class:`Sample` per round);
- :func:`recommend`: per knob, the value with the most runs per second, if it beats the
  base by more than the noise (both points' spread between rounds); else the base value.
  ``durability`` is measured and shown, never changed (:data:`SHOWN_ONLY`).
- :func:`settle`: the recommended settings were measured together as a last point; if that
  point falls short of the best single point beyond noise (knobs that do not add up), the
  best single point's settings are kept instead.
- :func:`finish`: the table (best and within-noise points marked), the ``[tool.actorflow]``
  table written to pyproject.toml (through tomlkit, which keeps the rest of the file as it
  was) or printed, the plot, or all of it as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actorflow._extras import require
from actorflow.cli._output import Column, Exit, Output, UsageError

__all__ = [
    "KNOBS",
    "SHOWN_ONLY",
    "Point",
    "Sample",
    "finish",
    "plot",
    "plot_kind",
    "progress",
    "recommend",
    "settle",
    "toml_table",
    "verdicts",
]


#: The knobs tune sweeps, and how a value given on the command line is read.
KNOBS: dict[str, Callable[[str], Any]] = {
    "workers": int,
    "prefetch": int,
    "chunk_budget": float,
    "durability": str,
    "shm_threshold": int,
    "shards": int,
}


@dataclass(frozen=True)
class Sample:
    """One round of runs at one setting."""

    runs_per_s: float
    items_per_s: float
    head_us_per_item: float


@dataclass(frozen=True)
class Point:
    """One setting and what was measured there.

    Attributes:
        knob: the knob this point moves (``""`` for the base, ``"recommended"`` for the last).
        settings: every swept knob's value at this point.
        samples: one per round.
        latencies: seconds from dispatch to end of every measured step.
        items: steps per run.
        error: why this setting could not be measured (its runs failed, it timed out).
    """

    knob: str
    settings: dict[str, Any]
    samples: tuple[Sample, ...] = ()
    latencies: tuple[float, ...] = ()
    items: int = 0
    error: str | None = None

    @property
    def label(self) -> str:
        if not self.knob:
            return "base"
        if self.knob == "recommended":
            return "recommended"
        return f"{self.knob}={self.settings[self.knob]}"

    def mean(self, what: str = "runs_per_s") -> float:
        values = [getattr(s, what) for s in self.samples]
        return statistics.fmean(values) if values else 0.0

    def spread(self, what: str = "runs_per_s") -> float:
        """The standard deviation between rounds (0 with one round)."""
        values = [getattr(s, what) for s in self.samples]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def latency_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0-1) of step latency, in milliseconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "knob": self.knob or None,
            "settings": self.settings,
            "runs_per_s": self.mean(),
            "runs_per_s_spread": self.spread(),
            "items_per_s": self.mean("items_per_s"),
            "head_us_per_item": self.mean("head_us_per_item"),
            "p50_ms": self.latency_ms(0.5),
            "p99_ms": self.latency_ms(0.99),
            "items_per_run": self.items,
            "rounds": len(self.samples),
            "error": self.error,
        }


def _beats(a: Point, b: Point) -> bool:
    """``a`` has more runs per second than ``b``, by more than their noise."""
    return a.mean() - a.spread() > b.mean() + b.spread()


def _near(a: Point, best: Point) -> bool:
    return a.mean() + a.spread() >= best.mean() - best.spread()


#: Knobs measured and shown but never changed by a recommendation: ``durability="fast"``
#: trades what a power cut may lose for speed, a choice tune does not make for anyone.
SHOWN_ONLY = frozenset({"durability"})


def recommend(points: Sequence[Point], base: dict[str, Any]) -> dict[str, Any]:
    """The base settings, with each knob moved where that clearly helped on its own."""
    measured = [p for p in points if not p.error]
    home = next((p for p in measured if not p.knob), None)
    chosen = dict(base)
    for name in KNOBS:
        if name in SHOWN_ONLY:
            continue
        moved = [p for p in measured if p.knob == name]
        if not moved:
            continue
        best = max(moved, key=lambda p: p.mean())
        if home is None or _beats(best, home):
            chosen[name] = best.settings[name]
    return chosen


def settle(points: Sequence[Point], base: dict[str, Any]) -> dict[str, Any]:
    """The settings to keep: the recommended ones, unless together they fell short."""
    measured = [p for p in points if not p.error]
    final = next((p for p in measured if p.knob == "recommended"), None)
    singles = [p for p in measured if p.knob != "recommended"]
    # (a point that moves a knob tune only shows is never kept)
    singles = [p for p in singles if p.knob not in SHOWN_ONLY]
    if not singles:
        return dict(base)
    best = max(singles, key=lambda p: p.mean())
    if final is not None and not _beats(best, final):
        return dict(final.settings)
    home = next((p for p in singles if not p.knob), None)
    return dict(best.settings) if home is None or _beats(best, home) else dict(base)


def verdicts(points: Sequence[Point]) -> list[str]:
    """``best``, ``near best`` (within noise of it), ``failed`` or ``""`` for each point."""
    measured = [p for p in points if not p.error]
    if not measured:
        return ["failed"] * len(points)
    best = max(measured, key=lambda p: p.mean())
    out = []
    for p in points:
        if p.error:
            out.append("failed")
        elif p is best:
            out.append("best")
        else:
            out.append("near best" if _near(p, best) else "")
    return out


def toml_table(settings: dict[str, Any]) -> str:
    """``settings`` as the text of a ``[tool.actorflow]`` table."""
    tomlkit = require("tomlkit", "actorflow tune")
    table = tomlkit.table()
    for name in KNOBS:
        table[name] = settings[name]
    doc = tomlkit.document()
    doc["tool"] = tomlkit.table(is_super_table=True)
    doc["tool"]["actorflow"] = table
    return str(tomlkit.dumps(doc))


def write_pyproject(path: Path, settings: dict[str, Any]) -> None:
    """Set the knobs in ``path``'s ``[tool.actorflow]`` (created if missing), keeping the rest."""
    tomlkit = require("tomlkit", "actorflow tune")
    try:
        doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    except tomlkit.exceptions.ParseError as exc:
        raise UsageError(f"--pyproject: {path} is not valid TOML ({exc})") from None
    if "tool" not in doc:
        doc["tool"] = tomlkit.table(is_super_table=True)
    tool = doc["tool"]
    if "actorflow" not in tool:
        tool["actorflow"] = tomlkit.table()
    for name in KNOBS:
        tool["actorflow"][name] = settings[name]
    path.write_text(tomlkit.dumps(doc))


@contextlib.contextmanager
def progress(out: Output, points: int, steps_per_point: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr (when it is a terminal); yields the function that advances it."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    except ImportError:
        yield lambda: None
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda: None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("tuning", total=points * steps_per_point)
        yield lambda: bar.advance(task)


def _fmt(value: float | None, digits: int = 1) -> str | None:
    return None if value is None else f"{value:,.{digits}f}"


def _rows(points: Sequence[Point]) -> list[list[Any]]:
    rows = []
    for p, verdict in zip(points, verdicts(points), strict=True):
        if p.error:
            rows.append([p.label, None, None, None, None, None, "failed", p.error])
            continue
        rows.append(
            [
                p.label,
                f"{p.mean():,.2f} ± {p.spread():,.2f}",
                _fmt(p.mean("items_per_s")),
                _fmt(p.latency_ms(0.5), 2),
                _fmt(p.latency_ms(0.99), 2),
                _fmt(p.mean("head_us_per_item"), 0),
                verdict,
                None,
            ]
        )
    return rows


_COLUMNS = [
    Column("setting"),
    Column("runs/s", right=True),
    Column("items/s", right=True),
    Column("p50 ms", right=True),
    Column("p99 ms", right=True),
    Column("head us/item", right=True),
    Column("verdict", status=True),
    Column("error", wrap=True),
]


def plot_kind(path: Path) -> str:
    """``path``'s suffix, if ``--plot`` can write it (checked before anything is measured)."""
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".html"):
        raise UsageError(f"--plot: expected a .html, .svg or .png file, got {path.name!r}")
    return suffix


def plot(path: Path, workflow: str, points: Sequence[Point]) -> None:
    """Runs per second against each swept knob, as ``.png``, ``.svg`` or ``.html`` (+ table)."""
    suffix = plot_kind(path)
    require("matplotlib", "actorflow tune --plot")
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    home = next((p for p in points if not p.knob and not p.error), None)
    knobs = [k for k in KNOBS if any(p.knob == k and not p.error for p in points)]
    cols = max(1, min(3, len(knobs)))
    rows = max(1, -(-len(knobs) // cols))
    fig, grid = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(knobs) :]:
        ax.set_visible(False)
    for ax, name in zip(axes, knobs, strict=False):
        moved = [p for p in points if p.knob == name and not p.error]
        if home is not None:
            moved.append(home)
        moved.sort(key=lambda p: (isinstance(p.settings[name], str), p.settings[name]))
        xs = [str(p.settings[name]) for p in moved]
        ax.errorbar(xs, [p.mean() for p in moved], yerr=[p.spread() for p in moved],
                    marker="o", capsize=3)  # fmt: skip
        if home is not None:  # the app's own setting: a dashed line and a hollow mark
            ax.axhline(home.mean(), color="grey", linewidth=0.8, linestyle="--")
            ax.plot([str(home.settings[name])], [home.mean()], "o", mfc="white", color="C0")
        ax.set_title(name)
        ax.set_ylabel("runs/s")
        ax.set_ylim(bottom=0)
    fig.suptitle(f"actorflow tune: {workflow}")
    fig.tight_layout()
    if suffix != ".html":
        fig.savefig(path)
        plt.close(fig)
        return
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    plt.close(fig)
    head = "".join(f"<th>{html.escape(c.name)}</th>" for c in _COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('-' if v is None else str(v))}</td>" for v in row)
        + "</tr>"
        for row in _rows(points)
    )
    path.write_text(
        "<!doctype html><meta charset='utf-8'>"
        f"<title>actorflow tune: {html.escape(workflow)}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
        f"<h1>actorflow tune: {html.escape(workflow)}</h1>{svg.getvalue()}"
        f"<table><tr>{head}</tr>{body}</table>"
    )


def finish(
    out: Output,
    args: argparse.Namespace,
    points: Sequence[Point],
    base: dict[str, Any],
    chosen: dict[str, Any],
) -> int:
    """Show the points and the settings kept; write them unless ``--dry-run``."""
    written = None
    if not args.dry_run:
        written = Path(args.pyproject)
        write_pyproject(written, chosen)
    if args.plot:
        plot(Path(args.plot), args.workflow, points)
    if out.as_json:
        out.json(
            {
                "workflow": args.workflow,
                "points": [
                    {**p.as_dict(), "verdict": v}
                    for p, v in zip(points, verdicts(points), strict=True)
                ],
                "base": base,
                "recommended": chosen,
                "written": None if written is None else str(written),
                "plot": args.plot,
            }
        )
        return Exit.OK
    out.table(_COLUMNS, _rows(points))
    out.line()
    out.line(toml_table(chosen).rstrip())
    if written is not None:
        out.note(
            f"written to {written} [tool.actorflow] (arguments the app passes to Engine() "
            "and ACTORFLOW_* variables still take precedence over it)"
        )
    if args.plot:
        out.note(f"plot written to {args.plot}")
    return Exit.OK
