"""Bad input, generated (Hypothesis): every refusal is a clear error naming the field, of
the documented type; the engine stays up and nothing stored changes.

Covered: builder calls and definitions (names, durations, retries, cron strings and time
zones), payloads (unpicklable, huge, deeply nested, arbitrary), webhook bodies and headers,
REST API bodies, and CLI arguments. ``tests/fuzz_atheris.py`` fuzzes the parsers with
coverage guidance as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import actorflow as af
from actorflow.cli._main import main as cli_main
from actorflow.cli._output import Exit
from tests import steps
from tests.triggers.webhook_app import define

EXAMPLES = 200
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
names = st.one_of(st.text(max_size=30), junk)


def _names_field(exc: BaseException, *fields: str) -> None:
    text = str(exc)
    assert any(f in text for f in fields), (fields, text)


@SETTINGS
@given(duration=junk | st.text(alphabet="0123456789.smhdw -+e", max_size=12))
def test_durations(duration: Any) -> None:
    try:
        wf = af.Workflow("w").step("s", steps.noop, timeout=duration).sleep("nap", duration)
        spec = wf.build()
    except af.DefinitionError as exc:
        _names_field(exc, "timeout", "nap")
        return
    node = spec.to_dict()
    assert node  # accepted: a positive, finite number of seconds
    assert duration is not None


@SETTINGS
@given(
    cron=st.one_of(
        st.text(max_size=30),
        st.lists(
            st.sampled_from(["*", "*/5", "0", "59", "60", "1-5", "MON", "JAN", "L", ",", "x"]),
            min_size=1,
            max_size=7,
        ).map(" ".join),
    ),
    tz=st.one_of(
        st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Mars/Base", "", "utc"]),
        st.text(max_size=20),
    ),
)
@example(cron="60 * * * *", tz="UTC")  # minute 60
@example(cron="* * * *", tz="UTC")  # four fields
@example(cron="0 9 * * MON-FRI", tz="Mars/Base")  # no such zone
@example(cron="0 9 * * MON-FRI", tz="Europe/Paris")  # fine
def test_cron_strings_and_time_zones(cron: str, tz: str) -> None:
    """Refused with the field named exactly when cron or tz is bad; else it really fires."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from croniter import croniter

    from actorflow.triggers._cron import next_fire

    try:
        zone_ok = bool(tz) and ZoneInfo(tz) is not None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        zone_ok = False
    cron_ok = len(cron.split()) == 5 and croniter.is_valid(cron)
    wf = af.Workflow("w").step("s", steps.noop).on_schedule(cron, tz=tz)
    try:
        spec = wf.build()
    except af.DefinitionError as exc:
        assert not (cron_ok and zone_ok), f"refused a good schedule {cron!r} in {tz!r}: {exc}"
        _names_field(exc, "cron", "tz", "time zone")
        return
    assert cron_ok and zone_ok, f"accepted a bad schedule {cron!r} in {tz!r}"
    (schedule,) = spec.schedules
    after = 1_800_000_000.0  # 2027-01-15
    assert next_fire(schedule.cron, schedule.tz, after) > after


@SETTINGS
@given(
    name=names,
    step=names,
    attempts=junk,
    backoff=st.one_of(st.sampled_from(["fixed", "exponential", "linear"]), st.text(max_size=8)),
    concurrency=junk,
)
def test_builder_calls(name: Any, step: Any, attempts: Any, backoff: Any, concurrency: Any) -> None:
    try:
        retry = af.Retry(attempts=attempts, backoff=backoff)
    except (af.DefinitionError, af.ConfigError) as exc:
        _names_field(exc, "attempts", "backoff")
        retry = af.Retry()
    try:
        af.Workflow(name).step(step, steps.noop, retry=retry).for_each(
            "fan", lambda ctx: [1], steps.double_item, concurrency=concurrency
        ).build()
    except af.DefinitionError as exc:
        _names_field(exc, "workflow id", "step", "name", "concurrency", "id")


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("no pickling this")


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50)),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
bad_payloads = st.sampled_from(
    [
        threading.Lock(),
        (lambda: 1),
        (x for x in range(3)),
        _Unpicklable(),
        {"fine": 1, "bad": threading.Lock()},
        _nested(100_000),
        io.StringIO("open file"),
    ]
)


def test_payloads(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(workers=1)
    engine.define("echo").step("e", steps.echo_payload)
    seen: list[str] = []
    with engine:
        first = engine.trigger("echo", {"keep": "me"})
        assert first.result(timeout=30) == {"keep": "me"}

        @SETTINGS
        @given(payload=json_like | bad_payloads)
        def check(payload: Any) -> None:
            try:
                run = engine.trigger("echo", payload)
            except af.InvalidPayload as exc:
                _names_field(exc, "payload")
                return
            seen.append(run.id)

        check()
        huge = "x" * (64 << 20)
        run = engine.trigger("echo", {"huge": huge})  # stored out of line, read back whole
        assert len(run.result(timeout=120)["huge"]) == len(huge)
        for run_id in seen[-20:]:
            engine.run(run_id).result(timeout=60)
        # the engine stayed up, and what was stored before is intact
        assert engine.trigger("echo", {"n": 1}).result(timeout=30) == {"n": 1}
        assert engine.run(first.id).result(timeout=5) == {"keep": "me"}
        assert engine.health()["ready"]


async def _send(app: Any, calls: list[tuple[str, str, bytes, dict[str, Any]]]) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [
            (await client.request(m, p, content=b, headers=h)).status_code for m, p, b, h in calls
        ]


# Any byte a client may put in a header value (HTTP/1.1 allows obs-text, 0x80-0xFF).
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
).map(lambda v: v.encode("latin-1"))


