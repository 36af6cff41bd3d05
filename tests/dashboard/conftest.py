"""The dashboard's browser tests' shared pieces: Debian's chromium driven by Playwright, a real
uvicorn server on loopback in front of a real engine, and the workflows the pages show.

Chromium comes from the system (``apt-get install chromium``; ``.ci/run`` installs it). The
tests skip without it, unless ``ACTORFLOW_REQUIRE_BROWSER=1`` (set by CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import actorflow as af
from tests import steps
from tests.serving import serve

CHROMIUM = (
    os.environ.get("ACTORFLOW_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
if CHROMIUM is None and os.environ.get("ACTORFLOW_REQUIRE_BROWSER"):
    raise RuntimeError("ACTORFLOW_REQUIRE_BROWSER is set but no chromium executable found")


def _define(engine: af.Engine) -> af.Engine:
    engine.define("child").step("total", lambda ctx: 1)
    (
        engine.define("orders")
        .step("validate", lambda ctx: ctx.payload)
        .if_("big", lambda ctx: ctx.last["amount"] > 100)
        .human_in_the_loop("approve", description="Approve a big order")
        .endif()
        .for_each("lines", lambda ctx: list(range(4)), lambda item, ctx: item * 2)
        .parallel("notify", {"email": lambda ctx: "sent", "crm": lambda ctx: "ok"})
        .subflow("sum", "child")
        .step("done", lambda ctx: "done")
    )
    engine.define("slow").step("wait", steps.slow)
    engine.define("bad").step("boom", steps.fail_always)
    return engine


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium (skips the test without it, see the module docstring)."""
    if CHROMIUM is None:
        pytest.skip("no chromium executable (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        # evil.example: another site, on this machine (and a name re-pointed at loopback).
        args.append("--host-resolver-rules=MAP evil.example 127.0.0.1")
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def site(make_engine: Callable[..., af.Engine]) -> Iterator[tuple[af.Engine, str]]:
    engine = _define(make_engine(workers=2))
    engine.start()
    with serve(engine.asgi()) as url:
        yield engine, url


def _page(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(url)
    return page
