"""The command line as a Unix tool: real processes, real pipes, a real terminal (a pty) and a
real server. A closed pipe ends quietly with 141, ``--json`` output (errors too) is JSON,
tables are tab-separated off a terminal and rich on one, ``serve --token`` guards the API,
and ``actorflow --help`` lists the exit statuses."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import actorflow as af
from actorflow.cli._output import Exit
from tests import steps
from tests.conftest import wait_until
from tests.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
for _name in (
    "NO_COLOR",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "ACTORFLOW_TOKEN",
    "ACTORFLOW_API_TOKEN",
):
    ENV.pop(_name, None)
CLI = [sys.executable, "-m", "actorflow"]
#: An SGR sequence that sets a colour (30-37, 38;..., 90-97, and backgrounds), not bold alone.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env={**ENV, **env}
    )


@pytest.fixture
def store(make_engine: object, data_dir: Path) -> Iterator[tuple[af.Engine, list[str], str]]:
    """A running engine with 3 finished runs, and one run held at a gate (not yet open)."""
    engine = make_engine(workers=1)  # type: ignore[operator]
    engine.define("ok").step("one", steps.add_one)
    engine.define("gated").step("wait", steps.wait_for_marker)
    gate = data_dir.parent / "gate"
    with engine:
        done = [engine.trigger("ok", {"n": i}).id for i in range(3)]
        for run_id in done:
            engine.run(run_id).result(timeout=30)
        stuck = engine.trigger("gated", {"marker": str(gate)}).id
        yield engine, done, stuck
        gate.touch()


def _closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose reader has already gone: every write fails (EPIPE)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [*CLI, *args], stdout=write, stderr=subprocess.PIPE, timeout=120, cwd=ROOT, env=ENV
        )
    finally:
        os.close(write)


def test_a_closed_pipe_ends_quietly_with_141(
    store: tuple[af.Engine, list[str], str], data_dir: Path
) -> None:
    _, done, _ = store
    d = str(data_dir)
    for args in (
        ["--data-dir", d, "runs"],
        ["--data-dir", d, "runs", "--json"],
        ["--data-dir", d, "show", done[0]],
        ["--data-dir", d, "store", "check"],
        ["--help"],
    ):
        out = _closed_pipe(*args)
        assert out.returncode == Exit.CLOSED_PIPE == 141, (args, out.stderr)
        assert out.stderr == b"", (args, out.stderr)  # no traceback, no "Exception ignored"


def test_runs_into_head_through_a_shell_pipeline(
    make_engine: object, data_dir: Path, tmp_path: Path
) -> None:
    # Far more output than a pipe holds (64 KiB), so the writer is still writing when
    # `head -1` exits: whatever the timing, its next write meets a closed pipe.
    engine = make_engine(workers=1)  # type: ignore[operator]
    engine.define("fan").for_each("items", lambda ctx: list(range(8000)), steps.tiny_double)
    with engine:
        run_id = engine.trigger("fan", {}).id
        engine.run(run_id).result(timeout=120)
    script = '"$@" | head -1; echo "status ${PIPESTATUS[0]}"'  # the writer's own status
    for args, first in (
        (["show", run_id, "--items", "100000"], "run\t" + run_id),
        (["runs", "--limit", "0"], "RUN\tWORKFLOW\tSTATUS\tCREATED\tDURATION"),
    ):
        out = subprocess.run(
            ["bash", "-c", script, "sh", *CLI, "--data-dir", str(data_dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=ENV,
        )
        lines = out.stdout.splitlines()
        assert lines[0] == first, out.stdout[:500]
        assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
        if args[0] == "show":  # ~400 KiB: the pipe closed under it
            assert lines[-1] == "status 141", out.stdout[-500:]
        else:  # a short listing may fit in the pipe before head exits: 0, or 141 if not
            assert lines[-1] in ("status 0", "status 141"), out.stdout[-500:]


def test_json_everywhere_errors_included(
    store: tuple[af.Engine, list[str], str], data_dir: Path, tmp_path: Path
) -> None:
    _, done, stuck = store
    d = ["--data-dir", str(data_dir)]

    def as_json(*args: str, code: int = 0) -> object:
        out = run(*args)
        assert out.returncode == code, (args, out.stdout, out.stderr)
        return json.loads(out.stdout)

    listed = as_json(*d, "runs", "--json")
    assert isinstance(listed, list) and {r["id"] for r in listed} == {*done, stuck}
    assert as_json(*d, "show", done[0], "--json")["status"] == "completed"  # type: ignore[index]
    finished = as_json(*d, "wait", done[1], "--json", "--no-progress")
    assert finished["status"] == "completed" and finished["timed_out"] is False  # type: ignore[index]
    checks = as_json(*d, "doctor", "--json", "--port", str(free_port()))
    assert checks["ok"] is True  # type: ignore[index]
    assert as_json(*d, "store", "check", "--json")["ok"] is True  # type: ignore[index]
    copy = as_json(*d, "store", "backup", str(tmp_path / "copy"), "--json")
    assert copy["path"] == str(tmp_path / "copy")  # type: ignore[index]
    pruned = as_json(*d, "store", "prune", "--older-than", "1d", "--dry-run", "--json")
    assert pruned["dry_run"] is True and pruned["runs"] == 0  # type: ignore[index]

    # wait at --timeout: the run as it is, said to have timed out, and exit 3
    waited = as_json(*d, "wait", stuck, "--json", "--timeout", "0.2", code=Exit.TIMEOUT)
    assert waited["id"] == stuck and waited["status"] == "running"  # type: ignore[index]
    assert waited["timed_out"] is True  # type: ignore[index]

    # errors: one JSON object on stdout, nothing on stderr
    for args, code, error in (
        ([*d, "show", "ffffffff", "--json"], Exit.ERROR, "run_not_found"),
        ([*d, "runs", "--limit", "x", "--json"], Exit.USAGE, "usage"),
        ([*d, "show", done[0], "--items", "-1", "--json"], Exit.USAGE, "usage"),
        ([*d, "demo", "--json"], Exit.USAGE, "usage"),  # no --json there: still a JSON error
        (["--data-dir", str(tmp_path / "none"), "store", "check", "--json"], 1, "store_error"),
        ([*d, "store", "compact", "--json"], Exit.ERROR, "store_error"),  # the engine holds it
        (["cancel", "r-1", "--url", f"http://127.0.0.1:{free_port()}", "--json"], 1, "unreachable"),
        (["trigger", "w", "{oops", "--json"], Exit.USAGE, "usage"),
    ):
        out = run(*args)
        assert out.returncode == code, (args, out.stdout, out.stderr)
        body = json.loads(out.stdout)
        assert body["error"] == error and body["exit"] == code and body["detail"], (args, body)
        assert out.stderr == "", (args, out.stderr)
    # the same errors as text: a line on stderr, nothing on stdout
    text = run(*d, "show", "ffffffff")
    assert text.returncode == 1 and text.stdout == ""
    assert text.stderr == "actorflow show: no run with id or id prefix 'ffffffff'\n"


def test_tables_are_plain_off_a_terminal(
    store: tuple[af.Engine, list[str], str], data_dir: Path
) -> None:
    _, done, stuck = store
    out = run("--data-dir", str(data_dir), "runs")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "RUN\tWORKFLOW\tSTATUS\tCREATED\tDURATION"
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (stuck, "gated", "running"),
        *[(run_id, "ok", "completed") for run_id in reversed(done)],
    ]
    assert all(len(r) == 5 for r in rows) and "\x1b" not in out.stdout
    failed = run("--data-dir", str(data_dir), "runs", "--status", "failed")
    assert failed.stdout == "RUN\tWORKFLOW\tSTATUS\tCREATED\tDURATION\n"  # the header alone


def _on_a_terminal(*args: str, **env: str) -> tuple[int, str]:
    """Run with stdout a pseudo-terminal (100 columns); what it drew there."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args], stdout=terminal, stderr=subprocess.PIPE, cwd=ROOT,
        env={**ENV, "COLUMNS": "100", "TERM": "xterm-256color", **env},
    )  # fmt: skip
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    proc.wait(timeout=120)
    assert proc.stderr is not None and proc.stderr.read() == b""
    return proc.returncode, drawn.decode()