def test_webhook_and_rest_bodies_and_headers(make_engine: Callable[..., af.Engine]) -> None:
    engine = define(make_engine(workers=1, max_body=4096))
    statuses: dict[int, int] = {}
    with engine:
        paused = engine.trigger("approve", {"id": "p"})
        while not engine.approvals():
            asyncio.run(asyncio.sleep(0.01))
        token = engine.approvals()[0]["token"]
        app = engine.asgi()
        paths = [
            ("POST", "/hooks/orders"),
            ("POST", "/hooks/github"),
            ("POST", "/hooks/stripe"),
            ("PUT", "/hooks/open"),
            ("POST", "/api/workflows/open/trigger"),
            ("POST", "/api/workflows/nope/trigger"),
            ("POST", f"/api/approvals/{token}x/resume"),
            ("POST", "/api/events/paid"),
            ("POST", f"/api/runs/{paused.id}/signals/go"),
            ("POST", f"/api/runs/{paused.id}/updates/u"),
            ("GET", "/api/runs"),
        ]

        @SETTINGS
        @given(
            call=st.sampled_from(paths),
            body=st.one_of(st.binary(max_size=300), json_like.map(lambda v: repr(v).encode())),
            headers=st.dictionaries(
                st.sampled_from(
                    ["X-Signature", "X-Hub-Signature-256", "Stripe-Signature", "Content-Type",
                     "Idempotency-Key", "Content-Length", "X-Other"]
                ),
                header_values,
                max_size=4,
            ),
            query=st.sampled_from(["", "?limit=abc", "?limit=-1", "?status=bogus", "?since=x"]),
        )  # fmt: skip
        def check(call: tuple[str, str], body: bytes, headers: dict[str, Any], query: str) -> None:
            headers.pop("Content-Length", None)  # httpx sets the true one
            headers.setdefault("Content-Type", "application/json")  # else a 415 before parsing
            method, path = call
            (status,) = asyncio.run(_send(app, [(method, path + query, body, headers)]))
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (method, path, body, headers, status)

        check()
        assert engine.health()["ready"]
        assert engine.approvals()[0]["token"] == token  # never resumed by junk
        assert engine.inspect(paused.id).status is af.RunStatus.RUNNING
    assert len(statuses) >= 3  # refusals of several kinds were exercised


cli_words = st.sampled_from(
    ["runs", "show", "wait", "replay", "trigger", "cancel", "retry", "resume", "store", "check",
     "backup", "compact", "doctor", "--limit", "-5", "0", "abc", "--url", "http://127.0.0.1:9",
     "--status", "bogus", "{", "{}", "@/no/such/file", "--key", "", "--reason", "--json",
     "--since", "yesterday", "01zz"]
)  # fmt: skip


def test_cli_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_DATA_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("ACTORFLOW_URL", raising=False)
    engine = af.Engine(data_dir=tmp_path / "store", workers=1)
    engine.define("w").step("s", steps.noop)
    with engine:
        engine.trigger("w", None).result(timeout=30)

    @SETTINGS
    @given(argv=st.lists(st.one_of(cli_words, st.text(max_size=12)), max_size=5))
    # Found by Hypothesis: a --url urllib cannot parse was a traceback.
    @example(argv=["trigger", "runs", "--url", "runs"])
    @example(argv=["cancel", "x", "--url", "http://[::1"])
    def check(argv: list[str]) -> None:
        if argv and argv[0] in ("wait",):
            argv = [*argv, "--timeout", "0.01"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(argv)
            except SystemExit as exc:  # argparse: usage error (2), or --help (0)
                code = exc.code if isinstance(exc.code, int) else 1
        assert code in {int(c) for c in Exit}, (argv, code, err.getvalue())
        assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
        words = argv[: argv.index("--")] if "--" in argv else argv
        if code in (Exit.ERROR, Exit.USAGE) and "--json" in words:  # the error is JSON
            body = json.loads(out.getvalue())
            assert body["exit"] == code and body["error"] and body["detail"], (argv, body)
        elif code in (Exit.ERROR, Exit.USAGE):
            assert err.getvalue().startswith(("actorflow", "usage: actorflow")), (argv, err)

    check()
    # the store is intact after every command tried
    assert af.Engine(data_dir=tmp_path / "store").runs()[0].status is af.RunStatus.COMPLETED


# Not a module-level importorskip: that would skip every test above on an interpreter without
# atheris (3.12 and later), not only the fuzzing.
@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris installs on x86-64 Linux with Python 3.11 only",
)
@pytest.mark.parametrize("target", ["duration", "cron", "webhook", "schema"])
def test_fuzz_with_atheris(target: str, tmp_path: Path) -> None:
    """Coverage-guided: 20,000 inputs per target (libFuzzer exits non-zero on a crash)."""
    import subprocess
    import sys

    script = Path(__file__).with_name("fuzz_atheris.py")
    out = subprocess.run(
        [sys.executable, str(script), target, "-runs=20000", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 20000 runs" in out.stderr
