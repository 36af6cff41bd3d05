"""The dashboard in headless Chromium (Debian's chromium, driven by Playwright), on a real
uvicorn server on loopback: the runs list and its filters, a run's graph and timeline,
cancelling a run, resuming an approval, live updates, read-only mode, another site's
page that tries to cancel and trigger runs, and the dashboard mounted under a prefix in a
FastAPI service.

Chromium comes from the system (``apt-get install chromium``; ``.ci/run`` installs it). The
tests skip without it, unless ``ACTORFLOW_REQUIRE_BROWSER=1`` (set by CI) makes that a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

import actorflow as af
from tests.conftest import wait_until
from tests.dashboard.conftest import _define, _page
from tests.serving import serve


def test_runs_list_filters_and_run_detail(browser: Any, site: tuple[af.Engine, str]) -> None:
    engine, url = site
    small = [engine.trigger("orders", {"amount": a}) for a in (5, 10)]
    for run in small:
        run.result(timeout=60)
    failed = engine.trigger("bad", {})
    with pytest.raises(af.StepFailed):
        failed.result(timeout=60)
    page = _page(browser, url)
    page.wait_for_selector("tr.run-row")
    assert page.locator("tr.run-row").count() == 5  # 2 orders, their 2 children, 1 failed
    page.select_option("select[name=status]", "failed")
    page.click("#filters button")
    page.wait_for_function("document.querySelectorAll('tr.run-row').length === 1")
    assert page.locator("tr.run-row").first.get_attribute("data-run") == failed.id

    page.goto(f"{url}/#/run/{small[0].id}")
    page.wait_for_selector("#graph")
    statuses = {
        n.get_attribute("data-node"): n.get_attribute("data-status")
        for n in page.locator("#graph g.node").all()
    }
    assert statuses["validate"] == "succeeded" and statuses["done"] == "succeeded"
    assert statuses["approve"] == "skipped"  # the branch was not taken
    assert (page.locator("#graph g.node[data-node=lines] text").text_content() or "").endswith(
        "4/4"
    )
    assert page.locator("#timeline rect.bar").count() >= 4
    assert page.locator("#steps tbody tr").count() >= 8
    child = small[0].inspect().step("sum").child_run_id
    page.click(f"a[href='#/run/{child}']")
    page.wait_for_selector(f"text={child}")

    page.goto(f"{url}/#/run/{failed.id}")
    page.wait_for_selector(".error-card")
    assert "boom on attempt 1" in page.inner_text(".error-card")
    assert "Traceback" in page.inner_text(".error-card pre")  # the worker's traceback
    assert page.errors == []


def test_runs_filtered_by_search_attributes(browser: Any, site: tuple[af.Engine, str]) -> None:
    engine, url = site
    runs = [
        engine.trigger(
            "slow", {"sleep": 0}, search_attributes={"customer": c, "amount": a}, memo={"i": i}
        )
        for i, (c, a) in enumerate([("c-42", 90), ("c-7", 150), ("c-42", 120)])
    ]
    for run in runs:
        run.result(timeout=60)
    page = _page(browser, url)
    page.wait_for_selector("tr.run-row")
    page.fill("input[name=search]", "customer=c-42 amount>100")
    page.click("#filters button")
    page.wait_for_function("document.querySelectorAll('tr.run-row').length === 1")
    assert page.locator("tr.run-row").first.get_attribute("data-run") == runs[2].id
    page.fill("input[name=search]", "customer=c-42")
    page.click("#filters button")
    page.wait_for_function("document.querySelectorAll('tr.run-row').length === 2")
    page.click("tr.run-row >> nth=0")
    page.wait_for_selector("#attrs")
    assert page.inner_text("#attrs") == 'customer="c-42" amount=120'
    page.goto(f"{url}/#/?search=a%21%3D1")  # a search the API refuses: said, not broken
    page.wait_for_selector("#toast.show")
    assert "not searchable" in page.inner_text("#toast")
    assert page.errors == []


def test_cancel_and_resume_from_the_dashboard(browser: Any, site: tuple[af.Engine, str]) -> None:
    engine, url = site
    slow = engine.trigger("slow", {"sleep": 60})
    wait_until(lambda: engine.inspect(slow.id).steps[0].status == af.StepStatus.RUNNING)
    page = _page(browser, f"{url}/#/run/{slow.id}")
    page.wait_for_selector("#cancel:not([disabled])")
    page.click("#cancel")
    wait_until(lambda: engine.inspect(slow.id).status == af.RunStatus.CANCELLED)
    page.wait_for_selector("h1 .s-cancelled")  # the page followed (live update)

    big = engine.trigger("orders", {"amount": 500})
    wait_until(lambda: bool(engine.approvals(run_id=big.id)))
    page.goto(f"{url}/#/run/{big.id}")
    page.wait_for_selector(".approval .resume")
    page.fill(".approval-payload", '{"approved_by": "grace"}')
    page.click(".approval .resume")
    assert big.result(timeout=60) == "done"
    assert big.inspect().step("approve").output == '{"approved_by":"grace"}'
    page.wait_for_selector("h1 .s-completed", timeout=30_000)  # live update, no reload
    assert page.errors == []


def test_trigger_form_and_read_only_mode(
    browser: Any, make_engine: Callable[..., af.Engine]
) -> None:
    engine = _define(make_engine(workers=1))
    engine.start()
    with serve(engine.asgi()) as url:
        page = _page(browser, f"{url}/#/trigger")
        page.select_option("select[name=workflow]", "orders")
        page.fill("textarea[name=payload]", '{"amount": 7}')
        page.click("#trigger button")
        page.wait_for_selector("#graph")
        run_id = page.url.rsplit("/", 1)[1]
        assert engine.run(run_id).result(timeout=60) == "done"
    with serve(engine.asgi(read_only=True)) as url:
        page = _page(browser, f"{url}/#/run/{run_id}")
        page.wait_for_selector("#graph")
        assert not page.locator("#cancel").is_visible()
        assert not page.locator("#nav-trigger").is_visible()
        assert page.inner_text("#mode") == "read-only"
        refused = httpx.post(f"{url}/api/runs/{run_id}/retry", json={})
        assert refused.status_code == 403 and refused.json()["error"] == "read_only"


_EVIL = """<!doctype html><html><body>
<form id="cancel" method="POST" action="{api}/api/runs/{run}/cancel" target="one">
  <input name="reason" value="csrf"></form>