def test_tables_are_rich_on_a_terminal_and_colourless_under_no_color(
    store: tuple[af.Engine, list[str], str], data_dir: Path
) -> None:
    _, done, _ = store
    code, drawn = _on_a_terminal("--data-dir", str(data_dir), "runs")
    assert code == 0
    assert "─" in drawn and "\t" not in drawn  # a drawn table, not tab-separated columns
    assert all(run_id in drawn for run_id in done)
    assert COLOUR.search(drawn), drawn  # statuses in colour
    code, plain_colours = _on_a_terminal("--data-dir", str(data_dir), "runs", NO_COLOR="1")
    assert code == 0
    assert "─" in plain_colours and all(run_id in plain_colours for run_id in done)
    assert not COLOUR.search(plain_colours), plain_colours


def test_help_lists_the_exit_statuses() -> None:
    out = run("--help")
    assert out.returncode == 0, out.stderr
    section = out.stdout.split("exit status:\n", 1)[1]
    listed = {int(m.group(1)) for m in re.finditer(r"^  (\d+) ", section, re.M)}
    assert listed == {0, 1, 2, 3, 4, 130, 141} == {int(c) for c in Exit}
    operations = (ROOT / "docs" / "operations.md").read_text().split("### Exit statuses", 1)[1]
    documented = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", operations, re.M)}
    assert documented == listed


