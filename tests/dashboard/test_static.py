"""The dashboard's static files, without a browser: every module the page imports is shipped,
the vendored layout library is the unmodified release its licence file names, and a package
carries them all (``pyproject.toml``'s package data; tests/test_packaging.py builds one)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

from actorflow.dashboard._routes import STATIC

ROOT = Path(__file__).resolve().parents[2]

#: Debian's node-dagre-layout 0.8.8+really0.8.5+dfsg-6, dist/dagre.min.js.
DAGRE_SHA256 = "ca5f85641aa02af159fd8ac7b8e36465bb38ad2bf9fb57b34efd6e127387c0d3"


def test_every_module_the_page_loads_is_shipped() -> None:
    index = (STATIC / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="static/([^"]+)"', index)
    assert {"app.js", "dagre.min.js", "style.css"} <= set(loaded)
    seen: set[str] = set()
    todo = [name for name in loaded if name.endswith(".js")]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = (STATIC / name).read_text()  # a missing module fails here
        todo += re.findall(r'from "\./([\w.]+\.js)"', text)
    assert {"app.js", "lib.js", "runs.js", "run.js", "graph.js", "timeline.js"} <= seen
    shipped = {p.name for p in STATIC.iterdir()}
    assert seen <= shipped
    orphans = {n for n in shipped if n.endswith(".js")} - seen
    assert not orphans, f"modules nothing loads: {orphans}"


def test_the_vendored_layout_library_is_unmodified_and_licensed() -> None:
    assert hashlib.sha256((STATIC / "dagre.min.js").read_bytes()).hexdigest() == DAGRE_SHA256
    licence = (STATIC / "dagre.LICENSE").read_text()
    assert "dagre 0.8.5" in licence and "Copyright (c) 2012-2014 Chris Pettitt" in licence
    assert "graphlib" in licence and "lodash" in licence
    assert "Permission is hereby granted, free of charge" in licence


def test_the_package_data_takes_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["actorflow"]
    assert "dashboard/static/*" in patterns
    assert all(p.is_file() for p in STATIC.iterdir())  # flat: the pattern takes them all
