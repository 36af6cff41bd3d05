"""Packaging from every artifact, built as a user's tooling builds it.

From a clean copy of the tree (the files git tracks or would track), in fresh venvs:
``python -m build`` makes an sdist and, from that sdist, a wheel; the wheel installs and runs
a workflow on the compiled evaluator. ``CC=/bin/false pip install`` of the sdist (no working
C compiler) succeeds on the pure-Python evaluator and says so in exactly one warning, and
``actorflow doctor`` reports which evaluator each installation loaded, and why.

Marker ``packaging`` (minutes): only ``make test-packaging`` runs it (CI does). It needs no
network: builds run without isolation on the setuptools, Cython and build of the running
venv (the ``packaging`` dependency group), and each fresh venv sees the running venv's
packages through a .pth file, the editable actorflow left out, so the only actorflow a fresh
venv can import is the one installed into it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
FALLBACK = "actorflow: the compiled graph evaluator was not built"
#: The dashboard's files a package must carry: the page, its modules, the vendored layout
#: library and its licence, the login page.
DASHBOARD = ("index.html", "app.js", "graph.js", "dagre.min.js", "dagre.LICENSE", "login.html")

STEPS = """
def double(ctx):
    return {"n": ctx.payload["n"] * 2}


def add_one(ctx):
    return {"n": ctx.last["n"] + 1}
"""

FLOW = """
import json
import sys

import actorflow as af
import pkg_steps
from actorflow import graph

engine = af.Engine(data_dir=sys.argv[1], workers=1)
engine.define("pkg").step("double", pkg_steps.double).step("add_one", pkg_steps.add_one)
with engine:
    result = engine.trigger("pkg", {"n": 20}).result(timeout=120)
print(json.dumps({
    "result": result,
    "implementation": graph.evaluator.IMPLEMENTATION,
    "reason": graph.NATIVE_REASON,
    "actorflow": af.__file__,
    "evaluator": graph.evaluator.__file__,
}))
"""


def run(
    args: list[str | Path],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )
    assert not check or out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would steer the venvs under test."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ACTORFLOW_") and k not in {"PYTHONPATH", "VIRTUAL_ENV", "CC"}
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [m for m in ("build", "setuptools", "Cython") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"{missing} not installed: `make test-packaging` installs them")
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def site_view(work: Path) -> Path:
    """This venv's packages, as symlinks, without actorflow's editable install."""
    view = work / "site-view"
    view.mkdir()
    for lib in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(lib).iterdir():
            if "actorflow" not in entry.name.lower() and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    return view


def fresh_venv(path: Path, site_view: Path) -> Path:
    """A venv of its own (no pip of its own: the view's pip installs into it); its python."""
    run([sys.executable, "-m", "venv", "--without-pip", path])
    python = path / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(purelib.stdout.strip()) / "_parent_venv.pth").write_text(f"{site_view}\n")
    return python


@pytest.fixture(scope="module")
def built(work: Path, site_view: Path) -> tuple[Path, Path, Path, str]:
    """A clean copy built by `python -m build` in a fresh venv: (venv python, sdist, wheel, log)."""
    src = work / "src"
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():  # a deleted file not yet committed is still listed
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    python = fresh_venv(work / "venv-compiled", site_view)
    dist = work / "dist"
    log = run([python, "-m", "build", "--no-isolation", "--outdir", dist, src], env=clean_env())
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return python, sdist, wheel, log.stdout + log.stderr


def run_flow(python: Path, tmp: Path) -> dict[str, Any]:
    app = tmp / "app"
    app.mkdir()
    (app / "pkg_steps.py").write_text(STEPS)
    (app / "flow.py").write_text(FLOW)
    env = clean_env(PYTHONPATH=str(app))  # the workers import pkg_steps too
    out = run([python, app / "flow.py", tmp / "store"], cwd=app, env=env)
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    doctor = [python.parent / "actorflow", "--data-dir", tmp / "store", "doctor", "--json"]
    # Only the evaluator's check matters here (a taken port would make another one warn).
    checks = json.loads(run(doctor, cwd=app, env=env, check=False).stdout)["checks"]
    (report["doctor"],) = [c for c in checks if c["name"] == "native evaluator"]
    return report


def test_the_sdist_carries_the_source_license_and_metadata(
    built: tuple[Path, Path, Path, str],
) -> None:
    _, sdist, _, log = built
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        pkg_info = tar.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/PKG-INFO")
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    assert {"native/_evaluator_c.pyx", "LICENSE", "setup.py", "pyproject.toml"} <= names
    assert {"actorflow/py.typed", "actorflow/graph/_evaluator_py.py"} <= names
    assert {f"actorflow/dashboard/static/{f}" for f in DASHBOARD} <= names
    # The C is generated at build time; no build product ships.
    assert not [n for n in names if n.endswith((".c", ".so"))]
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    # Our configuration draws no warning from setuptools (the TOML-table license did).
    assert "deprecated" not in log.lower(), log


def test_the_wheel_built_from_the_sdist_runs_on_the_compiled_evaluator(
    built: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    python, _, wheel, log = built
    assert FALLBACK not in log
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert any(n.startswith("actorflow/graph/_evaluator_c.") for n in names), names
    assert "actorflow-0.1.0.dist-info/licenses/LICENSE" in names
    assert {f"actorflow/dashboard/static/{f}" for f in DASHBOARD} <= set(names)
    pip = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir"]
    run([*pip, wheel], env=clean_env())
    report = run_flow(python, tmp_path)
    prefix = str(python.parent.parent)
    assert report["result"] == {"n": 41}
    assert report["implementation"] == "cython" and report["reason"] == ""
    assert report["actorflow"].startswith(prefix) and report["evaluator"].startswith(prefix)
    assert report["doctor"]["verdict"] == "ok"
    assert "compiled (Cython) evaluator is loaded" in report["doctor"]["detail"]


def test_without_a_compiler_the_install_falls_back_and_says_so_once(
    built: tuple[Path, Path, Path, str], site_view: Path, work: Path, tmp_path: Path
) -> None:
    _, sdist, _, _ = built
    with tarfile.open(sdist) as tar:
        tar.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    python = fresh_venv(work / "venv-pure", site_view)
    # `pip install DIR`, as the user in the issue ran it: recent pip (the Makefile upgrades it)
    # shows a backend's warnings for a local directory (for an archive, only with -v).
    pip = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir"]
    out = run([*pip, "--no-build-isolation", unpacked], env=clean_env(CC="/bin/false"))
    said = out.stdout + out.stderr
    lines = [line for line in said.splitlines() if FALLBACK in line]
    assert len(lines) == 1, said
    assert "/bin/false" in lines[0]  # the reason: the compiler that failed
    assert "deprecated" not in said.lower(), said
    report = run_flow(python, tmp_path)
    assert report["result"] == {"n": 41}
    assert report["implementation"] == "python"
    assert report["reason"] == "the compiled extension is not installed"
    assert report["actorflow"].startswith(str(python.parent.parent))
    assert report["doctor"]["verdict"] == "warn"
    assert "not installed" in report["doctor"]["detail"]