def test_ctrl_c_ends_quietly_with_130(
    store: tuple[af.Engine, list[str], str], data_dir: Path
) -> None:
    _, _, stuck = store
    # With SIGINT at its default, as a terminal starts it. A process inherits an ignored
    # SIGINT (a suite run as a background job of a script without job control), and then
    # Python leaves it ignored: so does `actorflow wait`, as a background job should.
    as_from_a_terminal = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('actorflow', run_name='__main__', alter_sys=True)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", as_from_a_terminal, "--data-dir", str(data_dir), "wait",
         stuck, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**ENV, "PYTHONFAULTHANDLER": "1"},  # SIGABRT prints where each thread is
    )  # fmt: skip
    # Once it has the store mapped it is in its wait loop (imports done, handler in place).
    maps = Path(f"/proc/{proc.pid}/maps")
    wait_until(lambda: "data.mdb" in maps.read_text(), timeout=60)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # (then say where it was)
        if proc.poll() is not None:
            pytest.fail(f"`actorflow wait` ended ({proc.returncode}), but a process it started "
                        "kept its output open")  # fmt: skip
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"`actorflow wait` did not end after SIGINT; its threads then:\n{err}")
    assert proc.returncode == Exit.INTERRUPTED == 130, err
    assert err == "actorflow wait: interrupted\n" and out == ""


@contextlib.contextmanager
def _serving(data_dir: Path, *args: str, **env: str) -> Iterator[tuple[str, list[str]]]:
    """``actorflow serve`` of tests/triggers/webhook_app.py; yields its URL and, once it has
    stopped, the lines it printed (appended to the list)."""
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "tests/triggers/webhook_app.py:engine", "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**ENV, "TEST_APP_DATA_DIR": str(data_dir), **env},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    printed: list[str] = []

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz").status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()[0]
            return False

    try:
        wait_until(up, timeout=60, interval=0.1)
        yield url, printed
    finally:
        proc.send_signal(signal.SIGINT)
        printed += proc.communicate(timeout=60)[0].splitlines()
    assert proc.returncode == 0, printed


def test_serve_token_guards_the_api_and_is_never_printed(tmp_path: Path) -> None:
    token = "s3cret-token-for-the-test"
    with _serving(tmp_path / "store", "--token", token) as (url, printed):
        assert httpx.get(url + "/api/runs").status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(url + "/api/runs", headers=bearer).status_code == 200
        first_visit = httpx.get(f"{url}/?token={token}")  # the dashboard's login link
        assert first_visit.status_code == 303, first_visit.text
        # The CLI: refused without the token (JSON error, exit 1), started with it.
        refused = run("trigger", "open", "{}", "--url", url, "--json")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        body = json.loads(refused.stdout)
        assert (body["error"], body["status"]) == ("unauthorized", 401)
        assert "ACTORFLOW_TOKEN" in body["detail"]
        started = run("trigger", "open", "{}", "--url", url, "--json", ACTORFLOW_TOKEN=token)
        assert started.returncode == 0, started.stdout + started.stderr
        assert json.loads(started.stdout)["workflow"] == "open"
    log = "\n".join(printed)
    assert "requires a bearer token (from --token)" in log
    assert "token=[redacted]" in log  # the access log line of the first visit
    assert token not in log


def test_serve_takes_the_token_from_the_environment(tmp_path: Path) -> None:
    token = "from-the-environment"
    with _serving(tmp_path / "store", ACTORFLOW_API_TOKEN=token) as (url, printed):
        assert httpx.get(url + "/api/runs").status_code == 401
        ok = httpx.get(url + "/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # the CLI on the same machine presents the server's variable too
        started = run("trigger", "open", "{}", "--url", url, ACTORFLOW_API_TOKEN=token)
        assert started.returncode == 0, started.stderr
    assert token not in "\n".join(printed)
    empty = run("serve", "tests/triggers/webhook_app.py:engine", "--token", "")
    assert empty.returncode == Exit.USAGE and "--token" in empty.stderr  # not an open API


def test_without_rich_tables_are_plain_and_wait_draws_no_bars(
    store: tuple[af.Engine, list[str], str], data_dir: Path
) -> None:
    # rich may be an optional extra: the CLI must still work, in plain columns.
    _, done, _ = store
    no_rich = (
        "import sys; sys.modules['rich'] = None; from actorflow.cli._main import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    cli = [sys.executable, "-c", no_rich, "--data-dir", str(data_dir)]
    controller, terminal = pty.openpty()
    listed = subprocess.run(
        [*cli, "runs"], stdout=terminal, stderr=subprocess.PIPE, cwd=ROOT, env=ENV, timeout=120
    )
    os.close(terminal)
    drawn = os.read(controller, 65536).decode()
    os.close(controller)
    assert listed.returncode == 0, listed.stderr
    assert drawn.startswith("RUN\tWORKFLOW\tSTATUS") and done[0] in drawn  # even on a terminal
    waited = subprocess.run(
        [*cli, "wait", done[0]], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120
    )
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith(f"run {done[0]}: completed")
