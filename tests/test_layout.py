"""docs/design.md's module map matches the tree, and the tree keeps rooms a newcomer can hold.

The map is the first thing a newcomer reads; a package or module that it does not name (or
names but that no longer exists) makes it wrong in a way nobody notices. The sizes are the
layout standard design.md states ("Rooms a reader can hold": modules under about 600 lines,
classes under about 400).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "actorflow"
MAX_MODULE_LINES = 650  # "about 600": a module past this is due for a split
MAX_CLASS_LINES = 420  # "about 400"


def module_map() -> str:
    """The code block of design.md that starts with ``pyproject.toml``."""
    text = (ROOT / "docs" / "design.md").read_text()
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        if block.startswith("pyproject.toml"):
            return str(block)
    raise AssertionError("docs/design.md has no module map (a block starting pyproject.toml)")


def entries(folder: Path) -> list[str]:
    """The packages and modules directly in ``folder``, as the map writes them."""
    names = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("__pycache__") or child.name == "py.typed":
            continue
        if child.is_dir():
            names.append(child.name + "/")
        elif child.suffix == ".py":
            names.append(child.name)
    return names


def mentioned(text: str, name: str) -> bool:
    stem = name.removesuffix("/").removesuffix(".py")
    return re.search(rf"(?<![\w.]){re.escape(stem)}(?:/|\.py|\b)", text) is not None


def test_the_module_map_names_every_package_and_module_of_the_top_two_layers() -> None:
    text = module_map()
    missing = [n for n in entries(PACKAGE) if not mentioned(text, n)]
    missing += [f"runtime/{n}" for n in entries(PACKAGE / "runtime") if not mentioned(text, n)]
    for sub in ("runtime/dispatch", "runtime/supervision", "store", "errors", "engine"):
        for name in entries(PACKAGE / sub):
            if name.endswith(".py") and name != "__init__.py" and not mentioned(text, name):
                missing.append(f"{sub}/{name}")
    assert not missing, f"docs/design.md's module map does not name: {missing}"


def test_every_package_the_map_names_exists() -> None:
    text = module_map()
    named = set(re.findall(r"^\s{2}(\w+)/\s", text, re.M))  # "  cli/   the actorflow command"
    named |= {f"runtime/{n}" for n in re.findall(r"^\s{4}(\w+)/\s", text, re.M)}
    assert named, "the map's package lines were not found"
    gone = sorted(n for n in named if not (PACKAGE / n).is_dir())
    assert not gone, f"docs/design.md's module map names packages that do not exist: {gone}"


def test_modules_and_classes_stay_a_size_a_reader_can_hold() -> None:
    big_modules, big_classes = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        where = path.relative_to(ROOT)
        if source.count("\n") > MAX_MODULE_LINES:
            big_modules.append(f"{where} ({source.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    big_classes.append(f"{where}:{node.name} ({size} lines)")
    assert not big_modules, f"modules past {MAX_MODULE_LINES} lines: {big_modules}"
    assert not big_classes, f"classes past {MAX_CLASS_LINES} lines: {big_classes}"
