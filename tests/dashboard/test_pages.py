"""The dashboard's pages and their actions in headless Chromium (issue 25), on a real engine
behind a real uvicorn server: the runs list (durations, relative and absolute times, child
runs marked, search by run id prefix and by idempotency key), a run's history, the workflows
and schedules pages (pause, resume, trigger now), the approvals inbox (resume from it), the
login page in token mode, and the whole dashboard served by a follower's ``asgi()``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import actorflow as af
from tests.conftest import wait_until
from tests.dashboard.conftest import _page
from tests.serving import serve

MakeEngine = Callable[..., af.Engine]


def test_the_runs_list_durations_times_child_marks_and_search(
    browser: Any, site: tuple[af.Engine, str]
) -> None:
    engine, url = site
    keyed = engine.trigger("orders", {"amount": 5}, idempotency_key="order-77")
    keyed.result(timeout=60)
    others = [engine.trigger("slow", {"sleep": 0}) for _ in range(3)]
    for run in others:
        run.result(timeout=60)
    child = keyed.inspect().step("sum").child_run_id
    page = _page(browser, url)
    page.wait_for_selector(f"tr.run-row[data-run='{keyed.id}']")
    row = page.locator(f"tr.run-row[data-run='{keyed.id}']")
    cells = row.locator("td").all()
    assert re.fullmatch(r"[\d.]+ (ms|s)", cells[4].inner_text()), cells[4].inner_text()
    triggered = cells[3].locator("time")
    assert triggered.inner_text() in ("just now",) or triggered.inner_text().endswith("ago")
    title = triggered.get_attribute("title") or ""
    assert str(time.localtime().tm_year) in title  # the absolute time, on hover
    assert "order-77" in cells[0].inner_text()  # its idempotency key
    kid = page.locator(f"tr.run-row[data-run='{child}'] a.child-of")
    assert kid.get_attribute("href") == f"#/run/{keyed.id}"  # marked, with its parent

    page.fill("input[name=q]", "order-77")  # an idempotency key
    page.click("#filters button")
    page.wait_for_function("document.querySelectorAll('tr.run-row').length === 1")
    assert page.locator("tr.run-row").first.get_attribute("data-run") == keyed.id
    target = others[1].id
    page.fill("input[name=q]", target[:20])  # the start of a run id
    page.click("#filters button")
    rows = "[...document.querySelectorAll('tr.run-row')]"
    page.wait_for_function(
        f"{rows}.length >= 1 && {rows}.every((r) => r.dataset.run.startsWith('{target[:20]}'))"
    )
    assert target in [r.get_attribute("data-run") for r in page.locator("tr.run-row").all()]
    assert "q=" in page.url  # the search is in the address: a link to it works
    assert page.errors == []


def test_a_runs_history_and_its_step_inputs(browser: Any, site: tuple[af.Engine, str]) -> None:
    engine, url = site
    run = engine.trigger("orders", {"amount": 5})
    run.result(timeout=60)
    page = _page(browser, f"{url}/#/run/{run.id}")
    page.wait_for_selector("#history tr.event")
    types = [t.inner_text() for t in page.locator("#history tr.event td:nth-child(4)").all()]
    assert types[0] == "run_triggered" and types[-1] == "run_completed"
    assert "step_started" in types and "child_started" in types
    assert len(types) == len(engine.history(run.id))
    assert page.errors == []


def test_schedules_paused_resumed_and_triggered_from_the_workflows_pages(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=1)
    engine.define("report", description="The nightly report").on_schedule("0 3 * * *").step(
        "write", lambda ctx: "written"
    )
    engine.define("other").step("x", lambda ctx: 1)
    with engine, serve(engine.asgi()) as url:
        page = _page(browser, f"{url}/#/workflows")
        page.wait_for_selector("#definitions tr.workflow[data-workflow=report]")
        chips = page.locator("#definitions tr.workflow[data-workflow=report]").inner_text()
        assert "cron 0 3 * * *" in chips and "next in" in chips  # its next fire time
        assert "manual only" in page.locator("tr.workflow[data-workflow=other]").inner_text()
        row = page.locator("#schedules tr.schedule[data-schedule='report#0']")
        row.locator(".sched-pause").click()
        page.wait_for_selector("#schedules tr.schedule[data-schedule='report#0'] .sched-resume")
        [state] = engine.schedules()
        assert state["paused"] and state["note"] == "paused from the dashboard"
        assert "paused" in page.locator("#schedules tr.schedule").inner_text()

        page.goto(f"{url}/#/workflow/report")  # the workflow's own page
        page.wait_for_selector("#schedules .sched-resume")
        assert "The nightly report" in page.inner_text("dl")
        page.click("#schedules .sched-resume")
        page.wait_for_selector("#schedules .sched-pause")
        assert not engine.schedules()[0]["paused"]
        page.click("#schedules .sched-trigger")  # trigger now: to the run it started
        page.wait_for_url(re.compile(r".*#/run/.+"))
        run_id = page.url.rsplit("/", 1)[1]
        assert engine.run(run_id).result(timeout=60) == "written"
        assert engine.inspect(run_id).workflow_id == "report"
        page.goto(f"{url}/#/workflow/report")
        page.wait_for_selector(f"#recent tr.run-row[data-run='{run_id}']")
        assert "1 triggered by hand" in page.inner_text("#schedules")
        assert page.errors == []


def test_the_approvals_inbox_resumes_a_run(browser: Any, site: tuple[af.Engine, str]) -> None:
    engine, url = site
    big = engine.trigger("orders", {"amount": 500})
    wait_until(lambda: bool(engine.approvals(run_id=big.id)))
    page = _page(browser, f"{url}/#/approvals")
    page.wait_for_selector(".approval-item[data-status=waiting]")
    card = page.locator(f".approval-item:has(a[href='#/run/{big.id}'])")
    assert "Approve a big order" in card.inner_text() and big.id in card.inner_text()
    assert "asked" in card.inner_text()
    second = engine.trigger("orders", {"amount": 900})  # arrives live, while the user types
    card.locator(".approval-payload").fill('{"approved_by": "ada"}')
    page.wait_for_function("document.querySelectorAll('.approval-item').length === 2")
    assert card.locator(".approval-payload").input_value() == '{"approved_by": "ada"}'
    card.locator(".resume").click()
    assert big.result(timeout=60) == "done"
    assert big.inspect().step("approve").output == '{"approved_by":"ada"}'
    page.wait_for_function("document.querySelectorAll('.approval-item').length === 1")
    page.select_option("#approval-filter select", "resumed")
    page.wait_for_selector(".approval-item[data-status=resumed]")
    assert big.id in page.inner_text("#inbox")
    resumed = page.locator(f".approval-item:has(a[href='#/run/{big.id}'])")
    assert 'resumed with {"approved_by":"ada"}' in resumed.inner_text()
    engine.run(second.id).cancel()
    assert page.errors == []


def test_the_inbox_shows_an_approvals_metadata_and_expiry(
    browser: Any, make_engine: MakeEngine
) -> None:
    engine = make_engine(workers=1)
    engine.define("refund").human_in_the_loop(
        "review",
        description="Refund over the limit",
        timeout="2h",
        metadata={"order": "A-7", "amount": 900},
    )
    with engine, serve(engine.asgi()) as url:
        run = engine.trigger("refund", {})
        wait_until(lambda: bool(engine.approvals(run_id=run.id)))
        page = _page(browser, f"{url}/#/approvals")
        page.wait_for_selector(".approval-item .meta-json")
        card = page.locator(".approval-item").inner_text()
        assert "Refund over the limit" in card and "refund" in card
        assert '"order": "A-7"' in card and '"amount": 900' in card
        assert "expires in 2 h" in card
        expires = page.locator(".approval-item time").nth(1).get_attribute("title") or ""
        assert str(time.localtime().tm_year) in expires  # absolute on hover
        assert page.errors == []


def test_token_mode_has_a_login_page(browser: Any, make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    engine.define("w").step("a", lambda ctx: 1)
    with engine, serve(engine.asgi(token="s3cret-token")) as url:
        run = engine.trigger("w", {})
        run.result(timeout=60)
        page = _page(browser, url)
        page.wait_for_selector("form#login")
        assert page.locator("#wrong").is_hidden()
        page.fill("input[name=token]", "not-it")
        page.click("form#login button")
        page.wait_for_selector("form#login #wrong:visible")
        page.fill("input[name=token]", "s3cret-token")
        page.click("form#login button")
        page.wait_for_selector(f"tr.run-row[data-run='{run.id}']")  # in: the dashboard
        assert "token" not in page.url  # taken out of the address bar
        assert page.errors == []
        page.close()
    # Under a mount prefix, in a fresh browser context (no cookie yet).
    from starlette.applications import Starlette
    from starlette.routing import Mount

    service = Starlette(routes=[Mount("/flows", app=engine.asgi(token="s3cret-token"))])
    with engine, serve(service) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/flows/")
        page.fill("form#login input[name=token]", "s3cret-token")
        page.click("form#login button")
        page.wait_for_selector(f"tr.run-row[data-run='{run.id}']")
        assert page.url == f"{url}/flows/"
        [cookie] = context.cookies()
        assert cookie["path"] == "/flows" and cookie["httpOnly"]
        context.close()


def test_a_followers_asgi_serves_the_whole_dashboard(
    browser: Any, data_dir: Path, tmp_path: Path
) -> None:
    """Leader in another process, the page served by this process's follower engine."""
    from tests import sharing_app
    from tests.runtime.test_sharing import Child

    leader = Child(data_dir)
    engine = sharing_app.make(str(data_dir), "auto", "v1", leader_wait=60.0)
    try:
        engine.start()
        assert engine.role == "follower"
        wait_until(lambda: engine.health()["ready"])
        done = engine.trigger("double", {"n": 2})
        done.result(timeout=60)
        waiting = engine.trigger("approve", {})
        wait_until(lambda: bool(engine.approvals(run_id=waiting.id)))
        with serve(engine.asgi()) as url:
            page = _page(browser, url)
            page.wait_for_selector(f"tr.run-row[data-run='{done.id}']")
            page.goto(f"{url}/#/run/{done.id}")
            page.wait_for_selector("#graph g.node[data-node=double][data-status=succeeded]")
            page.wait_for_selector("#history tr.event")
            page.goto(f"{url}/#/workflows")
            page.wait_for_selector("#definitions tr.workflow[data-workflow=double]")
            page.goto(f"{url}/#/approvals")
            page.wait_for_selector(".approval-item[data-status=waiting] .resume")
            page.fill(".approval-payload", '{"ok": 1}')
            page.click(".approval-item .resume")  # forwarded to the leader
            assert waiting.result(timeout=60) == {"approved": {"ok": 1}}
            assert page.errors == []
            page.close()
    finally:
        engine.stop(drain=False)
        leader.stop()


