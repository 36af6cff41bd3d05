"""The dashboard at its edges, in headless Chromium: what a user's probe of the new pages
found, each driven as that user did (issue 25).

- A wait in progress shows as waiting (orange) in the graph and the steps table, and its
  bar stays visible in front of the collapsed break.
- A code workflow's ``ctx.map`` is one node with its progress, not a chain of its items.
- A workflow id of 180 characters does not push the pages' columns off the screen.
- A workflow's page follows its runs live, even when another workflow's run comes last.
- Signing in (token mode) goes back to the page that was asked for; a wrong token does not
  stay in the address bar.
- A timeline with more steps than it draws says how many more there are.
- A big run's page draws its steps and its history 200 rows at a time (a 5,000-item run's
  page took 11 s to load with every row drawn), with "show more", "show all", and a filter
  of the steps by name and status.
- A busy run's page, and the approvals inbox beside it, follow it while it runs: a steady
  stream of events no longer postpones their refresh until the run goes quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import actorflow as af
from tests import code_steps
from tests.conftest import wait_until
from tests.dashboard.conftest import _page
from tests.serving import serve

MakeEngine = Callable[..., af.Engine]

LONG = "w" * 180  # a workflow id near the 200-byte limit


async def mapped(ctx: af.WorkflowContext, payload: Any) -> list[int]:
    out: list[int] = await ctx.map("square", code_steps.square, list(range(30)))
    return out


def test_waits_show_as_waiting_and_a_map_is_one_node(browser: Any, make_engine: MakeEngine) -> None:
    engine = make_engine(workers=2)
    engine.define("ask").step("prep", lambda ctx: 1).human_in_the_loop("sign", timeout="1h")
    engine.workflow("mapped")(mapped)
    with engine, serve(engine.asgi()) as url:
        waiting = engine.trigger("ask", {})
        wait_until(lambda: bool(engine.approvals(run_id=waiting.id)))
        page = _page(browser, f"{url}/#/run/{waiting.id}")
        page.wait_for_selector("#graph g.node[data-node=sign]")
        assert page.get_attribute("#graph g.node[data-node=sign]", "data-status") == "waiting"
        badge = page.locator("#steps tr.step-row[data-step=sign] .badge")
        assert badge.inner_text() == "waiting"
        # The wait's bar is in front of the collapsed break behind it: it is what is there.
        page.wait_for_selector("#timeline rect.bar[data-step=sign]")
        on_top = page.evaluate(
            """() => {
              const bar = document.querySelector('#timeline rect.bar[data-step=sign]');
              bar.scrollIntoView({ block: 'center' });
              const r = bar.getBoundingClientRect();
              const el = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
              return el === bar ? true : `${el.tagName} ${el.getAttribute('class')}`;
            }"""
        )
        assert on_top is True, on_top

        run = engine.trigger("mapped", {})
        assert run.result(timeout=60) == [i * i for i in range(30)]
        page.goto(f"{url}/#/run/{run.id}")
        page.wait_for_selector("#graph g.node[data-node=square]")
        assert page.locator("#graph g.node").count() == 1  # not 30 in a row
        text = page.locator("#graph g.node[data-node=square] text").text_content() or ""
        assert text == "square 30/30", text  # its progress, as a for_each shows it
        assert page.errors == []


def test_long_names_a_workflows_live_page_and_the_timelines_limit(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=2)
    engine.define(LONG).step("x", lambda ctx: 1)
    engine.define("wide").for_each("items", lambda ctx: list(range(250)), lambda i, c: i)
    engine.define("other").step("x", lambda ctx: 1)
    with engine, serve(engine.asgi()) as url:
        engine.trigger(LONG, {}).result(timeout=60)
        page = _page(browser, f"{url}/#/workflows")
        page.wait_for_selector("#definitions tr.workflow")
        fits = "document.documentElement.scrollWidth <= window.innerWidth"
        assert page.evaluate(fits), "the workflows page is wider than the window"
        page.goto(f"{url}/#/?workflow={LONG}")
        page.wait_for_selector("tr.run-row")
        assert page.evaluate(fits), "the runs list is wider than the window"

        page.goto(f"{url}/#/workflow/wide")
        page.wait_for_selector("#recent", state="attached")
        wide = engine.trigger("wide", {})
        engine.trigger("other", {})  # the last event is another workflow's
        page.wait_for_selector(f"#recent tr.run-row[data-run='{wide.id}']", timeout=30_000)
        wide.result(timeout=60)
        page.goto(f"{url}/#/run/{wide.id}")
        page.wait_for_selector(".timeline-more")
        assert "50 more" in page.inner_text(".timeline-more")
        assert page.locator("#timeline rect.bar").count() == 200
        assert page.errors == []


def test_signing_in_goes_back_to_the_page_asked_for(browser: Any, make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    engine.define("w").step("a", lambda ctx: 1)
    with engine, serve(engine.asgi(token="tok-123")) as url:
        run = engine.trigger("w", {})
        run.result(timeout=60)
        page = _page(browser, f"{url}/#/run/{run.id}")
        page.wait_for_selector("form#login")
        page.fill("input[name=token]", "wrong")
        page.click("form#login button")
        page.wait_for_selector("form#login #wrong:visible")
        assert "token=" not in page.url  # the wrong token left the address bar
        page.fill("input[name=token]", "tok-123")
        page.click("form#login button")
        page.wait_for_selector("#graph g.node[data-node=a]")  # the run's page, as asked
        assert page.url.endswith(f"#/run/{run.id}") and "token=" not in page.url
        assert page.errors == []


def test_a_big_runs_steps_and_history_are_paged_and_filtered(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=2)
    engine.define("big").for_each("items", lambda ctx: list(range(450)), lambda i, c: i).step(
        "done", lambda ctx: 1
    )
    with engine, serve(engine.asgi()) as url:
        run = engine.trigger("big", {})
        run.result(timeout=120)
        total = len(run.inspect().steps)
        assert total == 452  # the loop, its 450 items, done
        page = _page(browser, f"{url}/#/run/{run.id}")
        rows = "document.querySelectorAll('#steps tr.step-row').length"
        page.wait_for_selector("#steps-more button.more")
        assert page.evaluate(rows) == 200
        assert f"Showing 200 of {total} matching steps" in page.inner_text("#steps-more")
        assert page.inner_text("#steps-count") == f"{total} step(s)"
        page.click("#steps-more button.more")
        page.wait_for_function(f"{rows} === 400")
        page.click("#steps-more button.all")
        page.wait_for_function(f"{rows} === {total}")
        assert not page.is_visible("#steps-more")

        # The filter: by name (the last step, beyond the first page), then by status.
        page.fill("#step-filter [name=q]", "done")
        page.wait_for_function(f"{rows} === 1")
        assert page.get_attribute("#steps tr.step-row", "data-step") == "done"
        assert page.inner_text("#steps-count") == f"1 of {total} step(s) match"
        page.fill("#step-filter [name=q]", "")
        page.select_option("#step-filter [name=status]", "failed")
        page.wait_for_selector("#steps td.empty")
        assert page.inner_text("#steps td.empty") == "No step matches."
        page.select_option("#step-filter [name=status]", "succeeded")
        page.wait_for_function(f"{rows} === 200")  # a new filter starts at one page again

        # The history: 200 events, then more.
        events = len(engine.history(run.id))
        assert events > 900
        history = "document.querySelectorAll('#history tbody tr').length"
        page.wait_for_function(f"{history} === 200")
        assert f"Showing 200 of {events} events" in page.inner_text("#history-more")
        page.click("#history-more button.more")
        page.wait_for_function(f"{history} === 400")
        page.click("#history-more button.all")
        page.wait_for_function(f"{history} === {events}")
        assert page.errors == []


def _nap(item: Any, ctx: Any) -> Any:
    time.sleep(0.01)
    return item


def test_a_busy_runs_page_and_the_inbox_follow_it_live(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=2)
    # About 20 s of items, an event every few milliseconds: the test ends it far sooner.
    engine.define("busy").for_each("items", lambda ctx: list(range(4000)), _nap)
    engine.define("ask").human_in_the_loop("sign", timeout="1h")
    with engine, serve(engine.asgi()) as url:
        busy = engine.trigger("busy", {})
        wait_until(lambda: len(busy.inspect().steps) > 20)
        page = _page(browser, f"{url}/#/run/{busy.id}")
        page.wait_for_selector("#steps-count:not(:empty)")
        count = "parseInt(document.querySelector('#steps-count').textContent)"
        first = page.evaluate(count)
        page.wait_for_function(f"{count} > {first} + 50", timeout=15_000)
        assert busy.status() == af.RunStatus.RUNNING  # followed while it runs, not after

        inbox = _page(browser, f"{url}/#/approvals")
        inbox.wait_for_selector("#inbox-count:not(:empty)")
        asked = engine.trigger("ask", {})
        wait_until(lambda: bool(engine.approvals(run_id=asked.id)))
        inbox.wait_for_selector(f".approval-item:has(a[href='#/run/{asked.id}'])", timeout=15_000)
        assert busy.status() == af.RunStatus.RUNNING
        busy.cancel()
        asked.cancel()
        assert page.errors == [] and inbox.errors == []
