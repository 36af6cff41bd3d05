"""Every Python block of the guides runs, as a reader would run it.

A page's ``python`` blocks run in order as one script, in its own process (steps defined in
it reach the workers as a script's functions do), in a temporary directory. A block that
cannot run here says why in an HTML comment on the line before it
(``<!-- not run: needs an OTLP collector -->``); the test lists those, and fails on a block
skipped without a reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# embedding.md's blocks are files of services, each served for real by
# tests/embedding/test_setups.py, not one script.
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name not in ("design.md", "embedding.md"))
_BLOCK = re.compile(r"(?:<!--\s*not run:(?P<why>[^>]*)-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def blocks(page: Path) -> tuple[list[str], list[str]]:
    """(code of the blocks that run, reasons of those that do not)."""
    run, skipped = [], []
    for m in _BLOCK.finditer(page.read_text()):
        if m.group("why") is not None:
            why = m.group("why").strip()
            assert why, f"{page.name}: a block is skipped without a reason"
            skipped.append(why)
        else:
            run.append(m.group("code"))
    return run, skipped


#: The pages with Python to run (the dashboard, benchmarks and comparison pages have none).
GUIDES = [p for p in PAGES if blocks(p)[0]]


@pytest.mark.parametrize("page", GUIDES, ids=[p.stem for p in GUIDES])
def test_the_guide_runs(page: Path, tmp_path: Path) -> None:
    code, _ = blocks(page)
    script = tmp_path / f"{page.stem}.py"
    script.write_text("\n\n".join(code))
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, f"{page.name}:\n{out.stdout}\n{out.stderr}"


def test_blocks_that_do_not_run_say_why() -> None:
    assert len(GUIDES) >= 9  # every feature guide has runnable examples
    skipped = {p.name: blocks(p)[1] for p in PAGES}
    # Every block runs today; an entry here must name what this machine does not have.
    assert {k: v for k, v in skipped.items() if v} == {}


def test_the_site_builds_offline_and_strict(tmp_path: Path) -> None:
    """``make docs``: every page, the API reference from docstrings, no broken reference."""
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    api = (tmp_path / "site" / "reference" / "actorflow" / "index.html").read_text()
    assert "Define a workflow; chain" in api  # Engine.define's docstring, rendered
    assert (tmp_path / "site" / "benchmarks" / "index.html").exists()


_LINK = re.compile(r"\]\(([^)\s#]+)")
_FILE = re.compile(r"`([\w.-]*/[\w./-]*\.(?:md|py|pyx|toml|yml|json|txt)|[\w.-]+\.md)`")


def test_pages_point_only_at_files_a_reader_has() -> None:
    """The README and the guides name files of the repository (or the package), never one
    outside it (the README once sent readers to a design document in another repository)."""
    missing = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        named = [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t)]
        named += _FILE.findall(text)
        for target in named:
            places = (
                page.parent / target,
                ROOT / target,
                DOCS / target,
                ROOT / "actorflow" / target,
            )
            if ".." in Path(target).parts or not any(p.exists() for p in places):
                missing.append(f"{page.name}: {target}")
    assert missing == []
