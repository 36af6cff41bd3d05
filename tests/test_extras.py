"""A lean core: ``import actorflow`` loads no optional surface, each surface names its extra.

Every check runs a fresh interpreter. A missing extra is simulated by a ``sitecustomize`` on
``PYTHONPATH`` that puts ``None`` in ``sys.modules`` for the blocked names (an import of one
raises ``ModuleNotFoundError``, as if the package were not installed); worker processes
inherit it, since they start from the same environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path
from typing import Any

import pytest

from actorflow._extras import EXTRA_OF

ROOT = Path(__file__).resolve().parent.parent

#: What ``import actorflow`` must not import: HTTP servers and clients, the test harness and
#: test tools, the dashboard, tracing, the libraries of every extra, and what only a running
#: engine needs (asyncio, the worker pool, multiprocessing, croniter, psutil).
HEAVY = [
    "uvicorn", "uvloop", "httptools", "starlette", "anyio", "httpx", "h11", "actorflow.client",
    "pytest", "_pytest", "hypothesis",
    "actorflow.testing", "actorflow.dashboard", "actorflow.triggers._http",
    "actorflow.observability", "opentelemetry",
    "jsonschema", "prometheus_client", "rich", "distributed", "dask", "numpy",
    "zstandard", "cryptography", "croniter", "dateutil", "psutil",
    "asyncio", "ssl", "multiprocessing", "actorflow.code._driver", "actorflow.workers._pool",
    "actorflow.workers._main", "actorflow.runtime.dispatch._pool",
    "actorflow.runtime.dispatch._pool_workers", "actorflow.runtime.dispatch._pool_wire",
    "actorflow.runtime.supervision._shard", "actorflow.runtime.supervision._shard_writes",
]  # fmt: skip


def _env(tmp_path: Path, blocked: Sequence[str]) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor _name in {sorted(blocked)!r}:\n    sys.modules[_name] = None\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(tmp_path), str(ROOT)])
    return env


def _python(tmp_path: Path, code: str, blocked: Sequence[str] = (), timeout: float = 180) -> Any:
    """Run ``code`` in a fresh interpreter with ``blocked`` unimportable; its stdout's JSON."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=_env(tmp_path, blocked),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _loaded(modules: list[str], names: list[str]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def test_import_actorflow_loads_no_heavy_module(tmp_path: Path) -> None:
    modules = _python(
        tmp_path, "import actorflow, json, sys; print(json.dumps(sorted(sys.modules)))"
    )
    assert "actorflow.engine._engine" in modules  # the real thing was imported
    assert _loaded(modules, HEAVY) == []


def test_lazy_subpackages_still_work_as_attributes(tmp_path: Path) -> None:
    out = _python(
        tmp_path,
        """
        import json, sys
        import actorflow as af
        before = "actorflow.testing" in sys.modules, "actorflow.observability" in sys.modules
        names = [af.testing.WorkflowTest.__name__, af.observability.trace.__name__]
        after = "actorflow.testing" in sys.modules, "actorflow.observability" in sys.modules
        print(json.dumps([before, names, after, "testing" in dir(af)]))
        """,
    )
    assert out == [[False, False], ["WorkflowTest", "trace"], [True, True], True]


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    import actorflow as af

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        af.nope  # noqa: B018


# -- each surface without its extra ----------------------------------------------------------

_REPORT = """
import base64, json
import actorflow as af

def quick(ctx):
    return 1

def engine(**kw):
    e = af.Engine(store="memory", executor="inline", **kw)
    e.define("w").step("s", quick)
    return e

def provider():  # an SDK tracer provider, when OpenTelemetry is importable
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    return TracerProvider()

def report(fn):
    try:
        fn()
    except af.MissingExtra as exc:
        print(json.dumps({"extra": exc.extra, "name": exc.name, "feature": exc.feature,
                          "message": str(exc), "import_error": isinstance(exc, ImportError),
                          "config_error": isinstance(exc, af.ConfigError)}))
    else:
        print(json.dumps(None))
"""