SCRIPT = """
import sys
import time

import uvicorn

import actorflow as af


def parse(text):
    return int(text)  # the failing line


def total(ctx):
    ctx.log.info("parsing %r", ctx.payload)
    return parse(ctx.payload)


if __name__ == "__main__":
    engine = af.Engine(data_dir=sys.argv[1], workers=1)
    engine.define("total").step("total", total)
    with engine:
        run = engine.trigger("total", "forty-two")
        try:
            run.result(timeout=60)
        except af.StepFailed:
            pass
        print("RUN", run.id, flush=True)
        uvicorn.run(engine.asgi(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def test_a_scripts_failed_step_shows_its_own_frames_and_logs(browser: Any, tmp_path: Path) -> None:
    """A user's ``python app.py``: the step's traceback starts in app.py, with its lines (the
    engine's frames a click away), and the step's ctx.log records are on its row."""
    import subprocess
    import sys
    import textwrap

    from tests.serving import free_port

    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "store"), str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["RUN"], line
        url = f"http://127.0.0.1:{port}"
        page = _page(browser, f"{url}/#/run/{line[1]}")
        page.wait_for_selector(".error-card pre.tb")
        shown = page.inner_text(".error-card pre.tb")
        where = str(script.resolve())
        assert shown.startswith("Traceback (most recent call last):")
        assert f'File "{where}"' in shown and "<dynamic-code>" not in shown
        assert "return int(text)  # the failing line" in shown  # its source line
        assert "actorflow" not in shown.replace(where, "")  # no engine frame
        assert not page.locator(".error-card details.full-tb pre").is_visible()
        page.click(".error-card details.full-tb summary")  # the whole one, a click away
        full = page.inner_text(".error-card details.full-tb pre")
        assert "actorflow/workers" in full and f'File "{where}"' in full
        row = page.locator("#steps tr.step-row[data-step=total]")
        assert "forty-two" in row.inner_text()  # its input
        row.locator(".logs-toggle").click()
        page.wait_for_selector("#steps pre.logs")
        assert "parsing 'forty-two'" in page.inner_text("#steps pre.logs")
        assert page.errors == []
        page.close()
    finally:
        proc.terminate()
        proc.wait(60)