<form id="start" method="POST" enctype="text/plain" target="two"
  action="{api}/api/workflows/orders/trigger">
  <input name='{{"amount": 1, "x": "' value='"}}'></form>
<iframe name="one"></iframe><iframe name="two"></iframe>
<script>
  document.getElementById("cancel").submit();
  document.getElementById("start").submit();
  fetch("{api}/api/workflows/orders/trigger",
        {{method: "POST", mode: "no-cors", body: '{{"amount": 2}}'}});
  fetch("{api}/api/runs/{run}/cancel", {{method: "POST", mode: "no-cors"}});
</script></body></html>"""


def test_another_sites_page_cannot_cancel_or_trigger(
    browser: Any, site: tuple[af.Engine, str]
) -> None:
    """Forms and no-cors fetches from evil.example, a site the browser sees as another."""
    engine, url = site
    slow = engine.trigger("slow", {"sleep": 60})
    wait_until(lambda: engine.inspect(slow.id).steps[0].status == af.StepStatus.RUNNING)
    html = _EVIL.format(api=url, run=slow.id).encode()

    async def evil(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/html"), (b"content-length", str(len(html)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": html})

    answers: list[int] = []  # the engine's answers to the page's four requests

    def answered(response: Any) -> None:
        if response.url.startswith(url):
            answers.append(response.status)

    page = browser.new_page()
    page.on("response", answered)
    with serve(evil) as evil_url:
        page.goto(evil_url.replace("127.0.0.1", "evil.example"))
        # Playwright's sync API hands events over only while one of its calls runs.
        wait_until(lambda: page.wait_for_timeout(20) or len(answers) == 4, timeout=30)
    assert answers == [403] * 4, answers
    # DNS rebinding: the engine itself, under evil.example's name, serves nothing.
    page.goto(url.replace("127.0.0.1", "evil.example"))
    assert "allowed_hosts" in page.inner_text("body")
    assert engine.inspect(slow.id).status is af.RunStatus.RUNNING  # not cancelled
    assert engine.runs("orders") == []  # nothing started
    engine.run(slow.id).cancel()
    assert engine.trigger("orders", {"amount": 3}).result(timeout=60) == "done"  # still serving


def test_the_dashboard_mounted_under_a_prefix_in_fastapi(
    browser: Any, make_engine: Callable[..., af.Engine]
) -> None:
    """``app.mount("/flows", engine.asgi())`` with ``FastAPI(lifespan=engine.lifespan)``."""
    from fastapi import FastAPI

    engine = _define(make_engine(workers=2))
    app = FastAPI(lifespan=engine.lifespan)
    app.mount("/flows", engine.asgi())

    @app.get("/")
    def home() -> dict[str, str]:
        return {"service": "shop"}

    assets: list[str] = []
    with serve(app) as url:
        first = engine.trigger("orders", {"amount": 5})
        first.result(timeout=60)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("requestfinished", lambda r: assets.append(r.url))
        page.goto(f"{url}/flows")  # the mount point: sent on to /flows/
        assert page.url == f"{url}/flows/"
        page.wait_for_selector(f"tr.run-row[data-run='{first.id}']")
        assert page.locator("tr.run-row").count() == 2  # the order and its child run
        page.wait_for_selector("#live.on")  # the event stream is connected, under the prefix
        second = engine.trigger("orders", {"amount": 6})
        page.wait_for_selector(f"tr.run-row[data-run='{second.id}']")  # a live update
        second.result(timeout=60)

        page.click(f"tr.run-row[data-run='{first.id}']")
        page.wait_for_selector("#graph")
        assert page.url == f"{url}/flows/#/run/{first.id}"
        statuses = {
            n.get_attribute("data-node"): n.get_attribute("data-status")
            for n in page.locator("#graph g.node").all()
        }
        assert statuses["validate"] == "succeeded" and statuses["done"] == "succeeded"
        slow = engine.trigger("slow", {"sleep": 60})
        page.goto(f"{url}/flows/#/run/{slow.id}")
        page.wait_for_selector("#cancel:not([disabled])")
        page.click("#cancel")  # an action, through the API under the prefix
        page.wait_for_selector("h1 .s-cancelled")  # followed live
        assert engine.inspect(slow.id).status is af.RunStatus.CANCELLED
        assert page.errors == []
        assert httpx.get(f"{url}/", timeout=30).json() == {"service": "shop"}
        page.close()  # its event stream too, before the server stops
    ours = [u for u in assets if u.startswith(url)]
    assert ours[0] == f"{url}/flows", ours  # the redirect, then all under the prefix
    assert len(ours) > 5 and all(u.startswith(f"{url}/flows/") for u in ours[1:]), ours
    assert not engine.running  # the service's shutdown stopped it


def test_the_workflows_page_counts_the_runs_each_version_has(
    browser: Any, make_engine: Callable[..., af.Engine], tmp_path: Any
) -> None:
    from tests.runtime.test_deploys import _at_gate, _go, _started, _v1, _v2_appended

    log = tmp_path / "markers.log"
    log.touch()
    v1 = make_engine(durability="fast")
    _v1(v1)
    with v1:
        old = _started(v1, log, 2)
    both = make_engine(durability="fast")
    _v1(both)
    _v2_appended(both, version=2)
    with both, serve(both.asgi()) as url:
        new = both.trigger("deploy", {"log": str(log), "k": "new"})
        wait_until(lambda: _at_gate(both, new.id), timeout=60)
        page = _page(browser, f"{url}/#/workflows")
        page.wait_for_selector("#workflows tr.version")
        rows = [r.inner_text().split("\t") for r in page.locator("#workflows tr.version").all()]
        assert [r[:4] for r in rows] == [["deploy", "1", "yes", "2"], ["deploy", "2", "yes", "1"]]
        assert "running 2" in rows[0][4] and "new runs start here" in rows[1][5]
        _go(both, ["k0", "k1"])
        for run_id in old:
            both.run(run_id).result(timeout=60)
        # Live: version 1 has no runs left, so it may be dropped.
        page.wait_for_function(
            "[...document.querySelectorAll('#workflows tr.version')]"
            ".some((r) => r.innerText.includes('no runs left: may be dropped'))",
            timeout=30_000,
        )
        page.goto(f"{url}/#/run/{new.id}")
        page.wait_for_selector("#graph")
        assert "deploy version 2" in page.inner_text("dl")
        assert page.errors == []