SURFACES = {
    "asgi": ("serve", "starlette", "report(lambda: engine().asgi())"),
    "metrics": ("metrics", "prometheus_client", "with engine() as e:\n    report(e.metrics)"),
    "webhook schema": (
        "schemas",
        "jsonschema",
        "wf = af.Engine(store='memory').define('h').step('s', quick)\n"
        "wf.on_webhook('/h', schema={'type': 'object'})\n"
        "report(wf.build)",
    ),
    "progress bars": (
        "progress",
        "rich",
        "with engine() as e:\n    run = e.trigger('w', {})\n"
        "    report(lambda: run.result(timeout=60, progress=True))",
    ),
    "zstd codec": ("codecs", "zstandard", "report(lambda: engine(codecs='zstd'))"),
    "aesgcm codec": (
        "codecs",
        "cryptography",
        "key = 'k1:' + base64.b64encode(bytes(32)).decode()\n"
        "report(lambda: af.EngineConfig(codecs=('aesgcm',), codec_keys=(key,)))",
    ),
    "zst archive": (
        "codecs",
        "zstandard",
        "with engine() as e:\n    e.trigger('w', {}).result(timeout=60)\n"
        "    report(lambda: e.prune(older_than=0, archive='runs.jsonl.zst'))",
    ),
    "tracing": (
        "otel",
        "opentelemetry",
        "report(lambda: af.observability.trace(engine(), provider()))",
    ),
    "dask": ("dask", "distributed", "report(lambda: af.DaskExecutor('tcp://127.0.0.1:8786'))"),
    "client": ("client", "httpx", "report(lambda: af.Client('http://127.0.0.1:8080'))"),
    "async client": ("client", "httpx", "report(lambda: af.AsyncClient('http://127.0.0.1:8080'))"),
}


@pytest.mark.parametrize("surface", list(SURFACES))
def test_a_surface_without_its_extra_names_the_extra(tmp_path: Path, surface: str) -> None:
    extra, module, use = SURFACES[surface]
    got = _python(tmp_path, _REPORT + use, blocked=[module])
    assert got is not None, f"{surface}: no MissingExtra with {module} blocked"
    assert got["extra"] == extra
    assert got["name"].partition(".")[0] == module
    assert got["import_error"] and got["config_error"]
    assert f"pip install 'actorflow[{extra}]'" in got["message"]
    assert got["message"].startswith(got["feature"])


def test_the_same_surfaces_work_with_their_extras(tmp_path: Path) -> None:
    """The control: nothing blocked, no surface raises (so the blocker is what fails them)."""
    skip = {"dask"}  # a DaskExecutor needs no cluster to be made, but this one has none
    code = _REPORT + "\n".join(
        f"def case_{i}():\n" + textwrap.indent(use, "    ")
        for i, (_, _, use) in enumerate(SURFACES.values())
    )
    code += "\n" + "\n".join(f"case_{i}()" for i, name in enumerate(SURFACES) if name not in skip)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(tmp_path, []),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.split()] == [None] * (len(SURFACES) - 1)


def test_get_metrics_without_the_extra_is_a_501_and_the_app_serves_on(tmp_path: Path) -> None:
    out = _python(
        tmp_path,
        """
        import json, urllib.error, urllib.request
        import actorflow as af
        from tests.serving import serve

        engine = af.Engine(store="memory", executor="inline")
        with engine, serve(engine.asgi()) as url:
            try:
                urllib.request.urlopen(url + "/metrics", timeout=30)
                metrics = None
            except urllib.error.HTTPError as exc:
                metrics = [exc.code, json.loads(exc.read())]
            health = urllib.request.urlopen(url + "/healthz", timeout=30).status
        print(json.dumps([metrics, health]))
        """,
        blocked=["prometheus_client"],
    )
    (status, body), health = out
    assert status == 501 and body["error"] == "missing_extra"
    assert "pip install 'actorflow[metrics]'" in body["detail"]
    assert health == 200


