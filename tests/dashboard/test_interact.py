"""A code workflow run's page sends signals, queries and updates (as Temporal's UI sends a
signal), offering the handlers the run registered, in headless Chromium on a real engine
behind a real uvicorn server; and the resumed approvals in the inbox show what they were
resumed with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import actorflow as af
from tests.conftest import wait_until
from tests.dashboard.conftest import _page
from tests.serving import serve

MakeEngine = Callable[..., af.Engine]


def _cart(engine: af.Engine) -> None:
    @engine.workflow("cart")
    async def cart(ctx: af.WorkflowContext, start: dict) -> dict:
        items, moves = list(start["items"]), []

        def count() -> int:
            """How many items the cart holds."""
            return len(items)

        async def add(item: str) -> int:
            items.append(await ctx.step("shout", str.upper, item))
            ctx.on_query("last", lambda: items[-1])  # registered late: offered once it is
            return len(items)

        async def nap(seconds: float) -> float:
            await ctx.step("nap", time.sleep, seconds)
            return seconds

        ctx.on_query("count", count)
        ctx.on_update("add", add)
        ctx.on_update("nap", nap)
        ctx.on_signal("move", lambda x, y: moves.append([x, y]))
        await ctx.wait_for_signal("checkout")
        return {"items": items, "moves": moves}


def _send(page: Any, kind: str, handler: str, body: str, spread: bool | None = None) -> str:
    form = page.locator("#interact-form")
    form.locator("select[name=kind]").select_option(kind)
    form.locator("[name=handler]").fill(handler)  # ticks "a list of arguments" as it fits
    if spread is not None:
        form.locator("[name=spread]").set_checked(spread)
    form.locator("[name=body]").fill(body)
    before = page.inner_text("#interact-result") if page.is_visible("#interact-result") else ""
    form.locator("button[type=submit]").click()
    page.wait_for_function(
        "(was) => { const r = document.querySelector('#interact-result');"
        " return !r.hidden && r.textContent !== was; }",
        arg=before,
    )
    return page.inner_text("#interact-result")


def test_a_code_runs_page_signals_queries_and_updates_it(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=1)
    _cart(engine)
    engine.start()
    with serve(engine.asgi()) as url:
        run = engine.trigger("cart", {"items": ["a"]})
        page = _page(browser, f"{url}/#/run/{run.id}")
        page.wait_for_selector("#interact-form")
        # The run's registered signal handlers are offered; the hint gives the parameters,
        # and a two-parameter handler's signal is sent as a list of arguments.
        offered = "[...document.querySelectorAll('#handler-names option')].map(o => o.value)"
        # The signal handler, and the signal a ctx.wait_for_signal is waiting for.
        page.wait_for_function(f"{offered}.join() === 'move,checkout'")
        page.fill("#interact-form [name=handler]", "checkout")
        assert "a ctx.wait_for_signal is waiting for it" in page.inner_text("#handler-hint")
        page.fill("#interact-form [name=handler]", "move")
        assert page.inner_text("#handler-hint") == "signal move(x, y)"
        assert page.is_checked("#interact-form [name=spread]")
        # A signal that does not fit its handler is not sent (the engine would drop it).
        refused = _send(page, "signal", "move", "5", spread=False)
        assert "not sent" in refused and "takes 2 argument(s); this sends 1" in refused
        assert "its handler takes it" in _send(page, "signal", "move", "[3, 4]")
        # A signal runs no step, so no live event: the page refetches the run after sending.
        page.wait_for_selector("#history tr.ev-signal_received")

        # A query: its arguments are a list; the hint carries the handler's docstring.
        page.locator("#interact-form select[name=kind]").select_option("query")
        page.fill("#interact-form [name=handler]", "count")
        assert "How many items the cart holds." in page.inner_text("#handler-hint")
        assert _send(page, "query", "count", "[]").endswith("→ 1")

        # Typing an update while the run's events arrive: the form is the same element and
        # keeps what was typed.
        form = page.locator("#interact-form")
        form.locator("select[name=kind]").select_option("update")
        form.locator("[name=handler]").fill("add")
        form.locator("[name=body]").fill('"b"')
        page.evaluate("document.querySelector('#interact-form').dataset.mark = 'typed'")
        assert run.update("add", "z") == 2  # its step's events reach the page
        page.wait_for_selector("#steps tr[data-step='shout']")
        assert form.locator("[name=body]").input_value() == '"b"'
        assert form.locator("[name=handler]").input_value() == "add"
        assert page.evaluate("document.querySelector('#interact-form').dataset.mark") == "typed"
        assert _send(page, "update", "add", '"b"').endswith("→ 3")
        # The query the update's handler registered is offered now.
        page.locator("#interact-form select[name=kind]").select_option("query")
        page.wait_for_function(f"{offered}.includes('last')")

        # Send is disabled while an update is in flight: a second click cannot run it twice.
        form.locator("select[name=kind]").select_option("update")
        form.locator("[name=handler]").fill("nap")
        form.locator("[name=body]").fill("1")
        form.locator("button[type=submit]").click()
        assert form.locator("button[type=submit]").is_disabled()
        page.wait_for_function("!document.querySelector('#interact-form button').disabled")
        assert page.inner_text("#interact-result").endswith("→ 1")
        assert [s.name for s in run.inspect().steps].count("nap") == 1

        # Errors are shown, and nothing is sent.
        bad = _send(page, "query", "nope", "[]")
        assert "no such query handler" in bad and "count" in bad
        assert page.locator("#interact-result.error").count() == 1
        assert "not sent: payload: " in _send(page, "update", "add", "{bad json")

        # A signal with no payload ends the run; a finished run only answers queries.
        assert "delivered" in _send(page, "signal", "checkout", "")
        assert run.result(timeout=60) == {"items": ["a", "Z", "B"], "moves": [[3, 4]]}
        page.wait_for_function(
            "document.querySelector('#interact-form select[name=kind]').options.length === 1"
        )
        assert _send(page, "query", "count", "").endswith("→ 3")
        assert page.errors == []


def test_read_only_offers_queries_only(browser: Any, make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    _cart(engine)
    engine.start()
    with serve(engine.asgi(read_only=True)) as url:
        run = engine.trigger("cart", {"items": ["a", "b"]})
        wait_until(lambda: run.query("count") == 2)
        page = _page(browser, f"{url}/#/run/{run.id}")
        page.wait_for_selector("#interact-form")
        kinds = page.eval_on_selector_all(
            "#interact-form select[name=kind] option", "os => os.map(o => o.value)"
        )
        assert kinds == ["query"]
        assert _send(page, "query", "count", "[]").endswith("→ 2")
        run.signal("checkout")
        assert run.result(timeout=60)["items"] == ["a", "b"]
        assert page.errors == []


def test_a_graph_runs_page_has_no_signal_form(browser: Any, site: tuple[af.Engine, str]) -> None:
    engine, url = site
    run = engine.trigger("child")
    run.result(timeout=60)
    page = _page(browser, f"{url}/#/run/{run.id}")
    page.wait_for_selector("#steps tr[data-step='total']")
    assert page.locator("#interact-form").count() == 0
    assert page.errors == []