def test_the_serve_command_without_the_extra_names_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "actorflow", "serve", "app:engine"],
        env=_env(tmp_path, ["uvicorn"]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "actorflow serve needs the 'serve' extra" in proc.stderr
    assert "pip install 'actorflow[serve]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_remote_commands_without_the_client_extra_name_it(tmp_path: Path) -> None:
    for args in (["trigger", "w", "{}"], ["cancel", "r-1"], ["wait", "r-1", "--url", "http://x"]):
        proc = subprocess.run(
            [sys.executable, "-m", "actorflow", *args],
            env=_env(tmp_path, ["httpx"]),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, (args, proc.stderr)
        assert f"actorflow {args[0]} needs the 'client' extra" in proc.stderr
        assert "pip install 'actorflow[client]'" in proc.stderr
        assert "Traceback" not in proc.stderr


# -- the core install is enough to run workflows durably --------------------------------------


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_distributions() -> set[str]:
    """actorflow and what its core dependencies need, transitively (no extras)."""
    core: set[str] = set()
    todo = ["actorflow"]
    while todo:
        name = _dist(todo.pop())
        if name in core:
            continue
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:  # required only where a marker applies (python < 3.11)
            continue
        core.add(name)
        for req in reqs:
            if "extra ==" not in req:
                todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return core


def _non_core_modules() -> list[str]:
    """Top-level modules of every installed distribution the core does not need."""
    core = _core_distributions() | {"pip", "setuptools", "wheel"}
    owners = packages_distributions()
    return sorted(
        m
        for m, dists in owners.items()
        if not {_dist(d) for d in dists} & core and m.isidentifier() and m != "sitecustomize"
    )


def test_the_core_runs_workflows_durably_with_nothing_else_importable(tmp_path: Path) -> None:
    blocked = _non_core_modules()
    assert {"starlette", "uvicorn", "jsonschema", "rich", "prometheus_client"} <= set(blocked)
    (tmp_path / "core_steps.py").write_text(
        textwrap.dedent(
            """
            import sys

            def double(ctx):
                # in the worker process: the blocker is on there too
                blocked = sys.modules.get("starlette", 1) is None
                return {"n": ctx.payload["n"] * 2, "blocked": blocked}

            def add(a, b):
                return a + b
            """
        )
    )
    define = """
        import json, sys
        import actorflow as af
        from core_steps import add, double

        engine = af.Engine(data_dir=sys.argv[1] if len(sys.argv) > 1 else "data", workers=1)
        (engine.define("graph").step("double", double).sleep("pause", "50ms")
            .wait_for_event("go", timeout="1h").step("again", double, retry=af.Retry(attempts=2)))
        engine.define("nightly").step("double", double).on_schedule("0 3 * * *", tz="Europe/Berlin")

        @engine.workflow("code")
        async def code(ctx, a, b):
            return await ctx.step("add", add, a, b)
        """
    first = _python(
        tmp_path,
        define
        + """
        import time

        def steps(run):
            return [(s.name, s.status.value) for s in engine.inspect(run.id).steps]

        with engine:
            code_result = engine.trigger("code", 20, 22, idempotency_key="c").result(timeout=60)
            run = engine.trigger("graph", {"n": 5}, idempotency_key="g")
            deadline = time.monotonic() + 60
            while ("go", "running") not in steps(run) and time.monotonic() < deadline:
                time.sleep(0.05)
            waiting = steps(run)
        loaded = sorted(m for m, mod in sys.modules.items()
                        if mod is not None and m.split(".")[0] in BLOCKED)
        print(json.dumps([code_result, run.id, waiting, loaded]))
        """.replace("BLOCKED", repr(set(blocked))),
        blocked=blocked,
    )
    code_result, run_id, waiting, loaded = first
    assert code_result == 42
    assert waiting == [
        ["double", "succeeded"], ["pause", "succeeded"], ["go", "running"], ["again", "pending"]
    ]  # fmt: skip
    assert loaded == []  # not one non-core module was imported
    # a new process on the same store: the waiting run resumes, the recorded steps stay
    second = _python(
        tmp_path,
        define
        + f"""
        with engine:
            engine.publish("go", {{}})
            out = engine.run({run_id!r}).result(timeout=60)
            steps = [(s.name, len(s.attempts)) for s in engine.inspect({run_id!r}).steps]
            again = engine.trigger("code", 1, 2, idempotency_key="c").result(timeout=60)
        print(json.dumps([out, steps, again]))
        """,
        blocked=blocked,
    )
    out, steps, again = second
    assert out == {"n": 10, "blocked": True}
    assert [name for name, _ in steps] == ["double", "pause", "go", "again"]
    assert steps[0] == ["double", 1]  # completed before the restart: not run again
    assert again == 42  # the same idempotency key is the same (recorded) run


# -- the extras in pyproject.toml -------------------------------------------------------------


def _extras() -> dict[str, set[str]]:
    """Each extra's distributions, self-references (``actorflow[x]``) expanded."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw: dict[str, list[str]] = table["optional-dependencies"]

    def expand(extra: str) -> set[str]:
        out: set[str] = set()
        for req in raw[extra]:
            m = re.match(r"actorflow\[([^\]]+)\]", req)
            if m:
                for inner in m.group(1).split(","):
                    out |= expand(inner.strip())
            else:
                out.add(_dist(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]))
        return out

    return {extra: expand(extra) for extra in raw} | {
        "": {_dist(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in table["dependencies"]}
    }


def test_each_optional_module_is_installed_by_its_extra_and_not_by_the_core() -> None:
    extras = _extras()
    owners = packages_distributions()
    for module, extra in EXTRA_OF.items():
        dists = {_dist(d) for d in owners[module]}
        assert dists & extras[extra], f"{module} ({dists}) is not in the {extra!r} extra"
        assert not dists & extras[""], f"{module} is a core dependency"
        assert dists & extras["all"], f"{module} is not in 'all'"


def test_the_test_extra_installs_every_extra() -> None:
    """``make test`` and ``make demo`` install ``.[test,lint]``: it must hold every surface."""
    extras = _extras()
    for extra in set(EXTRA_OF.values()):
        assert extras[extra] <= extras["test"], extra
    assert extras["all"] <= extras["test"]
